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
from domain.errors import DomainError, FailedPrecondition, MountFailed, ResourceExhausted, Unavailable
from domain.model import ShareRef, VolumeRecord
from domain.paths import join_inside
from ports.mounter import Mounter
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RECORD_LOCKS = 64


def record_name(leaf: str) -> str:
    """The record of volume directory ``leaf`` lives beside it under this name."""
    return f".{leaf}.nfs-csi.json"


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
                if fd is None:
                    return
                for name in (record_name(leaf), f"{record_name(leaf)}.tmp"):
                    try:
                        os.unlink(name, dir_fd=fd)
                    except FileNotFoundError:
                        pass

        self._on_share(share, f"removing the record of {subdir!r}", work)

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
