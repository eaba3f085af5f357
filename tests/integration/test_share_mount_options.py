"""A share the controller can only mount with options: configured per share, they serve create, snapshot and delete,
across a restart; without them the failure names what is missing and where to give it."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import SERVER, SHARE, Driver, create_request, mount_capability, start_driver

pytestmark = pytest.mark.integration

NEEDS_OPTIONS = str(Path(__file__).resolve().parents[1] / "standin" / "mount.nfs-needs-options")
REQUIRED = "xprtsec=tls,port=20049"


@pytest.fixture
def picky_export(export_root: Path) -> Path:
    """The stand-in's export refuses a mount without REQUIRED."""
    (export_root / ".required-options").write_text(REQUIRED)
    return export_root / SERVER / SHARE.strip("/")


def controller(workdir: Path, *extra: str) -> Driver:
    return start_driver(workdir, "--mount-command", NEEDS_OPTIONS, *extra, mode="controller")


def on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class TestControllerMountOptions:
    def test_without_them_the_failure_names_the_option_and_the_flag_and_nothing_is_made(
        self, tmp_path: Path, picky_export: Path
    ) -> None:
        running = controller(tmp_path / "driver")
        try:
            # Given a StorageClass whose mountOptions reach the share (nodes mount with them)
            request = create_request("pvc-1")
            request.volume_capabilities[0].CopyFrom(
                mount_capability(csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER, "xprtsec=tls", "port=20049")
            )
            # When the controller, configured with none, creates a volume there
            with pytest.raises(grpc.RpcError) as failed:
                running.controller.CreateVolume(request, timeout=60)
            # Then mount.nfs's message comes through, with what the controller used and how to give it more
            details = failed.value.details() or ""
            assert "this export needs xprtsec=tls,port=20049" in details
            assert "--share-mount-options" in details and "with no options" in details
            assert f"--share-mount-options '{SERVER}:{SHARE}=xprtsec=tls,port=20049'" in details
            assert on_disk(picky_export) == []
        finally:
            assert running.stop() == 0, running.log.read_text()

    def test_configured_per_share_they_serve_create_snapshot_and_delete_across_a_restart(
        self, tmp_path: Path, picky_export: Path
    ) -> None:
        flag = ("--share-mount-options", f"{SERVER}:{SHARE}={REQUIRED}")
        running = controller(tmp_path / "driver", *flag)
        try:
            volume = running.controller.CreateVolume(create_request("pvc-1"), timeout=60).volume
            (picky_export / "pvc-1" / "data").write_bytes(os.urandom(4096))
            taken = running.controller.CreateSnapshot(
                csi.CreateSnapshotRequest(name="snap-1", source_volume_id=volume.volume_id), timeout=60
            ).snapshot
            assert taken.ready_to_use
        finally:
            assert running.stop() == 0, running.log.read_text()  # unmounts the share: the next start mounts again

        running = controller(tmp_path / "driver", *flag)
        try:
            running.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=taken.snapshot_id), timeout=60)
            running.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=60)
            assert not (picky_export / "pvc-1").exists()
            assert "with options xprtsec=tls,port=20049" in running.log.read_text()
        finally:
            assert running.stop() == 0, running.log.read_text()

    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("127.0.0.1:/exports=vers=3;127.0.0.1:/exports=vers=4", "given twice"),
            ("127.0.0.1:/exports=ro", "controller writes"),
            ("127.0.0.1:/exports=bogus=1", "allowlist"),
            ("127.0.0.1:/exports=vers=3,hard;x", "server:/path=option"),
            ("127.0.0.1:/exports=", "no options"),
        ],
    )
    def test_a_bad_value_stops_the_driver_at_start_naming_it(self, tmp_path: Path, value: str, says: str) -> None:
        with pytest.raises(AssertionError) as refused:
            controller(tmp_path / "driver", "--share-mount-options", value)
        assert "--share-mount-options" in str(refused.value) and says in str(refused.value)
