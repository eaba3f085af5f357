"""Targets under a symbolically linked kubelet directory (issue 17, class 3), over the real socket, both node modes.

A kubelet root moved to another disk and linked back (/var/lib/kubelet -> /data/kubelet) is the usual case: kubelet
names targets through the link, the kernel mounts at the resolved path, and the mount table shows only that one.
What is real: the links, the mounts (the mount.nfs stand-in's bind mounts), the driver and its records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.mount.mountinfo import read_mountinfo
from tests.integration.conftest import Driver, mount_capability, start_driver
from tests.integration.test_node_surface import code_of, counting_mount_helper, nfs_mounts, stage_request, volume_id_for

pytestmark = pytest.mark.integration


@pytest.fixture
def kubelet(tmp_path: Path) -> Path:
    """tmp/kubelet is a link to tmp/disk/kubelet, the directory holding the pods' targets."""
    real = tmp_path / "disk" / "kubelet"
    (real / "pods").mkdir(parents=True)
    (real / "plugins").mkdir()
    (tmp_path / "kubelet").symlink_to(real)
    return tmp_path / "kubelet"


def mounts_below(path: Path) -> list[str]:
    return [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(f"{path}/")]


def stats(driver: Driver, volume: str, path: Path) -> csi.NodeGetVolumeStatsResponse:
    return driver.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=str(path)), timeout=10)


def unpublish(driver: Driver, volume: str, target: Path) -> None:
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)), timeout=20)


@pytest.fixture
def direct(tmp_path: Path, export_root: Path) -> Iterator[tuple[Driver, Path]]:
    helper, calls = counting_mount_helper(tmp_path)
    running = start_driver(tmp_path / "driver", "--mount-command", str(helper), mode="node")
    yield running, calls
    assert running.stop() == 0, running.log.read_text()


@pytest.fixture
def staging(tmp_path: Path, export_root: Path) -> Iterator[tuple[Driver, Path]]:
    helper, calls = counting_mount_helper(tmp_path)
    running = start_driver(tmp_path / "driver", "--node-stage", "--mount-command", str(helper), mode="node")
    yield running, calls
    assert running.stop() == 0, running.log.read_text()


class TestDirectMode:
    def test_publish_repeat_stats_and_unpublish_through_the_link_leave_nothing(
        self, direct: tuple[Driver, Path], kubelet: Path, export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = direct
        (export_dir / "pvc-1").mkdir()
        volume = volume_id_for("pvc-1")
        target = kubelet / "pods" / "mount"
        request = csi.NodePublishVolumeRequest(volume_id=volume, target_path=str(target), volume_capability=mount_capability())
        # When the volume is published through the link, three times (kubelet retries)
        for _ in range(3):
            driver.node.NodePublishVolume(request, timeout=20)
        # Then it is mounted once, at the resolved path, and mount.nfs ran once
        assert mounts_below(tmp_path) == [str(tmp_path / "disk" / "kubelet" / "pods" / "mount")]
        assert len(nfs_mounts(calls)) == 1
        # and its stats are the volume's, not "no longer a mount point"
        answer = stats(driver, volume, target)
        assert not answer.volume_condition.abnormal and answer.usage[0].total > 0
        # When it is unpublished (twice), then the mount and the target are gone, and stats say NOT_FOUND
        unpublish(driver, volume, target)
        unpublish(driver, volume, target)
        assert mounts_below(tmp_path) == [] and not target.exists()
        assert code_of(lambda: stats(driver, volume, target)) == grpc.StatusCode.NOT_FOUND

    def test_a_different_volume_at_the_same_target_is_already_exists(
        self, direct: tuple[Driver, Path], kubelet: Path, export_dir: Path, tmp_path: Path
    ) -> None:
        driver, _ = direct
        for name in ("pvc-1", "pvc-2"):
            (export_dir / name).mkdir()
        target = kubelet / "pods" / "mount"
        first = csi.NodePublishVolumeRequest(volume_id=volume_id_for("pvc-1"), target_path=str(target), volume_capability=mount_capability())
        driver.node.NodePublishVolume(first, timeout=20)
        second = csi.NodePublishVolumeRequest(volume_id=volume_id_for("pvc-2"), target_path=str(target), volume_capability=mount_capability())
        assert code_of(lambda: driver.node.NodePublishVolume(second, timeout=20)) == grpc.StatusCode.ALREADY_EXISTS
        assert len(mounts_below(tmp_path)) == 1
        unpublish(driver, volume_id_for("pvc-1"), target)
        assert mounts_below(tmp_path) == []

    def test_a_target_that_is_itself_a_link_is_still_refused(
        self, direct: tuple[Driver, Path], kubelet: Path, export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = direct
        (export_dir / "pvc-1").mkdir()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        target = kubelet / "pods" / "mount"
        target.symlink_to(elsewhere)
        request = csi.NodePublishVolumeRequest(
            volume_id=volume_id_for("pvc-1"), target_path=str(target), volume_capability=mount_capability()
        )
        assert code_of(lambda: driver.node.NodePublishVolume(request, timeout=20)) == grpc.StatusCode.FAILED_PRECONDITION
        assert mounts_below(tmp_path) == [] and nfs_mounts(calls) == [] and target.is_symlink()


class TestStageMode:
    def test_stage_publish_stats_unpublish_and_unstage_through_the_link_leave_nothing(
        self, staging: tuple[Driver, Path], kubelet: Path, export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = staging
        (export_dir / "pvc-1").mkdir()
        volume = volume_id_for("pvc-1")
        globalmount = kubelet / "plugins" / "globalmount"
        globalmount.mkdir()
        target = kubelet / "pods" / "mount"
        publish = csi.NodePublishVolumeRequest(
            volume_id=volume, staging_target_path=str(globalmount), target_path=str(target), volume_capability=mount_capability()
        )
        # When it is staged and published through the link, each twice
        for _ in range(2):
            driver.node.NodeStageVolume(stage_request(volume, globalmount), timeout=20)
        for _ in range(2):
            driver.node.NodePublishVolume(publish, timeout=20)
        # Then one NFS mount at the resolved staging path, one bind of it at the resolved target
        real = tmp_path / "disk" / "kubelet"
        assert sorted(mounts_below(tmp_path)) == [str(real / "plugins" / "globalmount"), str(real / "pods" / "mount")]
        assert len(nfs_mounts(calls)) == 1
        # and stats answer for both paths
        for path in (globalmount, target):
            answer = stats(driver, volume, path)
            assert not answer.volume_condition.abnormal and answer.usage[0].total > 0
        # When it is unpublished and unstaged (each twice), then nothing is mounted and the target is gone
        for _ in range(2):
            unpublish(driver, volume, target)
        for _ in range(2):
            driver.node.NodeUnstageVolume(
                csi.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(globalmount)), timeout=20
            )
        assert mounts_below(tmp_path) == [] and not target.exists() and globalmount.is_dir()
