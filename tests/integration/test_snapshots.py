"""Snapshots and clones over the real socket: the controller mounts the share (stand-in) and archives on it."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import Driver, create_request

pytestmark = pytest.mark.integration

MTIME = 1_600_000_000_123_456_789


def plant(volume: Path) -> dict[str, tuple[int, int, int, int]]:
    """Files with chosen modes, owners and times; returns what must survive: path -> (mode, uid, gid, mtime_ns)."""
    (volume / "dir" / "deep").mkdir(parents=True)
    (volume / "dir" / "deep" / "file").write_bytes(b"deep data")
    (volume / "secret").write_bytes(b"mode 0600, owner 1234")
    (volume / "script").write_bytes(b"#!/bin/sh\n")
    (volume / "link").symlink_to("dir/deep/file")
    chosen = {"dir": (0o2750, 1000, 1000), "dir/deep": (0o700, 2000, 3000), "dir/deep/file": (0o640, 2000, 3000),
              "secret": (0o600, 1234, 5678), "script": (0o4755, 0, 0)}  # fmt: skip
    for path, (mode, uid, gid) in chosen.items():
        os.chown(volume / path, uid, gid)
        os.chmod(volume / path, mode)
    os.lchown(volume / "link", 4321, 8765)
    for path in ["dir/deep/file", "secret", "script", "dir/deep", "dir", "link"]:
        os.utime(volume / path, ns=(MTIME, MTIME), follow_symlinks=False)
    return described(volume)


def described(volume: Path) -> dict[str, tuple[int, int, int, int]]:
    found = {}
    for path in sorted(volume.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(volume))] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns)
    return found


def contents(volume: Path) -> dict[str, bytes | str]:
    return {
        str(p.relative_to(volume)): os.readlink(p) if p.is_symlink() else p.read_bytes()
        for p in sorted(volume.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def snapshot(driver: Driver, name: str, volume_id: str, **params: str) -> csi.Snapshot:
    request = csi.CreateSnapshotRequest(name=name, source_volume_id=volume_id, parameters=params)
    response: csi.CreateSnapshotResponse = driver.controller.CreateSnapshot(request, timeout=60)
    return response.snapshot


def from_source(name: str, snapshot_id: str = "", volume_id: str = "") -> csi.CreateVolumeRequest:
    request = create_request(name)
    if snapshot_id:
        request.volume_content_source.snapshot.snapshot_id = snapshot_id
    else:
        request.volume_content_source.volume.volume_id = volume_id
    return request


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()  # type: ignore[operator]
    return err.value.code()  # type: ignore[no-any-return]


class TestRestoreSize:
    def test_size_bytes_is_what_a_restore_needs_and_a_smaller_volume_is_out_of_range(
        self, driver: Driver, export_dir: Path
    ) -> None:
        # Given a 1 MiB volume that holds 3 MiB (NFS enforces no quota) and one that holds 64 KiB of a 16 MiB capacity
        full = driver.controller.CreateVolume(create_request("pvc-full", capacity=1 << 20), timeout=30).volume
        (export_dir / "pvc-full" / "data").write_bytes(os.urandom(3 << 20))
        roomy = driver.controller.CreateVolume(create_request("pvc-roomy", capacity=16 << 20), timeout=30).volume
        (export_dir / "pvc-roomy" / "data").write_bytes(os.urandom(64 << 10))
        # When they are snapshotted (compressed archives)
        of_full = snapshot(driver, "snap-full", full.volume_id)
        of_roomy = snapshot(driver, "snap-roomy", roomy.volume_id)
        # Then each snapshot's size is the larger of the source's capacity and its content
        assert of_full.size_bytes == 3 << 20 and of_roomy.size_bytes == 16 << 20
        fetched = driver.controller.ListSnapshots(csi.ListSnapshotsRequest(snapshot_id=of_full.snapshot_id), timeout=10)
        assert [e.snapshot.size_bytes for e in fetched.entries] == [3 << 20]
        # And a restore is never smaller than it: a range below it is OUT_OF_RANGE, with nothing made
        too_small = from_source("pvc-small", snapshot_id=of_full.snapshot_id)
        too_small.capacity_range.CopyFrom(csi.CapacityRange(required_bytes=1 << 20, limit_bytes=2 << 20))
        assert code_of(lambda: driver.controller.CreateVolume(too_small, timeout=60)) == grpc.StatusCode.OUT_OF_RANGE
        assert not (export_dir / "pvc-small").exists() and not (export_dir / ".pvc-small.nfs-csi.json").exists()
        # and a restore asking for less with no limit gets the snapshot's size, holding all of the content
        asks_less = from_source("pvc-restored", snapshot_id=of_full.snapshot_id)
        asks_less.capacity_range.CopyFrom(csi.CapacityRange(required_bytes=1 << 20))
        restored = driver.controller.CreateVolume(asks_less, timeout=60).volume
        assert restored.capacity_bytes == of_full.size_bytes
        assert (export_dir / "pvc-restored" / "data").read_bytes() == (export_dir / "pvc-full" / "data").read_bytes()


class TestSnapshotAndRestore:
    @pytest.mark.parametrize("fmt", ["tar.gz", "tar"])
    def test_modes_owners_times_and_links_survive_snapshot_and_restore(
        self, driver: Driver, export_dir: Path, fmt: str
    ) -> None:
        source = driver.controller.CreateVolume(create_request("pvc-1"), timeout=30).volume
        expected = plant(export_dir / "pvc-1")
        data = contents(export_dir / "pvc-1")

        taken = snapshot(driver, "snap-1", source.volume_id, format=fmt)
        assert taken.ready_to_use and taken.source_volume_id == source.volume_id
        assert taken.size_bytes == source.capacity_bytes  # the restore size: the source's capacity, not the archive's
        archive = export_dir / ".nfs-csi" / "snapshots" / f"snap-1.{fmt}"
        record = json.loads((export_dir / ".nfs-csi" / "snapshots" / "snap-1.json").read_bytes())
        assert record["format"] == fmt and record["ready_to_use"] is True
        assert record["archive_bytes"] == archive.stat().st_size < taken.size_bytes
        (export_dir / "pvc-1" / "secret").write_bytes(b"changed after the snapshot")

        restored = driver.controller.CreateVolume(from_source("pvc-2", snapshot_id=taken.snapshot_id), timeout=60)
        assert restored.volume.content_source.snapshot.snapshot_id == taken.snapshot_id
        assert described(export_dir / "pvc-2") == expected
        assert contents(export_dir / "pvc-2") == data
        assert json.loads((export_dir / ".pvc-2.nfs-csi.json").read_bytes())["parameters"]["contentSource"] == (
            f"snapshot:{taken.snapshot_id}"
        )
        # A retry converges on the same volume; another source under the same name is ALREADY_EXISTS.
        assert driver.controller.CreateVolume(from_source("pvc-2", snapshot_id=taken.snapshot_id), timeout=60) == restored
        assert code_of(lambda: driver.controller.CreateVolume(from_source("pvc-2", volume_id=source.volume_id), timeout=30)) == (
            grpc.StatusCode.ALREADY_EXISTS
        )

    def test_get_list_and_delete(self, driver: Driver, export_dir: Path) -> None:
        source = driver.controller.CreateVolume(create_request("pvc-1"), timeout=30).volume
        taken = snapshot(driver, "snap-1", source.volume_id)
        got = driver.controller.GetSnapshot(csi.GetSnapshotRequest(snapshot_id=taken.snapshot_id), timeout=10).snapshot
        assert got == taken
        listed = driver.controller.ListSnapshots(csi.ListSnapshotsRequest(source_volume_id=source.volume_id), timeout=10)
        assert [e.snapshot for e in listed.entries] == [taken]
        assert code_of(lambda: driver.controller.ListSnapshots(csi.ListSnapshotsRequest(starting_token="bogus"), timeout=10)) == (
            grpc.StatusCode.ABORTED
        )

        driver.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=taken.snapshot_id), timeout=10)
        driver.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=taken.snapshot_id), timeout=10)
        assert sorted(p.name for p in (export_dir / ".nfs-csi" / "snapshots").iterdir()) == []
        assert code_of(lambda: driver.controller.GetSnapshot(csi.GetSnapshotRequest(snapshot_id=taken.snapshot_id), timeout=10)) == (
            grpc.StatusCode.NOT_FOUND
        )

    def test_unknown_parameters_and_missing_sources(self, driver: Driver) -> None:
        source = driver.controller.CreateVolume(create_request("pvc-1"), timeout=30).volume
        assert code_of(lambda: snapshot(driver, "s", source.volume_id, colour="blue")) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: snapshot(driver, "s", "nfs1#127.0.0.1#/exports#gone#delete")) == grpc.StatusCode.NOT_FOUND
        for request in (
            from_source("pvc-2", snapshot_id="nfs1snap#127.0.0.1#/exports#gone"),
            from_source("pvc-2", volume_id="nfs1#127.0.0.1#/exports#gone#delete"),
        ):
            assert code_of(lambda: driver.controller.CreateVolume(request, timeout=30)) == grpc.StatusCode.NOT_FOUND


class TestClone:
    def test_a_clone_copies_modes_owners_times_and_links(self, driver: Driver, export_dir: Path) -> None:
        source = driver.controller.CreateVolume(create_request("pvc-1"), timeout=30).volume
        expected = plant(export_dir / "pvc-1")
        data = contents(export_dir / "pvc-1")

        clone = driver.controller.CreateVolume(from_source("pvc-2", volume_id=source.volume_id), timeout=60).volume
        assert clone.content_source.volume.volume_id == source.volume_id
        assert described(export_dir / "pvc-2") == expected
        assert contents(export_dir / "pvc-2") == data
        assert described(export_dir / "pvc-1") == expected  # the source is untouched


def hostile_archive(*members: tuple[str, bytes, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            payload = b"pwned" if kind == tarfile.REGTYPE else b""
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        [("../escaped", tarfile.REGTYPE, "")],
        [("/tmp/absolute", tarfile.REGTYPE, "")],
        [("ok", tarfile.REGTYPE, ""), ("out", tarfile.SYMTYPE, "/"), ("out/escaped", tarfile.REGTYPE, "")],
        [("up", tarfile.SYMTYPE, "../.."), ("up/escaped", tarfile.REGTYPE, "")],
        [("hard", tarfile.LNKTYPE, "../../escaped")],
        [("device", tarfile.CHRTYPE, "")],
    ],
    ids=["dotdot", "absolute", "through-absolute-link", "through-relative-link", "hard-link", "device"],
)
def test_a_hostile_archive_planted_on_the_share_is_refused_with_nothing_written_outside(
    driver: Driver, export_dir: Path, members: list[tuple[str, bytes, str]]
) -> None:
    # Given a genuine snapshot whose archive is then replaced by a hostile one
    source = driver.controller.CreateVolume(create_request("pvc-1"), timeout=30).volume
    taken = snapshot(driver, "snap-1", source.volume_id)
    (export_dir / ".nfs-csi" / "snapshots" / "snap-1.tar.gz").write_bytes(hostile_archive(*members))
    before = {str(p) for p in export_dir.parent.parent.rglob("*")}

    # When a volume is restored from it, it is refused
    request = from_source("pvc-2", snapshot_id=taken.snapshot_id)
    assert code_of(lambda: driver.controller.CreateVolume(request, timeout=60)) == grpc.StatusCode.INVALID_ARGUMENT

    # and nothing is written outside the volume, nor is the half volume kept
    after = {str(p) for p in export_dir.parent.parent.rglob("*")}
    assert after == before
    assert not (export_dir / "pvc-2").exists() and not (export_dir / ".pvc-2.nfs-csi.json").exists()
    assert not Path("/tmp/absolute").exists()
