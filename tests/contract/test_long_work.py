"""Long work of the storage adapters beyond the shared contract: which share a failure is blamed on, and time bounds.

The mount-based adapter runs here over a stub mounter: each "share" is a plain local directory (its mount point),
so a dead handle can be injected on one side and the test sees which share the adapter unmounts.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import adapters.storage.archive as archive
import adapters.storage.mounted as mounted
import adapters.storage.share_storage as share_storage
from adapters.storage.archive import DIRECTORY, Deadline, Entry, copy_tree
from adapters.storage.files import ShareFiles
from adapters.storage.mounted import MountedFileSystem
from adapters.storage.share_storage import FileShareStorage
from adapters.storage.userspace import NfsRsFileSystem
from domain.errors import DomainError, Unavailable
from domain.model import ShareRef
from tests.contract.conftest import userspace_options
from tests.fakes import FakeMounter
from tests.integration.ganesha import Ganesha

SOURCE, DESTINATION = ShareRef("127.0.0.1", "/source"), ShareRef("127.0.0.1", "/destination")


class LocalMounter(FakeMounter):
    """Mounts nothing: the mount point itself is the share's directory."""

    def mount(self, source: str, target: str, options: Any) -> None:
        self.mounts[target] = (source, tuple(options))


Local = tuple[FileShareStorage, LocalMounter, MountedFileSystem]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    mounter = LocalMounter()
    files = MountedFileSystem(mounter, str(tmp_path / "work"), snapshot_timeout=30.0)
    storage = FileShareStorage(files)
    for share in (SOURCE, DESTINATION):
        storage.create_volume_dir(share, "v", None)
    (Path(files.mount_point(SOURCE)) / "v" / "file").write_bytes(b"data")
    yield storage, mounter, files
    storage.close()


def _stale(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))


def _mounted(files: MountedFileSystem, mounter: LocalMounter) -> dict[ShareRef, bool]:
    return {share: mounter.is_mount_point(files.mount_point(share)) for share in (SOURCE, DESTINATION)}


_walk = share_storage.tree_entries


def _stale_walk(files: ShareFiles, top: str) -> Iterator[Entry]:
    yield next(_walk(files, top))
    _stale()


