"""The driver over its real unix socket: a gRPC client, the real server process, real (stand-in) mounts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from domain.identity import CONTROLLER_CAPABILITIES
from tests.conftest import ROOT
from tests.integration.conftest import (
    Driver,
    create_request,
    mount_capability,
    mounts_under,
    share_entries,
    start_driver,
    volume_index,
)

pytestmark = pytest.mark.integration


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


class TestCreateVolume:
    def test_repeated_create_returns_the_same_volume_id(self, driver: Driver, export_dir: Path) -> None:
        first = driver.controller.CreateVolume(create_request())
        second = driver.controller.CreateVolume(create_request())
        assert first.volume.volume_id == second.volume.volume_id
        assert first.volume.capacity_bytes == 1 << 30
        assert share_entries(export_dir) == [".pvc-1.nfs-csi.json", "pvc-1"]
        assert len(volume_index(export_dir)) == 1

    def test_same_name_with_a_different_capacity_is_already_exists(self, driver: Driver) -> None:
        driver.controller.CreateVolume(create_request(capacity=1 << 30))
        assert code_of(lambda: driver.controller.CreateVolume(create_request(capacity=2 << 30))) == grpc.StatusCode.ALREADY_EXISTS

    @pytest.mark.parametrize("params", [{"subDir": "../x"}, {"unknown": "1"}, {"server": "a,b"}, {"share": "/x/../../etc"}])
    def test_bad_parameters_are_invalid_argument_and_nothing_changes_on_disk(
        self, driver: Driver, export_root: Path, params: dict[str, str]
    ) -> None:
        before = sorted(str(p) for p in export_root.rglob("*"))
        assert code_of(lambda: driver.controller.CreateVolume(create_request(**params))) == grpc.StatusCode.INVALID_ARGUMENT
        assert sorted(str(p) for p in export_root.rglob("*")) == before

    def test_the_share_is_mounted_once_and_reused(self, driver: Driver, tmp_path: Path) -> None:
        for name in ("a", "b", "c"):
            driver.controller.CreateVolume(create_request(name))
        assert len(mounts_under(tmp_path / "driver" / "shares")) == 1


class TestDeleteVolume:
    def test_delete_removes_the_directory_and_repeats_ok(self, driver: Driver, export_dir: Path) -> None:
        volume = driver.controller.CreateVolume(create_request()).volume
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id))
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id))
        assert share_entries(export_dir) == [] and volume_index(export_dir) == []

    def test_a_crafted_id_outside_the_share_is_ok_and_deletes_nothing(self, driver: Driver, export_root: Path) -> None:
        victim = export_root / "127.0.0.1" / "victim"
        victim.mkdir()
        for crafted in ("nfs1#127.0.0.1#/exports#../victim#delete", "nfs1#127.0.0.1#/#victim#delete", "fake-vol-id-1"):
            driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=crafted))
        assert victim.is_dir()


class TestNodePublish:
    def test_unknown_volume_id_is_not_found(self, driver: Driver, tmp_path: Path) -> None:
        request = csi.NodePublishVolumeRequest(
            volume_id="fake-vol-id-1", target_path=str(tmp_path / "target"), volume_capability=mount_capability()
        )
        assert code_of(lambda: driver.node.NodePublishVolume(request)) == grpc.StatusCode.NOT_FOUND
        assert not (tmp_path / "target").exists()

    def test_the_whole_lifecycle_writes_through_the_mount_into_the_export(
        self, driver: Driver, export_dir: Path, tmp_path: Path
    ) -> None:
        volume = driver.controller.CreateVolume(create_request()).volume
        target = tmp_path / "pod" / "mount"
        target.parent.mkdir()
        publish = csi.NodePublishVolumeRequest(
            volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_capability()
        )
        driver.node.NodePublishVolume(publish)
        driver.node.NodePublishVolume(publish)
        assert mounts_under(target) == [str(target)]
        (target / "hello.txt").write_text("hello")
        assert (export_dir / "pvc-1" / "hello.txt").read_text() == "hello"

        readonly = csi.NodePublishVolumeRequest(
            volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_capability(), readonly=True
        )
        assert code_of(lambda: driver.node.NodePublishVolume(readonly)) == grpc.StatusCode.ALREADY_EXISTS

        unpublish = csi.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target))
        driver.node.NodeUnpublishVolume(unpublish)
        driver.node.NodeUnpublishVolume(unpublish)
        assert not target.exists() and mounts_under(target) == []
        driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id))
        assert share_entries(export_dir) == [] and volume_index(export_dir) == []

    def test_readonly_publish_cannot_be_written(self, driver: Driver, tmp_path: Path) -> None:
        volume = driver.controller.CreateVolume(create_request()).volume
        target = tmp_path / "ro"
        driver.node.NodePublishVolume(
            csi.NodePublishVolumeRequest(
                volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_capability(), readonly=True
            )
        )
        with pytest.raises(OSError):
            (target / "x").write_text("no")
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target)))

    def test_a_volume_whose_directory_is_gone_is_not_found(self, driver: Driver, export_dir: Path, tmp_path: Path) -> None:
        volume = driver.controller.CreateVolume(create_request()).volume
        (export_dir / "pvc-1").rmdir()
        request = csi.NodePublishVolumeRequest(
            volume_id=volume.volume_id, target_path=str(tmp_path / "t"), volume_capability=mount_capability()
        )
        assert code_of(lambda: driver.node.NodePublishVolume(request)) == grpc.StatusCode.NOT_FOUND
        assert not (tmp_path / "t").exists()


class TestIdentity:
    def test_probe_is_ready_and_capabilities_are_listed(self, driver: Driver) -> None:
        assert driver.identity.Probe(csi.ProbeRequest()).ready.value is True
        caps = driver.controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest())
        names = [csi.ControllerServiceCapability.RPC.Type.Name(c.rpc.type) for c in caps.capabilities]
        assert names == list(CONTROLLER_CAPABILITIES) and "CREATE_DELETE_VOLUME" in names

    def test_probe_fails_when_the_mount_helper_is_missing(self, tmp_path: Path, export_root: Path) -> None:
        running = start_driver(tmp_path / "d", "--mount-command", str(tmp_path / "no-such-mount.nfs"))
        try:
            assert code_of(lambda: running.identity.Probe(csi.ProbeRequest())) == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            assert running.stop() == 0

    def test_unimplemented_rpcs_say_so(self, driver: Driver) -> None:
        request = csi.ControllerPublishVolumeRequest(volume_id="v", node_id="n")
        assert code_of(lambda: driver.controller.ControllerPublishVolume(request)) == grpc.StatusCode.UNIMPLEMENTED


class TestServerLifecycle:
    def test_socket_is_not_group_or_world_writable_beyond_0660(self, driver: Driver) -> None:
        mode = stat.S_IMODE(os.stat(driver.socket).st_mode)
        assert mode & ~0o660 == 0

    def test_a_stale_socket_is_replaced(self, tmp_path: Path, export_root: Path) -> None:
        first = start_driver(tmp_path / "d")
        first.process.kill()
        first.process.wait()
        assert first.socket.exists()
        second = start_driver(tmp_path / "d")
        try:
            assert second.identity.Probe(csi.ProbeRequest()).ready.value
        finally:
            assert second.stop() == 0

    def test_a_live_socket_is_not_stolen(self, driver: Driver) -> None:
        second = subprocess.run(
            [sys.executable, "-m", "app", "--endpoint", f"unix://{driver.socket}", "--state-dir", str(driver.socket.parent / "s2")],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )
        assert second.returncode == 1 and "another server is listening" in second.stderr
        assert driver.identity.Probe(csi.ProbeRequest()).ready.value

    def test_sigterm_exits_cleanly_and_releases_the_share(self, tmp_path: Path, export_root: Path) -> None:
        running = start_driver(tmp_path / "d")
        running.controller.CreateVolume(create_request())
        assert len(mounts_under(tmp_path / "d" / "shares")) == 1
        assert running.stop() == 0
        assert mounts_under(tmp_path / "d" / "shares") == []
        assert not running.socket.exists()
