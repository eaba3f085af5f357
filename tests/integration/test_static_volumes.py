"""Static and inline volumes over the real socket, mounted by the stand-in: the volume is described by its context."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import SERVER, SHARE, Driver, mount_capability, mounts_under, start_driver

pytestmark = pytest.mark.integration


def publish(driver: Driver, target: Path, volume_id: str, context: dict[str, str], *flags: str) -> None:
    driver.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=str(target),
            volume_capability=mount_capability(csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER, *flags),
            volume_context=context,
        )
    )


def unpublish(driver: Driver, target: Path, volume_id: str) -> None:
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)))


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


@pytest.fixture
def inline_driver(tmp_path: Path, export_root: Path) -> Iterator[Driver]:
    running = start_driver(tmp_path / "inline", "--enable-inline-volumes", mode="node")
    yield running
    assert running.stop() == 0, running.log.read_text()


class TestStaticVolumes:
    def test_a_static_volume_with_an_arbitrary_handle_is_published_and_unpublished(
        self, driver: Driver, export_dir: Path, tmp_path: Path
    ) -> None:
        (export_dir / "existing.txt").write_text("laid out by hand")
        target = tmp_path / "pod" / "mount"
        target.parent.mkdir()
        handle = "team-a/legacy-share-01"
        publish(driver, target, handle, {"server": SERVER, "share": SHARE})
        publish(driver, target, handle, {"server": SERVER, "share": SHARE})
        assert (target / "existing.txt").read_text() == "laid out by hand"
        unpublish(driver, target, handle)
        unpublish(driver, target, handle)
        assert not target.exists() and mounts_under(target.parent) == []

    def test_a_static_volume_with_a_subdir_and_mount_options(self, driver: Driver, export_dir: Path, tmp_path: Path) -> None:
        (export_dir / "projects" / "alpha").mkdir(parents=True)
        target = tmp_path / "t"
        context = {"server": SERVER, "share": SHARE, "subDir": "projects/alpha", "mountOptions": "nfsvers=4.1,ro"}
        publish(driver, target, "alpha-pv", context)
        (export_dir / "projects" / "alpha" / "seen").write_text("through the mount")
        assert (target / "seen").read_text() == "through the mount"
        with pytest.raises(OSError):
            (target / "x").write_text("ro came from the context's mountOptions")
        unpublish(driver, target, "alpha-pv")
        assert not target.exists()

    @pytest.mark.parametrize(
        "context",
        [
            {"server": SERVER, "share": SHARE, "subDir": "../escape"},
            {"server": "127.0.0.1,evil", "share": SHARE},
            {"server": SERVER, "share": SHARE, "mountOptions": "hard,bind"},
            {"server": SERVER, "share": SHARE, "mountOptions": "x-mount.mkdir"},
        ],
    )
    def test_hostile_contexts_are_invalid_argument_and_reach_no_mount(
        self, driver: Driver, tmp_path: Path, context: dict[str, str]
    ) -> None:
        target = tmp_path / "t"
        request = lambda: publish(driver, target, "static-pv", context)  # noqa: E731
        assert code_of(request) == grpc.StatusCode.INVALID_ARGUMENT
        assert not target.exists() and mounts_under(tmp_path) == []

    def test_neither_our_id_nor_a_usable_context_is_not_found(self, driver: Driver, tmp_path: Path) -> None:
        assert code_of(lambda: publish(driver, tmp_path / "t", "fake-vol-id-1", {})) == grpc.StatusCode.NOT_FOUND


class TestInlineVolumes:
    INLINE = {"csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.name": "web-0"}

    def test_an_inline_volume_is_published_when_enabled(self, inline_driver: Driver, export_dir: Path, tmp_path: Path) -> None:
        (export_dir / "scratch").mkdir()
        target = tmp_path / "pod-volume"
        volume_id = "csi-3f2a9c"  # kubelet makes one up per pod volume
        publish(inline_driver, target, volume_id, {**self.INLINE, "server": SERVER, "share": SHARE, "subDir": "scratch"})
        (target / "f").write_text("inline")
        assert (export_dir / "scratch" / "f").read_text() == "inline"
        unpublish(inline_driver, target, volume_id)
        assert not target.exists() and mounts_under(target) == []

    def test_an_inline_volume_is_refused_when_disabled(self, driver: Driver, tmp_path: Path) -> None:
        target = tmp_path / "pod-volume"
        request = lambda: publish(driver, target, "csi-1", {**self.INLINE, "server": SERVER, "share": SHARE})  # noqa: E731
        with pytest.raises(grpc.RpcError) as caught:
            request()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--enable-inline-volumes" in (caught.value.details() or "")
        assert not target.exists()

    def test_an_inline_volume_without_a_share_is_invalid_argument(self, inline_driver: Driver, tmp_path: Path) -> None:
        request = lambda: publish(inline_driver, tmp_path / "t", "csi-2", dict(self.INLINE))  # noqa: E731
        assert code_of(request) == grpc.StatusCode.INVALID_ARGUMENT


class TestValidateStatic:
    def request(self, context: dict[str, str]) -> csi.ValidateVolumeCapabilitiesRequest:
        return csi.ValidateVolumeCapabilitiesRequest(
            volume_id="admin-handle", volume_capabilities=[mount_capability()], volume_context=context
        )

    def test_a_static_volume_on_a_reachable_share_is_confirmed(self, driver: Driver, export_dir: Path) -> None:
        (export_dir / "legacy").mkdir()
        answer = driver.controller.ValidateVolumeCapabilities(self.request({"server": SERVER, "share": SHARE, "subDir": "legacy"}))
        assert answer.HasField("confirmed")

    @pytest.mark.parametrize("context", [{"server": SERVER, "share": SHARE, "subDir": "missing"}, {"server": SERVER, "share": "/not/exported"}, {}])
    def test_otherwise_it_is_not_found(self, driver: Driver, context: dict[str, str]) -> None:
        assert code_of(lambda: driver.controller.ValidateVolumeCapabilities(self.request(context))) == grpc.StatusCode.NOT_FOUND