class TestAStaleShareIsTheOneDropped:
    @pytest.mark.parametrize("operation", ["pack", "copy"])
    def test_a_stale_source_volume(
        self, local: Local, monkeypatch: pytest.MonkeyPatch, operation: str
    ) -> None:
        storage, mounter, files = local
        monkeypatch.setattr(share_storage, "tree_entries", _stale_walk)
        with pytest.raises(Unavailable, match="/source"):
            if operation == "pack":
                storage.pack_snapshot(SOURCE, "v", DESTINATION, "snap-1", "tar")
            else:
                storage.copy_volume(SOURCE, "v", DESTINATION, "v")
        assert _mounted(files, mounter) == {SOURCE: False, DESTINATION: True}

    def test_a_stale_snapshot_share_when_restoring(
        self, local: Local, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage, mounter, files = local
        storage.pack_snapshot(DESTINATION, "v", SOURCE, "snap-1", "tar")
        monkeypatch.setattr(mounted, "_open_regular", _stale)
        with pytest.raises(Unavailable, match="/source"):
            storage.restore_snapshot(SOURCE, "snap-1", "tar", DESTINATION, "v")
        assert _mounted(files, mounter) == {SOURCE: False, DESTINATION: True}

    def test_a_stale_destination_is_still_blamed_on_the_destination(
        self, local: Local, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage, mounter, files = local
        monkeypatch.setattr(share_storage.TreeWriter, "file", _stale)
        with pytest.raises(Unavailable, match="/destination"):
            storage.copy_volume(SOURCE, "v", DESTINATION, "v")
        assert _mounted(files, mounter) == {SOURCE: True, DESTINATION: False}


class TestTimeBounds:
    def test_the_deadline_counts_the_wait_for_a_thread(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Work that waited for a free thread has only what its caller has left: it never outlives the caller."""
        files = MountedFileSystem(LocalMounter(), str(tmp_path / "work"), fs_workers=1, snapshot_timeout=3.0)
        storage = FileShareStorage(files)
        for subdir in ("v", "w1", "w2"):
            storage.create_volume_dir(SOURCE, subdir, None)
        left: list[float] = []
        running = threading.Event()

        def copy_tree(entries: Any, writer: Any, deadline: Deadline) -> None:
            first = not running.is_set()
            running.set()
            left.append(deadline.remaining())
            if first:
                time.sleep(1.5)  # holds the only long-work thread

        monkeypatch.setattr(share_storage, "copy_tree", copy_tree)
        first = threading.Thread(target=storage.copy_volume, args=(SOURCE, "v", SOURCE, "w1"))
        first.start()
        assert running.wait(10)
        storage.copy_volume(SOURCE, "v", SOURCE, "w2")
        first.join(10)
        storage.close()
        assert left[0] > 2.5
        assert left[1] < 3.0 - 1.2, "the second copy's deadline started when it got a thread, not when it was called"

    def test_a_clone_whose_source_hangs_after_the_copy_failed_returns_at_the_deadline(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The consumer failed and closed the pipe; the producer is stuck reading the source: no unbounded join."""
        monkeypatch.setattr(archive, "CHUNK", 512)  # what tar writes reaches the consumer at once
        hung = threading.Event()

        def entries() -> Iterator[Entry]:
            for path in [".", *"abcdefghijklmnopqrst"]:  # two of tar's 10 KiB records: written out before the hang
                yield Entry(path, DIRECTORY, 0o755, 0, 0, 0)
            hung.wait(30)  # a walk stuck on a dead server

        class FailingWriter:
            def directory(self, path: str) -> None:
                raise OSError(errno.EIO, f"cannot make {path}")

            def file(self, path: str, data: Any) -> None: ...
            def symlink(self, path: str, target: str) -> None: ...
            def finish(self, path: str, entry: Entry) -> None: ...

        outcome: list[BaseException] = []

        def run() -> None:
            try:
                copy_tree(entries(), FailingWriter(), Deadline(1.0, "cloning"))
            except BaseException as err:  # noqa: BLE001 - collected for the assertion
                outcome.append(err)

        started = time.monotonic()
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        runner.join(10)
        hung.set()
        assert not runner.is_alive(), "copy_tree waited for a producer stuck on its source"
        assert time.monotonic() - started < 5
        assert isinstance(outcome[0], OSError) and "cannot make a" in str(outcome[0])


class _FailingReader:
    """A client of the source share whose connection broke: listing fails; closing is recorded."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.closed = threading.Event()

    def scandir(self, path: str) -> Any:
        raise ConnectionError("connection reset by the server")

    def close(self) -> None:
        self.closed.set()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.integration
def test_userspace_a_broken_source_connection_is_the_one_dropped(ganesha: Ganesha) -> None:
    """The source's client is dropped and the copy retried with a new one; the destination's client is kept."""
    files = NfsRsFileSystem(userspace_options(ganesha))
    storage = FileShareStorage(files)
    (source, source_dir), (destination, _) = ganesha.new_share("source"), ganesha.new_share("destination")
    try:
        storage.create_volume_dir(source, "v", None)
        (source_dir / "v" / "file").write_bytes(b"data")
        storage.create_volume_dir(destination, "w", None)
        writer = files._client(destination)
        broken = _FailingReader(files._client(source))
        files._clients.hold(source, broken)  # type: ignore[arg-type]
        try:
            storage.copy_volume(source, "v", destination, "w")
        except DomainError as err:
            pytest.fail(f"the copy was not retried with a new source connection: {err}")
        assert broken.closed.wait(10)
        assert files._client(destination) is writer
        assert files._client(source) is not broken
    finally:
        storage.close()
