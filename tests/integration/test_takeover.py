"""Switching from csi-driver-nfs and nfs-subdir-external-provisioner without moving data, over the real socket.

Their volumes are laid out as csi-driver-nfs's controller leaves them (tests/integration/csi_driver_nfs.py) and
mounted by the mount.nfs stand-in. A mount "made outside this driver" (by csi-driver-nfs's node plugin before the
swap) is a read-only overlay of the volume's directory whose source is the ``server:/path`` string the kernel's NFS
client would show: this kernel has no NFS client, so that string is the one part not written by NFS itself.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import (
    SERVER,
    SHARE,
    Driver,
    create_request,
    mount_capability,
    mounts_under,
    share_entries,
    start_driver,
)
from tests.integration.csi_driver_nfs import provision

pytestmark = pytest.mark.integration

_libc = ctypes.CDLL(None, use_errno=True)
METADATA = {
    "csi.storage.k8s.io/pvc/name": "data",
    "csi.storage.k8s.io/pvc/namespace": "app",
    "csi.storage.k8s.io/pv/name": "pvc-3f6c2a1e",
}


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return]


def publish(driver: Driver, target: Path, volume_id: str, context: dict[str, str]) -> None:
    driver.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(
            volume_id=volume_id, target_path=str(target), volume_capability=mount_capability(), volume_context=context
        )
    )


def unpublish(driver: Driver, target: Path, volume_id: str) -> None:
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target)))


def stats(driver: Driver, target: Path, volume_id: str) -> csi.NodeGetVolumeStatsResponse:
    return driver.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=str(target)))


def delete(driver: Driver, volume_id: str) -> None:
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id))


def mount_as_their_plugin_did(directory: Path, source: str, target: Path, scratch: Path) -> None:
    """``directory`` at ``target``, its mount table entry naming ``source``: what the kernel shows for an NFS mount."""
    target.mkdir(parents=True, exist_ok=True)
    empty = scratch / "empty-lower"
    empty.mkdir(exist_ok=True)
    options = f"lowerdir={directory}:{empty}".encode()
    if _libc.mount(source.encode(), str(target).encode(), b"overlay", 0, options) != 0:
        raise OSError(ctypes.get_errno(), f"overlay of {directory} at {target}")


def tree(directory: Path) -> dict[str, str]:
    """Every path below directory, and a file's content (the driver's own .nfs-csi left out)."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != ".nfs-csi"]
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), directory)] = "dir"
        for name in files:
            found[os.path.relpath(os.path.join(top, name), directory)] = Path(top, name).read_text()
    return found


@pytest.fixture
def managed(tmp_path: Path, export_root: Path) -> Iterator[Driver]:
    running = start_driver(tmp_path / "managed", "--manage-csi-driver-nfs-volumes")
    yield running
    assert running.stop() == 0, running.log.read_text()


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "pods"
    root.mkdir()
    yield root
    for point in sorted(mounts_under(root), key=len, reverse=True):
        _libc.umount2(point.encode(), 2)  # MNT_DETACH: what a failed test left


