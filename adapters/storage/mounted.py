"""MountedShareStorage: mount each share once under a working directory, then work with directories there."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import stat
import threading
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, ContextManager, Iterator, Sequence, TypeVar

from adapters.mount.bounded import BoundedCalls
from adapters.mount.subprocess_mounter import STALE_ERRNOS
from adapters.storage.archive import (
    DIRECTORY,
    FILE,
    SYMLINK,
    Deadline,
    Entry,
    SourceFailed,
    SourceReader,
    copy_tree,
    pack_tree,
    reading_source,
    source_entries,
    unpack_tree,
)
from adapters.storage.layout import (
    DRIVER_DIR_MODE,
    ENTRY_LIMIT,
    RECORD_LIMIT,
    RecordWriters,
    archive_temporary,
    index_entry,
    indexed_subdir,
    is_temporary,
    listed_volumes,
    record_name,
    snapshot_files,
    snapshot_record,
    snapshot_record_leaf,
    snapshot_records,
    volume_record,
)
from domain.errors import (
    DomainError,
    FailedPrecondition,
    StorageFailed,
    OperationInFlight,
    ResourceExhausted,
    Unavailable,
)
from domain.model import METADATA_DIR, ListedVolume, ListPosition, ShareRef, VolumeRecord
from domain.paths import join_inside
from domain.snapshot_model import SnapshotRecord, archive_name, record_file
from ports.mounter import Mounter
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _ignore_missing(function: Any, path: str, excinfo: Any) -> None:
    """rmtree: an entry already gone (a retry racing an earlier, timed-out removal) is fine."""
    if not issubclass(excinfo[0], FileNotFoundError):
        raise excinfo[1]


class MountedShareStorage(ShareStorage):
    """Every filesystem call on a share runs on that share's few bounded threads (a hung server costs no more)."""

    def __init__(
        self,
        mounter: Mounter,
        working_dir: str,
        mount_options: tuple[str, ...] = (),
        fs_timeout: float = 30.0,
        fs_workers: int = 4,
        snapshot_timeout: float = 600.0,
    ) -> None:
        self._mounter = mounter
        self._working_dir = os.path.abspath(working_dir)
        self._options = mount_options
        self._fs_timeout = fs_timeout
        self._fs_workers = fs_workers
        self._guard = threading.Lock()
        self._share_locks: dict[ShareRef, threading.Lock] = {}
        self._mounted: dict[ShareRef, str] = {}
        self._calls: dict[ShareRef, BoundedCalls] = {}
        self._record_writers = RecordWriters()
        self._snapshot_timeout = snapshot_timeout
        self._long_calls: dict[ShareRef, BoundedCalls] = {}
        self._busy: set[tuple[str, ShareRef, str]] = set()  # long work running now, until its thread ends

    def share_reachable(self, share: ShareRef) -> bool:
        try:
            self._root(share)
        except DomainError:
            return False
        return True

    def shares_held(self) -> int:
        return len(self._mounted)

    def mount_point(self, share: ShareRef) -> str:
        digest = hashlib.sha256(share.source().encode()).hexdigest()[:20]
        return os.path.join(self._working_dir, digest)

    def _root(self, share: ShareRef) -> str:
        """The local path of the share, mounted on first use; the mount table, not memory, says whether it is."""
        path = self.mount_point(share)
        if self._mounter.is_mount_point(path):
            self._mounted[share] = path
            return path
        with self._guard:
            lock = self._share_locks.setdefault(share, threading.Lock())
        if not lock.acquire(timeout=self._fs_timeout):
            raise Unavailable(f"share {share.source()} is being mounted by another call; try again")
        try:
            if not self._mounter.is_mount_point(path):
                if self._mounted.pop(share, None) is not None:
                    log.warning("share %s is no longer mounted at %s; mounting it again", share.source(), path)
                os.makedirs(path, mode=0o700, exist_ok=True)
                self._mounter.mount(share.source(), path, self._options)
                log.info("mounted share %s at %s", share.source(), path)
            self._mounted[share] = path
            return path
        finally:
            lock.release()

    def _bounded(self, share: ShareRef) -> BoundedCalls:
        with self._guard:
            calls = self._calls.get(share)
            if calls is None:
                calls = self._calls[share] = BoundedCalls(f"share {share.source()}", self._fs_workers, self._fs_timeout)
            return calls

    def _on_share(self, share: ShareRef, what: str, work: Callable[[str], T]) -> T:
        """Run work(root) on the share's bounded threads; turn an OSError into what the caller can act on."""
        root = self._root(share)
        try:
            return self._bounded(share).call(f"{what} on {share.source()}", lambda: work(root))
        except DomainError:
            raise
        except OSError as err:
            known = self._share_error(share, root, what, err)
            if known is None:
                raise
            raise known from err

    def _share_error(self, share: ShareRef, root: str, what: str, err: OSError) -> DomainError | None:
        reason = f"{what} on {share.source()}: {err.strerror or err}"
        if err.errno in STALE_ERRNOS:
            self._drop_stale_share(share, root, err)
            return Unavailable(f"{reason}; the share was unmounted and is mounted again on the next call")
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return ResourceExhausted(reason)
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return FailedPrecondition(reason)
        return None

    def _drop_stale_share(self, share: ShareRef, root: str, err: OSError) -> None:
        log.warning("share %s at %s answers %r: unmounting it", share.source(), root, err.strerror)
        self._mounted.pop(share, None)
        try:
            self._mounter.unmount(root)
        except DomainError as unmount_error:
            log.warning("could not unmount stale share %s: %s", share.source(), unmount_error)

    @contextmanager
    def _parent(self, root: str, subdir: str, create: bool = False) -> Iterator[tuple[int | None, str]]:
        """An fd of subdir's parent, reached without following any symbolic link, and subdir's leaf."""
        join_inside(root, subdir)  # lexical containment, again, at the edge
        *parents, leaf = subdir.split("/")
        with _descend(root, parents, 0o777 if create else None, f"on the way to {subdir!r}") as fd:
            yield fd, leaf

    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None) -> None:
        def work(root: str) -> None:
            with self._parent(root, subdir, create=True) as (fd, leaf):
                assert fd is not None
                try:
                    os.mkdir(leaf, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    volume_fd = os.open(leaf, _OPEN_DIR, dir_fd=fd)
                except OSError as err:
                    raise StorageFailed(f"{subdir!r} exists and is not a plain directory") from err
                try:
                    if mode is not None:
                        os.fchmod(volume_fd, mode)
                finally:
                    os.close(volume_fd)

        self._on_share(share, f"creating {subdir!r}", work)

    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        def work(root: str) -> None:
            with self._parent(root, subdir) as (fd, leaf):
                if fd is None:
                    return
                try:
                    shutil.rmtree(leaf, dir_fd=fd, onerror=_ignore_missing)
                except FileNotFoundError:
                    pass
                except NotADirectoryError as err:
                    raise StorageFailed(f"{subdir!r} is not a directory; refusing to remove it") from err

        self._refuse_while_filling(share, subdir)
        self._on_share(share, f"removing {subdir!r}", work)

    def _refuse_while_filling(self, share: ShareRef, subdir: str) -> None:
        """A restore or copy into subdir that outlived its caller is still writing there: removing the directory
        under it would race the writer; the caller's retry after the work ends converges."""
        with self._guard:
            if ("fill", share, subdir) in self._busy:
                raise OperationInFlight(f"{subdir!r} on {share.source()} is still being filled; try again later")

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        if os.path.dirname(subdir) != os.path.dirname(new_subdir):
            raise StorageFailed("a volume directory is only renamed within its parent")

        def work(root: str) -> None:
            with self._parent(root, subdir) as (fd, leaf):
                if fd is None:
                    return
                try:
                    os.rename(leaf, os.path.basename(new_subdir), src_dir_fd=fd, dst_dir_fd=fd)
                except FileNotFoundError:
                    pass

        self._on_share(share, f"renaming {subdir!r}", work)

    def exists(self, share: ShareRef, subdir: str) -> bool:
        def work(root: str) -> bool:
            with self._parent(root, subdir) as (fd, leaf):
                if fd is None:
                    return False
                try:
                    child = os.open(leaf, _OPEN_DIR, dir_fd=fd)
                except OSError as err:
                    if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        return False
                    raise
                os.close(child)
                return True

        return self._on_share(share, f"looking up {subdir!r}", work)

    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        def work(root: str) -> bytes | None:
            with self._parent(root, subdir) as (fd, leaf):
                return None if fd is None else _read_small(fd, record_name(leaf), RECORD_LIMIT)

        return volume_record(self._on_share(share, f"reading the record of {subdir!r}", work), subdir)

    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        data = record.to_json()

        def work(root: str) -> None:
            self._index(root, subdir)
            with self._parent(root, subdir, create=True) as (fd, leaf):
                assert fd is not None
                name = record_name(leaf)
                temporary = f"{name}.tmp"
                raw_fd = os.open(
                    temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
                )
                with os.fdopen(raw_fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)

        with self._record_writers(share, subdir):
            self._on_share(share, f"writing the record of {subdir!r}", work)

    def remove_record(self, share: ShareRef, subdir: str) -> None:
        def work(root: str) -> None:
            with self._parent(root, subdir) as (fd, leaf):
                if fd is not None:
                    for name in (record_name(leaf), f"{record_name(leaf)}.tmp"):
                        try:
                            os.unlink(name, dir_fd=fd)
                        except FileNotFoundError:
                            pass
            with self._driver_dir(root, "volumes", create=False) as fd:
                if fd is not None:
                    _unlink_quietly(index_entry(subdir), fd)

        self._on_share(share, f"removing the record of {subdir!r}", work)

    # -- snapshots and clones: long work, on threads of its own, bounded as a whole by --snapshot-timeout ------------

    def _on_share_long(
        self,
        share: ShareRef,
        key: tuple[str, ShareRef, str],
        what: str,
        work: Callable[[Deadline], T],
        source: ShareRef | None = None,
    ) -> T:
        """Run work on the share's long-work threads; the key stays busy until the thread ends, not the call.

        The deadline starts now, before waiting for a thread, so the work stops (at its next check) no later than
        the caller gives up and releases its locks; a retry meanwhile is refused (ABORTED) instead of packing or
        copying a second time into the same files. What fails on the ``source`` side (SourceFailed) is blamed on
        the source share, anything else on ``share``, the one written to.
        """
        self._root(share)  # mounted (or refused) before the work is queued
        deadline = Deadline(self._snapshot_timeout, f"{what} on {share.source()}")
        with self._guard:
            if key in self._busy:
                raise OperationInFlight(f"{what} on {share.source()} is still running; try again later")
            self._busy.add(key)
            calls = self._long_calls.get(share)
            if calls is None:
                calls = self._long_calls[share] = BoundedCalls(
                    f"share {share.source()} (snapshots)", self._fs_workers, self._snapshot_timeout
                )
        started = threading.Event()

        def run() -> T:
            started.set()
            try:
                return work(deadline)
            finally:
                with self._guard:
                    self._busy.discard(key)

        try:
            return calls.call(f"{what} on {share.source()}", run)
        except SourceFailed as failed:
            assert source is not None, "only work given a source marks what fails there"
            raise self._long_error(source, what, failed.error) from failed.error
        except OSError as err:
            raise self._long_error(share, what, err) from err
        finally:
            if not started.is_set():
                with self._guard:
                    self._busy.discard(key)

    def _long_error(self, share: ShareRef, what: str, err: Exception) -> Exception:
        if isinstance(err, DomainError):
            return err
        if not isinstance(err, OSError):
            return StorageFailed(f"{what} on {share.source()} failed: {err}")
        known = self._share_error(share, self.mount_point(share), what, err)
        return StorageFailed(f"{what} on {share.source()} failed: {err}") if known is None else known

    def _driver_dir(self, root: str, name: str, create: bool) -> ContextManager[int | None]:
        """An fd of ``.nfs-csi/<name>`` (private: 0700 when made here, for the index as for snapshots), reached
        without following links; None when it does not exist and create is False."""
        mode = DRIVER_DIR_MODE if create else None
        return _descend(root, (METADATA_DIR, name), mode, f"of the driver's directory {METADATA_DIR}")

    def _snapshots_dir(self, root: str, create: bool) -> ContextManager[int | None]:
        return self._driver_dir(root, "snapshots", create)

    @contextmanager
    def _volume_dir(self, root: str, subdir: str) -> Iterator[int]:
        with self._parent(root, subdir) as (fd, leaf):
            if fd is None:
                raise StorageFailed(f"{subdir!r} does not exist")
            try:
                volume_fd = os.open(leaf, _OPEN_DIR, dir_fd=fd)
            except OSError as err:
                if err.errno in STALE_ERRNOS:
                    raise
                raise StorageFailed(f"{subdir!r} does not exist or is not a plain directory") from err
        try:
            yield volume_fd
        finally:
            os.close(volume_fd)

    @contextmanager
    def _source_dir(self, root: str, subdir: str) -> Iterator[int]:
        """A source volume's fd; failing to reach it is the source share's failure (SourceFailed)."""
        with ExitStack() as stack:
            with reading_source():
                fd = stack.enter_context(self._volume_dir(root, subdir))
            yield fd

    def pack_snapshot(self, share: ShareRef, subdir: str, snapshot_share: ShareRef, leaf: str, fmt: str) -> int:
        source_root, snapshot_root = self._root(share), self._root(snapshot_share)
        name = archive_name(leaf, fmt)
        temporary = archive_temporary(name)

        def work(deadline: Deadline) -> int:
            with self._source_dir(source_root, subdir) as volume_fd, self._snapshots_dir(
                snapshot_root, create=True
            ) as snapshots_fd:
                assert snapshots_fd is not None
                out_fd = os.open(
                    temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                    dir_fd=snapshots_fd,
                )
                try:
                    with os.fdopen(out_fd, "wb", buffering=1 << 20) as out:
                        pack_tree(source_entries(fd_entries(volume_fd)), out, fmt, deadline)
                        out.flush()
                        os.fsync(out.fileno())
                        size = os.fstat(out.fileno()).st_size
                    os.rename(temporary, name, src_dir_fd=snapshots_fd, dst_dir_fd=snapshots_fd)
                except BaseException:
                    _unlink_quietly(temporary, snapshots_fd)
                    raise
                return size

        return self._on_share_long(
            snapshot_share, ("pack", snapshot_share, leaf), f"packing snapshot {leaf!r}", work, source=share
        )

    def write_snapshot_record(self, share: ShareRef, leaf: str, record: SnapshotRecord) -> None:
        data = record.to_json()

        def work(root: str) -> None:
            with self._snapshots_dir(root, create=True) as fd:
                assert fd is not None
                _write_atomically(fd, record_file(leaf), data)

        self._on_share(share, f"writing the record of snapshot {leaf!r}", work)

    def read_snapshot_record(self, share: ShareRef, leaf: str) -> SnapshotRecord | None:
        def work(root: str) -> bytes | None:
            with self._snapshots_dir(root, create=False) as fd:
                return None if fd is None else _read_small(fd, record_file(leaf), RECORD_LIMIT)

        return snapshot_record(self._on_share(share, f"reading the record of snapshot {leaf!r}", work), leaf)

    def list_snapshot_records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        def work(root: str) -> list[tuple[str, bytes]]:
            found: list[tuple[str, bytes]] = []
            with self._snapshots_dir(root, create=False) as fd:
                if fd is None:
                    return found
                for name in sorted(os.listdir(fd)):
                    leaf = snapshot_record_leaf(name)
                    if leaf is None:
                        continue
                    try:
                        raw = _read_small(fd, name, RECORD_LIMIT)
                    except StorageFailed as err:
                        log.warning("skipping snapshot record %s: %s", name, err)
                        continue
                    if raw is not None:
                        found.append((leaf, raw))
            return found

        return snapshot_records(self._on_share(share, "listing snapshots", work), share)

    def remove_snapshot(self, share: ShareRef, leaf: str) -> None:
        def work(root: str) -> None:
            with self._snapshots_dir(root, create=False) as fd:
                if fd is None:
                    return
                for name in snapshot_files(leaf):
                    _unlink_quietly(name, fd)
                for name in os.listdir(fd):  # temporaries with names of their own: archives, the other adapter's records
                    if is_temporary(leaf, name):
                        _unlink_quietly(name, fd)

        with self._guard:
            if ("pack", share, leaf) in self._busy:
                raise OperationInFlight(f"snapshot {leaf!r} is still being packed; try again later")
        self._on_share(share, f"removing snapshot {leaf!r}", work)

    def restore_snapshot(self, snapshot_share: ShareRef, leaf: str, fmt: str, share: ShareRef, subdir: str) -> None:
        snapshot_root, root = self._root(snapshot_share), self._root(share)

        def open_archive() -> int:
            with reading_source(), self._snapshots_dir(snapshot_root, create=False) as snapshots_fd:
                if snapshots_fd is None:
                    raise StorageFailed(f"the archive of snapshot {leaf!r} is missing")
                return _open_regular(snapshots_fd, archive_name(leaf, fmt))

        def work(deadline: Deadline) -> None:
            with os.fdopen(open_archive(), "rb", buffering=0) as raw, self._volume_dir(root, subdir) as fd:
                unpack_tree(io.BufferedReader(SourceReader(raw), 1 << 20), FdTreeWriter(fd), deadline)

        self._on_share_long(
            share, ("fill", share, subdir), f"restoring snapshot {leaf!r} into {subdir!r}", work, source=snapshot_share
        )

    def copy_volume(self, source_share: ShareRef, source_subdir: str, share: ShareRef, subdir: str) -> None:
        source_root, root = self._root(source_share), self._root(share)

        def work(deadline: Deadline) -> None:
            with self._source_dir(source_root, source_subdir) as source_fd, self._volume_dir(root, subdir) as fd:
                copy_tree(source_entries(fd_entries(source_fd)), FdTreeWriter(fd), deadline)

        self._on_share_long(
            share, ("fill", share, subdir), f"copying {source_subdir!r} into {subdir!r}", work, source=source_share
        )

    def _index(self, root: str, subdir: str) -> None:
        """Make subdir's index entry unless a valid one exists: one exclusive create on the usual path.

        Anything but a regular file in the entry's place (a link, a fifo) is no valid entry, and never one a
        write could go through: it is removed, itself, and the entry made afresh. Refusing instead would fail
        every later write of this volume's record over something planted in the driver's own directory.
        """
        entry = index_entry(subdir)
        data = subdir.encode("utf-8", errors="surrogatepass")
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        for create in (False, True):  # the index directories exist but on a share's first volume
            with self._driver_dir(root, "volumes", create=create) as fd:
                if fd is None:
                    continue
                try:
                    out = os.open(entry, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                except FileExistsError:
                    try:
                        if indexed_subdir(entry, _read_small(fd, entry, ENTRY_LIMIT)) is not None:
                            return  # kept as it is, so the volume keeps its place in listings
                        out = os.open(entry, flags | os.O_TRUNC, dir_fd=fd)  # one a crash left half-written
                    except StorageFailed:
                        _remove_not_a_file(entry, fd)
                        out = os.open(entry, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                with os.fdopen(out, "wb") as handle:
                    handle.write(data)
                return

    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        def scan(root: str) -> list[ListPosition]:
            with self._driver_dir(root, "volumes", create=False) as fd:
                if fd is None:
                    return []
                with os.scandir(fd) as entries:
                    return sorted(
                        ListPosition(entry.stat(follow_symlinks=False).st_mtime_ns, entry.name)
                        for entry in entries
                        if entry.is_file(follow_symlinks=False)
                    )

        def read_entry(entry: str) -> str | None:
            def work(root: str) -> bytes | None:
                with self._driver_dir(root, "volumes", create=False) as fd:
                    return None if fd is None else _read_small(fd, entry, ENTRY_LIMIT)

            return indexed_subdir(entry, self._on_share(share, f"reading index entry {entry}", work))

        positions = self._on_share(share, "listing the volume index", scan)
        return listed_volumes(positions, read_entry, lambda subdir: self.read_record(share, subdir), share, after, limit)

    def available_bytes(self, share: ShareRef) -> int:
        def work(root: str) -> int:
            fd = os.open(root, _OPEN_DIR)
            try:
                info = os.fstatvfs(fd)
            finally:
                os.close(fd)
            return info.f_bavail * info.f_frsize

        return self._on_share(share, "reading free space", work)

    def close(self) -> None:
        with self._guard:
            mounted, self._mounted = dict(self._mounted), {}
            calls, self._calls = dict(self._calls), {}
        for share, path in mounted.items():
            try:
                self._mounter.unmount(path)
                os.rmdir(path)
                log.info("unmounted share %s from %s", share.source(), path)
            except Exception:  # noqa: BLE001 - shutdown goes on for the other shares
                log.exception("could not unmount share %s from %s", share.source(), path)
        with self._guard:
            long_calls, self._long_calls = dict(self._long_calls), {}
        for bounded in [*calls.values(), *long_calls.values()]:
            bounded.close()


# -- helpers of the snapshot methods: every path is one name below a directory fd, opened without following ---------


@contextmanager
def _descend(root: str, names: Sequence[str], mode: int | None, where: str) -> Iterator[int | None]:
    """An fd of root/names..., each opened with O_NOFOLLOW (and made with ``mode`` first, when given); None when one
    is missing. A link or a file on the way is refused, never followed."""
    fd = os.open(root, _OPEN_DIR)
    try:
        for name in names:
            if mode is not None:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(name, _OPEN_DIR, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                fd = -1
                yield None
                return
            except OSError as err:
                if err.errno in STALE_ERRNOS:
                    raise
                raise StorageFailed(f"{name!r} {where} is not a plain directory") from err
            os.close(fd)
            fd = child
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _open_regular(dir_fd: int, name: str) -> int:
    """The one way a file on a share is opened for reading: never through a link, and anything but a regular
    file refused (StorageFailed). O_NONBLOCK: a FIFO planted in the file's place must not block the open."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise StorageFailed(f"{name!r} is a symbolic link, not a regular file") from err
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StorageFailed(f"{name!r} is not a regular file")
    return fd


def _read_small(dir_fd: int, name: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of a small file (a record, an index entry); None when it is missing."""
    try:
        fd = _open_regular(dir_fd, name)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit)


def _remove_not_a_file(name: str, dir_fd: int) -> None:
    """Remove what is no regular file in the driver's own directory (a link goes, never its target); a
    directory there is refused."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError as err:
        raise StorageFailed(f"{name!r} in the driver's directory {METADATA_DIR} is a directory") from err


def _write_atomically(dir_fd: int, name: str, data: bytes) -> None:
    temporary = f"{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _entry(path: str, kind: str, info: os.stat_result, **more: Any) -> Entry:
    return Entry(path, kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, **more)


def fd_entries(top_fd: int) -> Iterator[Entry]:
    """The tree below top_fd, parents first, by directory fds: a link is reported as a link, never followed, and
    an entry swapped for a link while walking is skipped. Devices, fifos and sockets are left out."""
    yield _entry(".", DIRECTORY, os.fstat(top_fd))
    yield from _walk(top_fd, "")


def _walk(dir_fd: int, prefix: str) -> Iterator[Entry]:
    for name in sorted(os.listdir(dir_fd)):
        path = prefix + name
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                child = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue
                raise
            try:
                yield _entry(path, DIRECTORY, info)
                yield from _walk(child, path + "/")
            finally:
                os.close(child)
        elif stat.S_ISLNK(info.st_mode):
            yield _entry(path, SYMLINK, info, target=os.readlink(name, dir_fd=dir_fd))
        elif stat.S_ISREG(info.st_mode):
            yield _entry(path, FILE, info, size=info.st_size, open=_opener(dir_fd, name))
        else:
            log.info("not archiving %s: a device, fifo or socket", path)


def _opener(dir_fd: int, name: str) -> Callable[[], Any]:
    @contextmanager
    def opened() -> Iterator[Any]:
        with os.fdopen(_open_regular(dir_fd, name), "rb", buffering=1 << 20) as handle:
            yield handle

    return opened


class FdTreeWriter:
    """Builds a tree below an open directory fd; each path is walked name by name with O_NOFOLLOW.

    Owners are set only where this process may (root); modes and times always.
    """

    def __init__(self, top_fd: int) -> None:
        self._top = top_fd
        self._may_chown = os.geteuid() == 0

    @contextmanager
    def _parent(self, path: str) -> Iterator[tuple[int, str]]:
        *parents, leaf = path.split("/")
        fd = os.dup(self._top)
        try:
            for name in parents:
                child = os.open(name, _OPEN_DIR, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd, leaf
        finally:
            os.close(fd)

    def directory(self, path: str) -> None:
        with self._parent(path) as (fd, leaf):
            try:
                os.mkdir(leaf, 0o700, dir_fd=fd)
            except FileExistsError:
                os.close(os.open(leaf, _OPEN_DIR, dir_fd=fd))  # a directory already, not a link or a file

    def file(self, path: str, data: Any) -> None:
        with self._parent(path) as (fd, leaf):
            out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
            with os.fdopen(out, "wb", buffering=1 << 20) as handle:
                shutil.copyfileobj(data, handle, 1 << 20)

    def symlink(self, path: str, target: str) -> None:
        with self._parent(path) as (fd, leaf):
            os.symlink(target, leaf, dir_fd=fd)

    def finish(self, path: str, entry: Entry) -> None:
        times = (entry.mtime_ns, entry.mtime_ns)
        if entry.kind == SYMLINK:
            with self._parent(path) as (fd, leaf):
                if self._may_chown:
                    os.chown(leaf, entry.uid, entry.gid, dir_fd=fd, follow_symlinks=False)
                os.utime(leaf, ns=times, dir_fd=fd, follow_symlinks=False)
            return
        if path == ".":
            target = os.dup(self._top)
        else:
            flags = _OPEN_DIR if entry.kind == DIRECTORY else os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            with self._parent(path) as (fd, leaf):
                target = os.open(leaf, flags, dir_fd=fd)
        try:
            if self._may_chown:
                os.fchown(target, entry.uid, entry.gid)  # before the mode: a chown clears set-id bits
            os.fchmod(target, entry.mode)
            os.utime(target, ns=times)
        finally:
            os.close(target)
