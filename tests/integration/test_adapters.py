"""The real SubprocessMounter, and the storage over MountedFileSystem, against the mount.nfs stand-in."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from adapters.mount.mountinfo import MountTable
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter, TransientMountError
from adapters.storage.mounted import MountedFileSystem
from adapters.storage.share_storage import FileShareStorage
from domain.errors import DeadlineExceeded, MountFailed, NotFound, Obstructed
from domain.model import ShareRef, VolumeRecord
from tests.integration.conftest import SERVER, SHARE, STANDIN, mounts_under

pytestmark = pytest.mark.integration

ONE_TRY = RetryPolicy(attempts=1)


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return str(path)


class TestSubprocessMounter:
    def test_mounts_and_unmounts_a_real_bind_of_the_export(self, export_dir: Path, tmp_path: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=ONE_TRY)
        target = tmp_path / "t"
        mounter.make_target(str(target))
        mounter.mount(f"{SERVER}:{SHARE}", str(target), ["nfsvers=4.1"])
        assert mounter.is_mount_point(str(target)) and not mounter.is_mount_point(str(tmp_path))
        mounter.unmount(str(target))
        mounter.unmount(str(target))
        mounter.remove_target(str(target))
        assert not target.exists() and mounts_under(tmp_path) == []

    def test_a_missing_export_is_not_found(self, export_root: Path, tmp_path: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=ONE_TRY)
        with pytest.raises(NotFound):
            mounter.mount(f"{SERVER}:/no/such", str(tmp_path), [])

    def test_a_hung_mount_is_killed_with_its_whole_process_group(self, tmp_path: Path) -> None:
        pids = tmp_path / "pids"
        hang = script(tmp_path / "hang", f"sleep 300 & echo $! >> {pids}\necho $$ >> {pids}\nwait\n")
        mounter = SubprocessMounter(mount_command=hang, timeout=0.5, retry=ONE_TRY)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            mounter.mount("h:/x", str(tmp_path), [])
        assert time.monotonic() - started < 5
        for pid in map(int, pids.read_text().split()):
            assert _dies_within(pid, 2.0), f"process {pid} of the timed-out mount survived"

    def test_transient_failures_are_retried_and_then_stop(self, tmp_path: Path) -> None:
        tries = tmp_path / "tries"
        flaky = script(tmp_path / "flaky", f"echo x >> {tries}\necho 'mount.nfs: Connection timed out' >&2\nexit 32\n")
        mounter = SubprocessMounter(mount_command=flaky, retry=RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02))
        with pytest.raises(TransientMountError):
            mounter.mount("h:/x", str(tmp_path), [])
        assert len(tries.read_text().split()) == 3

    def test_permanent_failures_are_not_retried(self, tmp_path: Path) -> None:
        tries = tmp_path / "tries"
        denied = script(tmp_path / "denied", f"echo x >> {tries}\necho 'access denied by server' >&2\nexit 32\n")
        mounter = SubprocessMounter(mount_command=denied, retry=RetryPolicy(attempts=3, initial_wait=0.01))
        with pytest.raises(MountFailed):
            mounter.mount("h:/x", str(tmp_path), [])
        assert len(tries.read_text().split()) == 1

    def test_options_reach_mount_nfs_as_one_argument_list(self, tmp_path: Path) -> None:
        seen = tmp_path / "argv"
        record = script(tmp_path / "record", f'printf "%s\\n" "$@" > {seen}\n')
        SubprocessMounter(mount_command=record, retry=ONE_TRY).mount("h:/x y", "/t", ["hard", "nfsvers=4.1"])
        assert seen.read_text().splitlines() == ["h:/x y", "/t", "-o", "hard,nfsvers=4.1"]


def _dies_within(pid: int, seconds: float) -> bool:
    """SIGKILL is delivered asynchronously: give the kernel a moment on a loaded machine."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"