class TestTheirVolumesOnThisNode:
    def test_a_dynamic_volume_is_published_measured_and_unpublished(
        self, driver: Driver, export_dir: Path, pods: Path
    ) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {"server": SERVER, "share": SHARE, **METADATA})
        assert volume.handle == "127.0.0.1#exports#pvc-3f6c2a1e##"
        (export_dir / volume.subdir / "kept.txt").write_text("written under csi-driver-nfs")
        target = pods / "uid-1" / "mount"
        target.parent.mkdir()
        publish(driver, target, volume.handle, volume.context)
        publish(driver, target, volume.handle, volume.context)
        assert (target / "kept.txt").read_text() == "written under csi-driver-nfs"
        (target / "new.txt").write_text("written through this driver")
        usage = stats(driver, target, volume.handle)
        assert usage.usage[0].total > 0 and not usage.volume_condition.abnormal
        unpublish(driver, target, volume.handle)
        unpublish(driver, target, volume.handle)
        assert not target.exists() and mounts_under(pods) == []
        assert (export_dir / volume.subdir / "new.txt").read_text() == "written through this driver"

    @pytest.mark.parametrize(
        "parameters",
        [
            {"server": SERVER, "share": SHARE + "/", "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "onDelete": "archive"},
            {"Server": SERVER, "SHARE": SHARE, "mountPermissions": "0770", "onDelete": "Retain"},
        ],
    )  # fmt: skip
    def test_their_storage_classes_volumes_publish_too(
        self, driver: Driver, export_dir: Path, pods: Path, parameters: dict[str, str]
    ) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {**parameters, **METADATA})
        target = pods / "t"
        publish(driver, target, volume.handle, volume.context)
        assert mounts_under(pods) == [str(target)] and stats(driver, target, volume.handle).usage
        unpublish(driver, target, volume.handle)
        assert not target.exists()

    @pytest.mark.parametrize("handle", ["127.0.0.1#exports#pvc-old#pvc-old", "127.0.0.1#exports#pvc-old", "127.0.0.1/exports/pvc-old"])
    def test_older_handles_without_a_context_are_published_from_the_handle(
        self, driver: Driver, export_dir: Path, pods: Path, handle: str
    ) -> None:
        (export_dir / "pvc-old").mkdir()
        (export_dir / "pvc-old" / "f").write_text("v3")
        target = pods / "t"
        publish(driver, target, handle, {})
        assert (target / "f").read_text() == "v3"
        unpublish(driver, target, handle)
        assert not target.exists()

    def test_a_handle_with_dot_dot_mounts_nothing(self, driver: Driver, export_root: Path, pods: Path) -> None:
        (export_root / SERVER / "secret").mkdir()
        target = pods / "t"
        assert code_of(lambda: publish(driver, target, "127.0.0.1#exports#..##", {})) == grpc.StatusCode.NOT_FOUND
        assert code_of(
            lambda: publish(driver, target, "127.0.0.1#exports#x##", {"server": SERVER, "share": SHARE, "subdir": "../secret"})
        ) == grpc.StatusCode.INVALID_ARGUMENT
        assert mounts_under(pods) == [] and not target.exists()


