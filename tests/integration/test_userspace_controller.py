"""The controller on userspace NFS, with no capability at all, against nfs-ganesha, over the real CSI socket."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from domain.model import METADATA_DIR
from tests.integration.conftest import Driver, mount_capability, share_entries, start_driver, volume_index
from tests.integration.ganesha import Ganesha, ganesha  # noqa: F401 - the session's NFS server fixture

pytestmark = pytest.mark.integration

NO_PRIVILEGE = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
ARCHIVED = re.compile(r"^archived-pvc-1-\d{8}T\d{6}Z$")


def start_userspace_controller(workdir: Path, server: Ganesha, *extra: str) -> Driver:
    """``python -m app --mode controller --storage userspace``, under setpriv with an empty capability set."""
    driver = start_driver(
        workdir,
        "--storage", "userspace",
        "--nfs-version", "4.1",
        "--nfs-port", str(server.port),
        "--nfs-timeout", "10",
        *extra,
        mode="controller",
        wrapper=NO_PRIVILEGE,
    )  # fmt: skip
    if "controller storage: userspace NFS" not in driver.log.read_text():
        driver.stop()
        raise AssertionError(f"the driver ignored --storage userspace:\n{driver.log.read_text()}")
    return driver


def effective_capabilities(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


@pytest.fixture
def share(ganesha: Ganesha) -> tuple[str, Path]:
    """A fresh directory of ganesha's export: its NFS path, and where it lies on the server's disk."""
    ref, directory = ganesha.new_share("csi")
    return ref.share, directory


@pytest.fixture
def controller(ganesha: Ganesha, tmp_path: Path) -> Iterator[Driver]:
    running = start_userspace_controller(tmp_path / "driver", ganesha)
    yield running
    assert running.stop() == 0, running.log.read_text()


def create(driver: Driver, share: str, name: str = "pvc-1", **params: str) -> csi.CreateVolumeResponse:
    request = csi.CreateVolumeRequest(
        name=name,
        capacity_range=csi.CapacityRange(required_bytes=2 << 30),
        volume_capabilities=[mount_capability()],
        parameters={"server": "127.0.0.1", "share": share, **params},
    )
    response: csi.CreateVolumeResponse = driver.controller.CreateVolume(request, timeout=30)
    return response


class TestUnprivilegedController:
    def test_it_runs_with_no_capability_and_probes_ready(self, controller: Driver) -> None:
        assert effective_capabilities(controller.process.pid) == 0
        assert controller.identity.Probe(csi.ProbeRequest(), timeout=10).ready.value

    def test_create_then_delete_leaves_the_share_as_it_was(self, controller: Driver, ganesha: Ganesha, share: tuple[str, Path]) -> None:
        path, on_disk = share
        case = path.removeprefix(ganesha.pseudo + "/")

        # Given a volume made over the socket
        volume = create(controller, path, subDir="ns/pvc-1", mountPermissions="0770", onDelete="delete").volume
        assert "from user space" in controller.log.read_text()

        # then an independent NFS client sees its directory and its record on the server
        listing = ganesha.ls(f"{case}/ns")
        assert set(listing) == {"pvc-1", ".pvc-1.nfs-csi.json"}
        assert listing["pvc-1"].kind == "dir" and listing["pvc-1"].mode == 0o770
        record = json.loads(ganesha.cat(f"{case}/ns/.pvc-1.nfs-csi.json"))
        assert record["name"] == "pvc-1" and record["capacity_bytes"] == 2 << 30
        # and so does the export directory itself
        assert (on_disk / "ns" / "pvc-1").is_dir() and (on_disk / "ns" / "pvc-1").stat().st_mode & 0o777 == 0o770
        assert json.loads((on_disk / "ns" / ".pvc-1.nfs-csi.json").read_bytes()) == record

        # When it is asked for again, the same volume comes back
        assert create(controller, path, subDir="ns/pvc-1", mountPermissions="0770", onDelete="delete").volume == volume

        # When a pod's data is in it and it is deleted, twice
        (on_disk / "ns" / "pvc-1" / "sub").mkdir()
        (on_disk / "ns" / "pvc-1" / "sub" / "data").write_text("written by a pod")
        controller.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)
        controller.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)

        # then nothing of it is left, over NFS or on disk
        assert ganesha.ls(f"{case}/ns") == {}
        assert sorted(p.name for p in on_disk.rglob("*") if METADATA_DIR not in p.parts) == ["ns"]
        assert volume_index(on_disk) == []

    def test_archive_keeps_the_data_under_a_new_name(self, controller: Driver, ganesha: Ganesha, share: tuple[str, Path]) -> None:
        path, on_disk = share
        case = path.removeprefix(ganesha.pseudo + "/")
        volume = create(controller, path, onDelete="archive").volume
        (on_disk / "pvc-1" / "data").write_text("keep me")

        controller.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)
        controller.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)

        listing = ganesha.ls(case)
        del listing[METADATA_DIR]
        (archived,) = listing
        assert ARCHIVED.match(archived) and listing[archived].kind == "dir"
        assert ganesha.cat(f"{case}/{archived}/data") == b"keep me"
        assert share_entries(on_disk) == [archived]
        assert (on_disk / archived / "data").read_text() == "keep me"

    def test_a_directory_the_driver_did_not_make_is_refused_and_kept(self, controller: Driver, ganesha: Ganesha, share: tuple[str, Path]) -> None:
        path, on_disk = share
        (on_disk / "pvc-1").mkdir()
        (on_disk / "pvc-1" / "precious").write_text("not yours")
        with pytest.raises(grpc.RpcError) as err:
            create(controller, path)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert (on_disk / "pvc-1" / "precious").read_text() == "not yours"

    def test_the_owner_is_given_on_create_and_modify_and_a_refusal_leaves_nothing(
        self, controller: Driver, ganesha: Ganesha, share: tuple[str, Path], tmp_path: Path
    ) -> None:
        path, on_disk = share
        # Given the controller's AUTH_SYS identity is root and the export does not squash it: the owner is given
        volume = create(controller, path, uid="1000", gid="2000").volume
        assert ((on_disk / "pvc-1").stat().st_uid, (on_disk / "pvc-1").stat().st_gid) == (1000, 2000)
        controller.controller.ControllerModifyVolume(
            csi.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters={"uid": "3000"}), timeout=30
        )
        assert ((on_disk / "pvc-1").stat().st_uid, (on_disk / "pvc-1").stat().st_gid) == (3000, 2000)
        # Given a controller whose identity is uid 1000 (what a squashed root becomes), on a share open to it
        other, other_on_disk = ganesha.new_share("csi")
        other_on_disk.chmod(0o777)
        unprivileged = start_userspace_controller(tmp_path / "as-1000", ganesha, "--nfs-uid", "1000", "--nfs-gid", "1000")
        try:
            create(unprivileged, other.share, "pvc-2")  # it may make volumes
            before = sorted(str(p.relative_to(other_on_disk)) for p in other_on_disk.rglob("*"))
            # When a volume asks for another owner, then the server refuses it, the call says how to allow it,
            # and the half-made volume is removed
            with pytest.raises(grpc.RpcError) as refused:
                create(unprivileged, other.share, "pvc-3", uid="2000")
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "--nfs-uid 0" in (refused.value.details() or "")
            assert sorted(str(p.relative_to(other_on_disk)) for p in other_on_disk.rglob("*")) == before
        finally:
            assert unprivileged.stop() == 0, unprivileged.log.read_text()

    def test_a_shares_own_port_and_version_override_the_flags_as_a_mounts_would(
        self, ganesha: Ganesha, share: tuple[str, Path], tmp_path: Path
    ) -> None:
        # Given flags that reach no server (port 1), and the share's own options naming ganesha's port and NFSv4.0
        path, on_disk = share
        driver = start_userspace_controller(
            tmp_path / "per-share", ganesha, "--nfs-port", "1",
            "--share-mount-options", f"127.0.0.1:{path}=vers=4.0,port={ganesha.port},hard",
        )  # fmt: skip
        try:
            # When a volume is made and deleted there, then both reach the server with the share's options
            volume = create(driver, path).volume
            assert (on_disk / "pvc-1").is_dir()
            driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id), timeout=30)
            assert not (on_disk / "pvc-1").exists()
            assert f"share 127.0.0.1:{path}: userspace NFS 4.0, port {ganesha.port}" in driver.log.read_text()
            # and a share without options of its own keeps the flags' (port 1): the failure says how it tried
            with pytest.raises(grpc.RpcError) as unreachable:
                create(driver, ganesha.new_share("csi")[0].share, "pvc-2")
            assert "port 1" in (unreachable.value.details() or "") and "--share-mount-options" in (
                unreachable.value.details() or ""
            )
        finally:
            assert driver.stop() == 0, driver.log.read_text()

    def test_a_share_the_server_does_not_export_is_not_found(self, controller: Driver) -> None:
        with pytest.raises(grpc.RpcError) as err:
            create(controller, "/exports/no-such-share")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


class TestSnapshotsAndClones:
    def test_snapshot_restore_and_clone_keep_content_modes_and_times(
        self, controller: Driver, share: tuple[str, Path]
    ) -> None:
        path, on_disk = share
        source = create(controller, path, name="pvc-1").volume
        volume = on_disk / "pvc-1"
        (volume / "dir").mkdir()
        (volume / "dir" / "file").write_bytes(b"over NFS from user space")
        (volume / "link").symlink_to("dir/file")
        os.chmod(volume / "dir" / "file", 0o640)
        os.chmod(volume / "dir", 0o750)
        os.chown(volume / "dir" / "file", 1234, 5678)
        for name in ("dir/file", "dir", "link"):
            os.utime(volume / name, ns=(1_600_000_000_123_456_789,) * 2, follow_symlinks=False)
        expected = _described(volume)

        snapshot = controller.controller.CreateSnapshot(
            csi.CreateSnapshotRequest(name="snap-1", source_volume_id=source.volume_id), timeout=60
        ).snapshot
        assert snapshot.ready_to_use and (on_disk / ".nfs-csi" / "snapshots" / "snap-1.tar.gz").is_file()
        listed = controller.controller.ListSnapshots(csi.ListSnapshotsRequest(source_volume_id=source.volume_id), timeout=30)
        assert [e.snapshot.snapshot_id for e in listed.entries] == [snapshot.snapshot_id]

        for name, source_field in (("restored", "snapshot"), ("cloned", "volume")):
            request = csi.CreateVolumeRequest(
                name=name,
                capacity_range=csi.CapacityRange(required_bytes=2 << 30),
                volume_capabilities=[mount_capability()],
                parameters={"server": "127.0.0.1", "share": path},
            )
            if source_field == "snapshot":
                request.volume_content_source.snapshot.snapshot_id = snapshot.snapshot_id
            else:
                request.volume_content_source.volume.volume_id = source.volume_id
            controller.controller.CreateVolume(request, timeout=60)
            assert _described(on_disk / name) == expected, name
            assert (on_disk / name / "dir" / "file").read_bytes() == b"over NFS from user space"

        with pytest.raises(grpc.RpcError) as err:
            controller.controller.CreateVolume(
                csi.CreateVolumeRequest(
                    name="missing",
                    volume_capabilities=[mount_capability()],
                    parameters={"server": "127.0.0.1", "share": path},
                    volume_content_source=csi.VolumeContentSource(
                        snapshot=csi.VolumeContentSource.SnapshotSource(snapshot_id=snapshot.snapshot_id + "x")
                    ),
                ),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        controller.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snapshot.snapshot_id), timeout=30)
        assert list((on_disk / ".nfs-csi" / "snapshots").iterdir()) == []


def _described(volume: Path) -> dict[str, tuple[int, int, int, int | str]]:
    """Mode, owner and mtime of everything below volume; a link's target instead of its time, which NFS SETATTR
    does not set on a link."""
    return {
        str(p.relative_to(volume)): (
            p.lstat().st_mode, p.lstat().st_uid, p.lstat().st_gid,
            os.readlink(p) if p.is_symlink() else p.lstat().st_mtime_ns,
        )
        for p in sorted(volume.rglob("*"))
    }


class TestVolumeSurfaceFromUserSpace:
    def test_list_get_capacity_expand_and_modify_work_over_userspace_nfs(
        self, ganesha: Ganesha, share: tuple[str, Path], tmp_path: Path
    ) -> None:
        path, on_disk = share
        driver = start_userspace_controller(tmp_path / "listing", ganesha, "--shares", f"127.0.0.1:{path}")
        try:
            created = [create(driver, path, f"pvc-{i}", subDir=f"ns/pvc-{i}").volume.volume_id for i in range(3)]

            # ListVolumes pages through the index the userspace adapter wrote, and rejects a token it did not give
            first = driver.controller.ListVolumes(csi.ListVolumesRequest(max_entries=2), timeout=30)
            rest = driver.controller.ListVolumes(
                csi.ListVolumesRequest(max_entries=2, starting_token=first.next_token), timeout=30
            )
            assert sorted(e.volume.volume_id for e in [*first.entries, *rest.entries]) == sorted(created)
            assert rest.next_token == ""
            with pytest.raises(grpc.RpcError) as err:
                driver.controller.ListVolumes(csi.ListVolumesRequest(starting_token="nope"), timeout=30)
            assert err.value.code() == grpc.StatusCode.ABORTED

            # GetCapacity is the server's FSSTAT answer for the export's filesystem
            capacity = driver.controller.GetCapacity(
                csi.GetCapacityRequest(parameters={"server": "127.0.0.1", "share": path}), timeout=30
            ).available_capacity
            info = os.statvfs(on_disk)
            assert abs(capacity - info.f_bavail * info.f_frsize) <= 64 << 20

            # Expand records the size; modify changes the mode at once; a deleted directory shows as abnormal
            volume_id = created[0]
            expanded = driver.controller.ControllerExpandVolume(
                csi.ControllerExpandVolumeRequest(volume_id=volume_id, capacity_range=csi.CapacityRange(required_bytes=5 << 30)),
                timeout=30,
            )
            assert (expanded.capacity_bytes, expanded.node_expansion_required) == (5 << 30, True)
            driver.controller.ControllerModifyVolume(
                csi.ControllerModifyVolumeRequest(volume_id=volume_id, mutable_parameters={"mountPermissions": "0700"}),
                timeout=30,
            )
            assert stat.S_IMODE((on_disk / "ns" / "pvc-0").stat().st_mode) == 0o700
            record = json.loads((on_disk / "ns" / ".pvc-0.nfs-csi.json").read_bytes())
            assert record["capacity_bytes"] == 5 << 30 and record["mutable_parameters"] == {"mountPermissions": "0700"}
            shutil.rmtree(on_disk / "ns" / "pvc-0")
            got = driver.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume_id), timeout=30)
            assert got.status.volume_condition.abnormal and got.volume.capacity_bytes == 5 << 30
        finally:
            assert driver.stop() == 0, driver.log.read_text()
