"""Stale file handles, for real: the kernel answers ESTALE from a FUSE filesystem that plays a restarted server.

What is real: the errno (116, ESTALE) comes from the kernel's stat of the mount, as it does from an NFS client whose
server lost its file handles; the unmount is the real umount. What is replaced: the filesystem is FUSE
(tests/standin/fusefs), not NFS, because this kernel has no NFS client. The driver does not know the difference.
"""

from __future__ import annotations

import errno
import os
import urllib.request
from pathlib import Path

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import SERVER, Lab, code_of, create_request, mounts_under, publish_request, volume_id_for

pytestmark = pytest.mark.integration


def stat_errno(path: Path) -> int:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno or 0
    return 0


def recoveries(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nfs_csi_stale_handle_recoveries_total "):
                return float(line.split()[1])
    raise AssertionError("nfs_csi_stale_handle_recoveries_total is not exported")


class TestStalePublishTarget:
    def test_publish_on_a_target_answering_estale_unmounts_and_mounts_again(self, lab: Lab, unused_port: int) -> None:
        driver = lab.start("--metrics-address", f"127.0.0.1:{unused_port}", mount_command="mount.nfs-stale", mode="node")
        (lab.export / "pvc-1").mkdir()
        target = lab.tmp / "target"
        request = publish_request(volume_id_for("pvc-1"), target)
        # Given a published target whose server restarted: a stat of it is ESTALE
        lab.mark(f"{SERVER}.stale")
        driver.node.NodePublishVolume(request, timeout=20)
        assert stat_errno(target) == errno.ESTALE
        # When kubelet publishes it again, then it is unmounted and mounted again, and works
        driver.node.NodePublishVolume(request, timeout=20)
        assert stat_errno(target) == 0 and mounts_under(target) == [str(target)]
        (target / "after").write_text("written after the recovery")
        assert (lab.export / "pvc-1" / "after").read_text() == "written after the recovery"
        assert "answers 'stale file handle'" in driver.log_text()
        assert recoveries(unused_port) == 1
        # and a publish of a healthy target is left alone
        driver.node.NodePublishVolume(request, timeout=20)
        assert recoveries(unused_port) == 1
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=request.volume_id, target_path=str(target)))
        assert driver.stop() == 0

    def test_unpublish_of_a_target_answering_estale_succeeds_and_removes_the_target(self, lab: Lab) -> None:
        driver = lab.start(mount_command="mount.nfs-stale", mode="node")
        target = lab.tmp / "target"
        lab.mark(f"{SERVER}.stale")
        driver.node.NodePublishVolume(publish_request(volume_id_for("pvc-1"), target), timeout=20)
        assert stat_errno(target) == errno.ESTALE
        driver.node.NodeUnpublishVolume(
            csi.NodeUnpublishVolumeRequest(volume_id=volume_id_for("pvc-1"), target_path=str(target)), timeout=30
        )
        assert mounts_under(target) == [] and not target.exists()
        assert driver.stop() == 0


class TestStaleShare:
    def test_a_share_answering_estale_is_unavailable_once_then_mounted_again(self, lab: Lab) -> None:
        driver = lab.start(mount_command="mount.nfs-stale", mode="controller")
        lab.mark(f"{SERVER}.stale")
        error = code_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"), timeout=20))
        assert error == grpc.StatusCode.UNAVAILABLE
        assert "answers 'Stale file handle': unmounting it" in driver.log_text()
        volume = driver.controller.CreateVolume(create_request("pvc-1"), timeout=20).volume
        assert (lab.export / "pvc-1").is_dir() and volume.volume_id == volume_id_for("pvc-1")
        assert driver.stop() == 0