class TestTheirMountsAfterASwap:
    def test_their_mount_of_the_handles_directory_is_measured_and_unmounted(
        self, driver: Driver, export_dir: Path, pods: Path, tmp_path: Path
    ) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {"server": SERVER, "share": SHARE})
        (export_dir / volume.subdir / "f").write_text("theirs")
        target = pods / "uid-1" / "mount"
        mount_as_their_plugin_did(export_dir / volume.subdir, "127.0.0.1:/exports/pvc-3f6c2a1e", target, tmp_path)
        assert (target / "f").read_text() == "theirs"
        assert stats(driver, target, volume.handle).usage[0].total > 0
        unpublish(driver, target, volume.handle)
        assert not target.exists() and mounts_under(pods) == []
        assert (export_dir / volume.subdir / "f").read_text() == "theirs"

    def test_kubelet_publishing_their_mount_again_takes_it_over(
        self, driver: Driver, export_dir: Path, pods: Path, tmp_path: Path
    ) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {"server": SERVER, "share": SHARE})
        target = pods / "t"
        mount_as_their_plugin_did(export_dir / volume.subdir, "127.0.0.1:/exports/pvc-3f6c2a1e/", target, tmp_path)
        publish(driver, target, volume.handle, volume.context)
        assert len(mounts_under(pods)) == 1  # nothing mounted over it
        unpublish(driver, target, volume.handle)
        assert mounts_under(pods) == []

    @pytest.mark.parametrize(
        "source",
        [
            "127.0.0.1:/exports/pvc-3f6c2a1e0",  # the handle's directory is a prefix of this one
            "127.0.0.1:/exports/pvc-3f6c2a1e/inner",
            "127.0.0.1:/exports",
            "127.0.0.2:/exports/pvc-3f6c2a1e",
            "localhost:/exports/pvc-3f6c2a1e",
        ],
    )
    def test_a_mount_of_anything_else_is_refused_and_left_mounted(
        self, driver: Driver, export_dir: Path, pods: Path, tmp_path: Path, source: str
    ) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {"server": SERVER, "share": SHARE})
        target = pods / "t"
        mount_as_their_plugin_did(export_dir / volume.subdir, source, target, tmp_path)
        assert code_of(lambda: unpublish(driver, target, volume.handle)) == grpc.StatusCode.FAILED_PRECONDITION
        assert code_of(lambda: stats(driver, target, volume.handle)) == grpc.StatusCode.NOT_FOUND
        assert mounts_under(pods) == [str(target)]

    def test_a_bind_mount_is_refused_and_left_mounted(self, driver: Driver, export_dir: Path, pods: Path) -> None:
        volume = provision(export_dir, "pvc-3f6c2a1e", {"server": SERVER, "share": SHARE})
        target = pods / "t"
        target.mkdir()
        assert _libc.mount(str(export_dir / volume.subdir).encode(), str(target).encode(), None, 4096, None) == 0
        assert code_of(lambda: unpublish(driver, target, volume.handle)) == grpc.StatusCode.FAILED_PRECONDITION
        assert mounts_under(pods) == [str(target)]

    def test_one_of_ours_on_a_node_that_lost_its_state_is_unmounted(
        self, driver: Driver, export_dir: Path, pods: Path, tmp_path: Path
    ) -> None:
        created = driver.controller.CreateVolume(create_request("pvc-ours")).volume
        target = pods / "t"
        mount_as_their_plugin_did(export_dir / "pvc-ours", "127.0.0.1:/exports/pvc-ours", target, tmp_path)
        unpublish(driver, target, created.volume_id)
        assert mounts_under(pods) == [] and not target.exists()

    def test_an_ipv6_handle_matches_the_bracketed_source(self, driver: Driver, pods: Path, tmp_path: Path) -> None:
        directory = tmp_path / "pvc-6"  # overlay's lowerdir cannot hold the ':' of the stand-in's [fd00::4] directory
        directory.mkdir()
        target = pods / "t"
        mount_as_their_plugin_did(directory, "[fd00:0::4]:/exports/pvc-6", target, tmp_path)
        unpublish(driver, target, "fd00::4#exports#pvc-6##")
        assert mounts_under(pods) == []


