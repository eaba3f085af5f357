"""MountedShareStorage: mount each share once under a working directory, then work with directories there."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from adapters.mount.bounded import BoundedCalls
from adapters.mount.subprocess_mounter import STALE_ERRNOS
from domain.errors import DomainError, FailedPrecondition, InvalidArgument, MountFailed, ResourceExhausted, Unavailable
from domain.model import METADATA_DIR, ListedVolume, ListPosition, ShareRef, VolumeRecord
from domain.paths import join_inside, relative_subpath
from ports.mounter import Mounter
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RECORD_LOCKS = 64


def record_name(leaf: str) -> str:
    """The record of volume directory ``leaf`` lives beside it under this name."""
    return f".{leaf}.nfs-csi.json"


INDEX_DIR = f"{METADATA_DIR}/volumes"
"""Where each volume has an index entry, so listing never walks the share: records sit at any depth."""
_ENTRY_LIMIT = 4096


def index_entry(subdir: str) -> str:
    """The name of subdir's index entry: a fixed-length hash, since a subdir may take 1024 bytes and a name 255."""
    return hashlib.sha256(subdir.encode("utf-8", errors="surrogatepass")).hexdigest()


def indexed_subdir(entry: str, raw: bytes | None) -> str | None:
    """The subdir an index entry holds, or None unless it is a valid one that hashes to the entry's own name."""
    if raw is None:
        return None
    try:
        subdir = relative_subpath(raw.decode("utf-8"), "indexed subdir", new=False)
    except (UnicodeDecodeError, InvalidArgument):
        return None
    return subdir if index_entry(subdir) == entry else None


def _read_regular(fd: int, name: str, limit: int) -> bytes | None:
    """The first bytes of a regular file in directory fd, never through a link; None when missing."""
    try:
        # O_NONBLOCK: a FIFO planted in the file's place must not block the open.
        raw_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return None
    with os.fdopen(raw_fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(raw_fd).st_mode):
            raise MountFailed(f"{name!r} is not a regular file")
        return handle.read(limit)


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
        # One writer of a record at a time in this process: the temporary file has a fixed name, so a retry after
        # a crash overwrites what the crash left instead of leaving another file behind.
        self._record_locks = [threading.Lock() for _ in range(_RECORD_LOCKS)]

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
        fd = os.open(root, _OPEN_DIR)
        try:
            for name in parents:
                if create:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _OPEN_DIR, dir_fd=fd)
                except FileNotFoundError:
                    os.close(fd)
                    fd = -1
                    yield None, leaf
                    return
                except OSError as err:
                    if err.errno in STALE_ERRNOS:
                        raise
                    raise MountFailed(f"{name!r} on the way to {subdir!r} is not a plain directory") from err
                os.close(fd)
                fd = child
            yield fd, leaf
        finally:
            if fd >= 0:
                os.close(fd)

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
                    raise MountFailed(f"{subdir!r} exists and is not a plain directory") from err
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
                    raise MountFailed(f"{subdir!r} is not a directory; refusing to remove it") from err

        self._on_share(share, f"removing {subdir!r}", work)

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        if os.path.dirname(subdir) != os.path.dirname(new_subdir):
            raise MountFailed("a volume directory is only renamed within its parent")

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
                if fd is None:
                    return None
                try:
                    # O_NONBLOCK: a FIFO planted in the record's place must not block the open.
                    raw_fd = os.open(
                        record_name(leaf), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
                    )
                except FileNotFoundError:
                    return None
                with os.fdopen(raw_fd, "rb") as handle:
                    if not stat.S_ISREG(os.fstat(raw_fd).st_mode):
                        raise MountFailed(f"the record of {subdir!r} is unreadable: not a regular file")
                    return handle.read(1 << 16)

        raw = self._on_share(share, f"reading the record of {subdir!r}", work)
        if raw is None:
            return None
        try:
            return VolumeRecord.from_json(raw)
        except (ValueError, KeyError, TypeError) as err:
            raise MountFailed(f"the record of {subdir!r} is unreadable") from err

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

        with self._record_locks[hash((share, subdir)) % _RECORD_LOCKS]:
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
            with self._parent(root, f"{INDEX_DIR}/{index_entry(subdir)}") as (fd, leaf):
                if fd is not None:
                    try:
                        os.unlink(leaf, dir_fd=fd)
                    except FileNotFoundError:
                        pass

        self._on_share(share, f"removing the record of {subdir!r}", work)

    def _index(self, root: str, subdir: str) -> None:
        """Make subdir's index entry unless a valid one exists: one exclusive create on the usual path."""
        entry = index_entry(subdir)
        data = subdir.encode("utf-8", errors="surrogatepass")
        for create in (False, True):  # the index directories exist but on a share's first volume
            with self._parent(root, f"{INDEX_DIR}/{entry}", create=create) as (fd, leaf):
                if fd is None:
                    continue
                flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    out = os.open(leaf, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
                except FileExistsError:
                    if indexed_subdir(entry, _read_regular(fd, leaf, _ENTRY_LIMIT)) is not None:
                        return  # kept as it is, so the volume keeps its place in listings
                    out = os.open(leaf, flags | os.O_TRUNC, dir_fd=fd)  # one a crash left half-written
                with os.fdopen(out, "wb") as handle:
                    handle.write(data)
                return

    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        def scan(root: str) -> list[ListPosition]:
            with self._parent(root, f"{INDEX_DIR}/-") as (fd, _):  # the fd of the index directory itself
                if fd is None:
                    return []
                with os.scandir(fd) as entries:
                    return sorted(
                        ListPosition(entry.stat(follow_symlinks=False).st_mtime_ns, entry.name)
                        for entry in entries
                        if entry.is_file(follow_symlinks=False)
                    )

        def read_entry(entry: str) -> Callable[[str], str | None]:
            def work(root: str) -> str | None:
                with self._parent(root, f"{INDEX_DIR}/{entry}") as (fd, leaf):
                    return indexed_subdir(entry, _read_regular(fd, leaf, _ENTRY_LIMIT) if fd is not None else None)

            return work

        listed: list[ListedVolume] = []
        for position in self._on_share(share, "listing the volume index", scan):
            if after is not None and position <= after:
                continue
            subdir = self._on_share(share, f"reading index entry {position.entry}", read_entry(position.entry))
            record = self._listed_record(share, subdir) if subdir is not None else None
            if subdir is None or record is None:
                continue  # not a valid entry, or a crash came between it and its record
            listed.append(ListedVolume(position, subdir, record))
            if len(listed) == limit:
                break
        return listed

    def _listed_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        try:
            return self.read_record(share, subdir)
        except MountFailed as err:
            log.warning("volume %s on %s is left out of the listing: %s", subdir, share.source(), err)
            return None

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
        for bounded in calls.values():
            bounded.close()