class TestStorageOnMountedShares:
    @pytest.fixture
    def storage(self, export_root: Path, tmp_path: Path) -> FileShareStorage:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=ONE_TRY)
        storage = FileShareStorage(MountedFileSystem(mounter, str(tmp_path / "work")))
        yield storage  # type: ignore[misc]
        storage.close()
        assert mounts_under(tmp_path / "work") == []

    share = ShareRef(SERVER, SHARE)

    def test_directories_and_records_land_in_the_export(self, storage: FileShareStorage, export_dir: Path) -> None:
        storage.write_record(self.share, "ns/v", VolumeRecord("v", 5))
        storage.create_volume_dir(self.share, "ns/v", 0o770)
        assert (export_dir / "ns" / "v").is_dir() and (export_dir / "ns" / "v").stat().st_mode & 0o777 == 0o770
        assert storage.read_record(self.share, "ns/v") == VolumeRecord("v", 5)
        storage.rename_volume_dir(self.share, "ns/v", "ns/archived-v")
        assert (export_dir / "ns" / "archived-v").is_dir() and not storage.exists(self.share, "ns/v")
        storage.remove_volume_dir(self.share, "ns/archived-v")
        storage.remove_record(self.share, "ns/v")
        assert os.listdir(export_dir / "ns") == []

    def test_a_symlink_on_the_way_is_never_followed(self, storage: FileShareStorage, export_dir: Path, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        (outside / "victim").mkdir(parents=True)
        (export_dir / "ns").symlink_to(outside)
        assert not storage.exists(self.share, "ns/victim")
        assert storage.read_record(self.share, "ns/victim") is None
        with pytest.raises(Obstructed, match="not a plain directory"):
            storage.remove_volume_dir(self.share, "ns/victim")
        assert (outside / "victim").is_dir()

    def test_a_symlinked_volume_directory_is_not_removed_through(self, storage: FileShareStorage, export_dir: Path, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "data").write_text("keep")
        (export_dir / "v").symlink_to(outside)
        with pytest.raises(Obstructed):
            storage.remove_volume_dir(self.share, "v")
        assert (outside / "data").read_text() == "keep"


class TestMountTable:
    """The mount table is re-read only when the kernel flags a change; a real bind mount must still show at once."""

    def test_sees_a_mount_and_its_removal(self, tmp_path: Path) -> None:
        target = tmp_path / "t"
        target.mkdir()
        table = MountTable()
        try:
            assert table.count(str(target)) == 0
            subprocess.run(["mount", "--bind", str(tmp_path), str(target)], check=True, timeout=10)
            try:
                assert table.count(str(target)) == 1
                subprocess.run(["mount", "--bind", str(tmp_path), str(target)], check=True, timeout=10)
                assert table.count(str(target) + "/") == 2
                subprocess.run(["umount", str(target)], check=True, timeout=10)
                assert table.count(str(target)) == 1
            finally:
                while table.count(str(target)):
                    subprocess.run(["umount", str(target)], check=True, timeout=10)
            assert table.count(str(target)) == 0
        finally:
            table.close()

    def test_reads_the_table_only_after_a_change(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        table = MountTable()
        reads = 0
        read = table._read

        def counting() -> str:
            nonlocal reads
            reads += 1
            return read()

        monkeypatch.setattr(table, "_read", counting)
        try:
            for _ in range(5):
                table.count(str(tmp_path))
            assert reads == 1
            subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp_path)], check=True, timeout=10)
            try:
                assert table.count(str(tmp_path)) == 1
                assert reads == 2
            finally:
                subprocess.run(["umount", str(tmp_path)], check=True, timeout=10)
        finally:
            table.close()

    def test_a_plain_file_is_read_every_time(self, tmp_path: Path) -> None:
        line = "36 25 0:32 / {} rw,relatime shared:1 - tmpfs none rw\n"
        table_file = tmp_path / "mountinfo"
        table_file.write_text(line.format("/a"))
        table = MountTable(str(table_file))
        assert table.count("/a") == 1
        table_file.write_text(line.format("/b"))
        assert (table.count("/a"), table.count("/b")) == (0, 1)