class TestTheirVolumesOnTheController:
    def test_without_the_flag_delete_is_ok_touches_nothing_and_says_why(self, driver: Driver, export_dir: Path) -> None:
        volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE, "onDelete": "archive"})
        (export_dir / volume.subdir / "f").write_text("data")
        before = tree(export_dir)
        delete(driver, volume.handle)
        assert tree(export_dir) == before
        lines = [line for line in driver.log.read_text().splitlines() if "--manage-csi-driver-nfs-volumes" in line]
        assert len(lines) == 1

    def test_opted_in_delete_removes_the_directory_and_keeps_its_parent(self, managed: Driver, export_dir: Path) -> None:
        params = {"server": SERVER, "share": SHARE, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", **METADATA}
        volume = provision(export_dir, "pvc-3f6c2a1e", params)
        assert volume.handle == "127.0.0.1#exports#app/data#pvc-3f6c2a1e#"
        (export_dir / "app" / "other").mkdir()
        (export_dir / volume.subdir / "f").write_text("data")
        delete(managed, volume.handle)
        delete(managed, volume.handle)
        assert tree(export_dir) == {"app": "dir", "app/other": "dir"}

    def test_opted_in_archive_moves_it_to_archived_subdir_at_the_share_root(self, managed: Driver, export_dir: Path) -> None:
        params = {"server": SERVER, "share": SHARE, "subDir": "${pvc.metadata.namespace}/${pvc.metadata.name}", "onDelete": "archive", **METADATA}
        volume = provision(export_dir, "pvc-3f6c2a1e", params)
        assert volume.handle == "127.0.0.1#exports#app/data#pvc-3f6c2a1e#archive"
        (export_dir / volume.subdir / "f").write_text("data")
        delete(managed, volume.handle)
        delete(managed, volume.handle)
        assert tree(export_dir) == {"app": "dir", "archived-app": "dir", "archived-app/data": "dir", "archived-app/data/f": "data"}

    def test_an_archive_already_there_is_failed_precondition_and_nothing_moves(self, managed: Driver, export_dir: Path) -> None:
        volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE, "onDelete": "archive"})
        (export_dir / "archived-pvc-1").mkdir()
        (export_dir / "archived-pvc-1" / "old").write_text("earlier archive")
        before = tree(export_dir)
        assert code_of(lambda: delete(managed, volume.handle)) == grpc.StatusCode.FAILED_PRECONDITION
        assert tree(export_dir) == before

    def test_with_remove_archived_the_old_archive_is_replaced(self, tmp_path: Path, export_dir: Path) -> None:
        running = start_driver(tmp_path / "d", "--manage-csi-driver-nfs-volumes", "--csi-driver-nfs-remove-archived-volume-path")
        try:
            volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE, "onDelete": "archive"})
            (export_dir / "pvc-1" / "new").write_text("this one")
            (export_dir / "archived-pvc-1").mkdir()
            (export_dir / "archived-pvc-1" / "old").write_text("earlier archive")
            delete(running, volume.handle)
            assert tree(export_dir) == {"archived-pvc-1": "dir", "archived-pvc-1/new": "this one"}
        finally:
            assert running.stop() == 0

    def test_opted_in_retain_keeps_everything(self, managed: Driver, export_dir: Path) -> None:
        volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE, "onDelete": "retain"})
        assert volume.handle == "127.0.0.1#exports#pvc-1##retain"
        (export_dir / "pvc-1" / "f").write_text("data")
        delete(managed, volume.handle)
        assert tree(export_dir) == {"pvc-1": "dir", "pvc-1/f": "data"}

    @pytest.mark.parametrize("handle", ["127.0.0.1#exports#..##", "127.0.0.1#exports#x/../..##", "127.0.0.1#exports###"])
    def test_a_handle_leaving_its_share_or_naming_its_root_touches_nothing(
        self, managed: Driver, export_root: Path, handle: str
    ) -> None:
        (export_root / SERVER / "precious").mkdir()
        (export_root / SERVER / "exports" / "f").write_text("data")
        before = tree(export_root)
        delete(managed, handle)
        assert tree(export_root) == before

    def test_a_directory_holding_one_of_our_volumes_is_failed_precondition(self, managed: Driver, export_dir: Path) -> None:
        managed.controller.CreateVolume(create_request("pvc-ours", subDir="app/pvc-ours"))
        volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE, "subDir": "app"})
        before = tree(export_dir)
        assert code_of(lambda: delete(managed, volume.handle)) == grpc.StatusCode.FAILED_PRECONDITION
        assert tree(export_dir) == before

    def test_a_share_of_this_driver_named_as_their_volume_on_a_share_above_is_left_alone(
        self, managed: Driver, export_root: Path, export_dir: Path
    ) -> None:
        managed.controller.CreateVolume(create_request("pvc-ours"))  # on 127.0.0.1:/exports
        before = tree(export_root)
        # csi-driver-nfs's share "/", its volume "exports": the same directory as this driver's share
        assert code_of(lambda: delete(managed, "127.0.0.1##exports##")) == grpc.StatusCode.FAILED_PRECONDITION
        assert tree(export_root) == before

    def test_get_validate_and_expand_describe_it(self, driver: Driver, export_dir: Path) -> None:
        volume = provision(export_dir, "pvc-1", {"server": SERVER, "share": SHARE})
        got = driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume.handle))
        assert got.volume.volume_id == volume.handle and not got.status.volume_condition.abnormal
        validated = driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(volume_id=volume.handle, volume_capabilities=[mount_capability()], volume_context=volume.context)
        )
        assert validated.HasField("confirmed")
        expanded = driver.controller.ControllerExpandVolume(
            csi.ControllerExpandVolumeRequest(volume_id=volume.handle, capacity_range=csi.CapacityRange(required_bytes=5 << 30))
        )
        assert expanded.capacity_bytes == 5 << 30 and share_entries(export_dir) == ["pvc-1"]
        missing = "127.0.0.1#exports#pvc-2##"
        get_missing = lambda: driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=missing))  # noqa: E731
        assert code_of(get_missing) == grpc.StatusCode.NOT_FOUND


class TestNfsSubdirExternalProvisionerKeys:
    def test_archive_on_delete_true_keeps_the_data(self, driver: Driver, export_dir: Path) -> None:
        request = create_request("pvc-3f6c2a1e", archiveOnDelete="true", pathPattern="${.PVC.namespace}/${.PVC.name}")
        request.parameters.update(METADATA)
        created = driver.controller.CreateVolume(request).volume
        (export_dir / "app" / "data" / "f").write_text("keep me")
        delete(driver, created.volume_id)
        (archive,) = [name for name in os.listdir(export_dir / "app") if name.startswith("archived-data-")]
        assert (export_dir / "app" / archive / "f").read_text() == "keep me"
        assert not (export_dir / "app" / "data").exists()

    def test_archive_on_delete_false_deletes(self, driver: Driver, export_dir: Path) -> None:
        created = driver.controller.CreateVolume(create_request("pvc-1", archiveOnDelete="false")).volume
        (export_dir / "pvc-1" / "f").write_text("gone")
        delete(driver, created.volume_id)
        assert share_entries(export_dir) == []

    def test_a_path_pattern_it_cannot_fill_is_invalid_argument_and_makes_nothing(self, driver: Driver, export_dir: Path) -> None:
        request = create_request("pvc-1", pathPattern="${.PVC.labels.team}/${.PVC.name}")
        assert code_of(lambda: driver.controller.CreateVolume(request)) == grpc.StatusCode.INVALID_ARGUMENT
        assert share_entries(export_dir) == []


class TestAdoption:
    def test_an_existing_directory_is_adopted_with_its_content(self, driver: Driver, export_dir: Path, pods: Path) -> None:
        (export_dir / "app" / "data").mkdir(parents=True)
        (export_dir / "app" / "data" / "f").write_text("from before the rebuild")
        os.chmod(export_dir / "app" / "data", 0o2775)
        request = create_request("pvc-new", adoptExisting="true", pathPattern="${.PVC.namespace}/${.PVC.name}")
        request.parameters.update(METADATA)
        created = driver.controller.CreateVolume(request).volume
        assert driver.controller.CreateVolume(request).volume == created
        assert (export_dir / "app" / ".data.nfs-csi.json").is_file()
        assert (export_dir / "app" / "data").stat().st_mode & 0o7777 == 0o2775
        target = pods / "t"
        publish(driver, target, created.volume_id, dict(created.volume_context))
        assert (target / "f").read_text() == "from before the rebuild"
        unpublish(driver, target, created.volume_id)

    def test_a_directory_holding_another_volumes_record_is_refused(self, driver: Driver, export_dir: Path) -> None:
        driver.controller.CreateVolume(create_request("pvc-a", subDir="shared"))
        (export_dir / "shared" / "f").write_text("pvc-a's")
        request = create_request("pvc-b", subDir="shared", adoptExisting="true")
        assert code_of(lambda: driver.controller.CreateVolume(request)) == grpc.StatusCode.ALREADY_EXISTS
        assert '"name": "pvc-a"' in (export_dir / ".shared.nfs-csi.json").read_text()
        assert (export_dir / "shared" / "f").read_text() == "pvc-a's"

    def test_without_adopt_existing_an_existing_directory_is_still_refused(self, driver: Driver, export_dir: Path) -> None:
        (export_dir / "pvc-1").mkdir()
        assert code_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"))) == grpc.StatusCode.ALREADY_EXISTS
        assert share_entries(export_dir) == ["pvc-1"]
