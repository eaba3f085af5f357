"""MountedFileSystem: mount each share once under a working directory, and reach its files by descriptors there."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import stat
import threading
from contextlib import closing, contextmanager, suppress
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence, TypeVar

from adapters.clock import SystemClock
from adapters.mount.bounded import BoundedCalls
from adapters.mount.subprocess_mounter import STALE_ERRNOS
from adapters.storage.archive import CHUNK, DIRECTORY, FILE, SYMLINK, Deadline, Entry, SourceFailed
from adapters.storage.files import OTHER, ShareFiles, ShareFileSystem
from adapters.storage.held import HeldShares
from domain.errors import DomainError, FailedPrecondition, Obstructed, ResourceExhausted, StorageFailed, Unavailable
from domain.model import ShareRef
from domain.paths import join_inside
from ports.clock import Clock
from ports.mounter import Mounter

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # O_DIRECTORY: a FIFO fails, never opened
_NOT_A_DIRECTORY = (errno.ENOTDIR, errno.ELOOP)  # opening a file, a FIFO or (O_NOFOLLOW) a link as a directory
# ... and what opening one as a regular file gives: a link (O_NOFOLLOW), a directory, a FIFO without a reader or a
# socket (O_NONBLOCK | O_WRONLY), a device without its driver.
_NOT_A_FILE = (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV)
_KINDS = {stat.S_IFDIR: DIRECTORY, stat.S_IFREG: FILE, stat.S_IFLNK: SYMLINK}


class MountedFileSystem(ShareFileSystem):
    """Every filesystem call on a share runs on that share's few bounded threads (a hung server costs no more):
    quick calls within --fs-timeout, long work on threads of its own within --snapshot-timeout. Each share is
    mounted with the options configured for it (--share-mount-options), none otherwise. A share no call has used
    for ``share_idle_timeout`` is unmounted and its threads end (see HeldShares), and at most ``max_shares_held``
    idle ones stay mounted."""

    def __init__(
        self,
        mounter: Mounter,
        working_dir: str,
        share_options: Iterable[tuple[ShareRef, tuple[str, ...]]] = (),
        fs_timeout: float = 30.0,
        fs_workers: int = 4,
        snapshot_timeout: float = 600.0,
        clock: Clock = SystemClock(),
        share_idle_timeout: float = 300.0,
        max_shares_held: int = 32,
    ) -> None:
        self._mounter = mounter
        self._working_dir = os.path.abspath(working_dir)
        self._share_options = dict(share_options)
        self._fs_timeout = fs_timeout
        self._fs_workers = fs_workers
        self._snapshot_timeout = snapshot_timeout
        self._guard = threading.Lock()
        self._held: HeldShares[str] = HeldShares(clock, self._unmount, share_idle_timeout, max_shares_held, "share mount")
        self._calls: dict[tuple[ShareRef, bool], BoundedCalls] = {}  # (share, long work?) -> its threads

    def reach(self, share: ShareRef) -> None:
        with self._held.using(share):
            self._root(share)

    def held(self) -> int:
        return self._held.held()

    def release_idle(self) -> int:
        """Unmount the shares idle for too long, or beyond the most held (the background thread does it too)."""
        return self._held.release_idle()

    def mount_point(self, share: ShareRef) -> str:
        digest = hashlib.sha256(share.source().encode()).hexdigest()[:20]
        return os.path.join(self._working_dir, digest)

    def _root(self, share: ShareRef) -> str:
        """The local path of the share, mounted on first use, by a call using it; the mount table, not memory, says
        whether it still is (a restarted driver finds its share mounts there)."""
        path = self.mount_point(share)
        if self._held.handle(share) == path and self._mounter.is_mount_point(path):
            return path
        lock = self._held.lock(share)
        if not lock.acquire(timeout=self._fs_timeout):
            raise Unavailable(f"share {share.source()} is being mounted or unmounted by another call; try again")
        try:
            if not self._mounter.is_mount_point(path):
                if self._held.handle(share) is not None:
                    log.warning("share %s is no longer mounted at %s; mounting it again", share.source(), path)
                os.makedirs(path, mode=0o700, exist_ok=True)
                options = self._share_options.get(share, ())
                try:
                    self._mounter.mount(share.source(), path, options)
                except DomainError as err:
                    raise _with_hint(err, share, options) from err
                log.info("mounted share %s at %s with options %s", share.source(), path, ",".join(options) or "none")
            self._held.hold(share, path)
            return path
        finally:
            lock.release()

    def _unmount(self, share: ShareRef, path: str) -> None:
        """Let go of a share no call uses: its threads end, and it is unmounted."""
        with self._guard:
            pools = [self._calls.pop((share, long), None) for long in (False, True)]
        for pool in pools:
            if pool is not None:
                pool.close()
        self._mounter.unmount(path)
        with suppress(OSError):
            os.rmdir(path)

    def _bounded(self, share: ShareRef, long: bool = False) -> BoundedCalls:
        with self._guard:
            calls = self._calls.get((share, long))
            if calls is None:
                name = f"share {share.source()}" + (" (snapshots)" if long else "")
                timeout = self._snapshot_timeout if long else self._fs_timeout
                calls = self._calls[(share, long)] = BoundedCalls(name, self._fs_workers, timeout)
            return calls

    def _reached(self, shares: tuple[ShareRef, ...]) -> list[str]:
        """Each share's root, mounted if need be, now used by this call (so never released under it): the caller
        hands that use to ``_call``, or it is given back here if a share cannot be reached."""
        for share in shares:
            self._held.acquire(share)
        try:
            return [self._root(share) for share in shares]
        except BaseException:
            for share in shares:
                self._held.release(share)
            raise

    def _call(self, pool: BoundedCalls, what: str, shares: tuple[ShareRef, ...], work: Callable[[], T]) -> T:
        """work on the pool, using the shares until it ends: once queued it may outlive this call (stuck in the
        kernel, or long work its caller stopped waiting for), so the job gives the use back; if it never ran, this
        call does."""
        handed = False

        def queued() -> None:
            nonlocal handed
            handed = True

        def job() -> T:
            try:
                return work()
            finally:
                for share in shares:
                    self._held.release(share)

        try:
            return pool.call(what, job, queued)
        finally:
            if not handed:
                for share in shares:
                    self._held.release(share)

    def run(self, share: ShareRef, what: str, work: Callable[[ShareFiles], T]) -> T:
        (root,) = self._reached((share,))

        def job() -> T:
            with closing(FdShareFiles(root)) as files:
                return work(files)

        try:
            return self._call(self._bounded(share), f"{what} on {share.source()}", (share,), job)
        except OSError as err:
            known = self._share_error(share, root, what, err)
            if known is None:
                raise
            raise known from err

    def run_long(
        self, share: ShareRef, what: str, work: Callable[[ShareFiles, ShareFiles, Deadline], T], source: ShareRef
    ) -> T:
        root, source_root = self._reached((share, source))  # mounted (or refused) before the work is queued
        deadline = Deadline(self._snapshot_timeout, f"{what} on {share.source()}")

        def job() -> T:
            with closing(FdShareFiles(root)) as files, closing(FdShareFiles(source_root)) as source_files:
                return work(files, source_files, deadline)

        try:
            return self._call(self._bounded(share, long=True), f"{what} on {share.source()}", (share, source), job)
        except SourceFailed as failed:
            raise self._long_error(source, what, failed.error) from failed.error
        except OSError as err:
            raise self._long_error(share, what, err) from err

    def _long_error(self, share: ShareRef, what: str, err: Exception) -> Exception:
        if isinstance(err, DomainError):
            return err
        known = self._share_error(share, self.mount_point(share), what, err) if isinstance(err, OSError) else None
        return StorageFailed(f"{what} on {share.source()} failed: {err}") if known is None else known

    def _share_error(self, share: ShareRef, root: str, what: str, err: OSError) -> DomainError | None:
        reason = f"{what} on {share.source()}: {err.strerror or err}"
        if err.errno in STALE_ERRNOS:
            log.warning("share %s at %s answers %r: unmounting it", share.source(), root, err.strerror)
            self._held.forget(share, root)
            try:
                self._mounter.unmount(root)
            except DomainError as unmount_error:
                log.warning("could not unmount stale share %s: %s", share.source(), unmount_error)
            return Unavailable(f"{reason}; the share was unmounted and is mounted again on the next call")
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return ResourceExhausted(reason)
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return FailedPrecondition(reason)
        return None

    def close(self) -> None:
        mounted = self._held.close()
        with self._guard:
            calls, self._calls = list(self._calls.values()), {}
        for share, path in mounted:
            try:
                self._mounter.unmount(path)
                os.rmdir(path)
                log.info("unmounted share %s from %s", share.source(), path)
            except Exception:  # noqa: BLE001 - shutdown goes on for the other shares
                log.exception("could not unmount share %s from %s", share.source(), path)
        for bounded in calls:
            bounded.close()


def _with_hint(err: DomainError, share: ShareRef, options: tuple[str, ...]) -> DomainError:
    """The mount's own failure (mount.nfs's message), and what the controller mounted the share with, and where
    to change it: a server that needs options (vers=, port=, sec=, xprtsec=) works on nodes, which have the
    StorageClass's mountOptions, and fails here without them."""
    used = f"with options {','.join(options)}" if options else "with no options"
    hint = (
        f"the controller mounts {share.source()} {used}; if the server needs some (vers=, port=, sec=, xprtsec=, "
        f"...), give them with --share-mount-options '{share.source()}=option,option'"
    )
    return type(err)(f"{err}; {hint}")


class FdShareFiles(ShareFiles):
    """A mounted share's files, every path walked from its root one name at a time with O_NOFOLLOW descriptors; the
    directory reached last stays open (trees are walked and built a directory at a time) until ``close``."""

    def __init__(self, root: str) -> None:
        self._root = root
        self._held: tuple[str, int] | None = None

    def close(self) -> None:
        if self._held is not None:
            os.close(self._held[1])
            self._held = None

    def _directory(self, path: str) -> int:
        """An fd of the directory at path ("": the share's root), held until another one is asked for."""
        if self._held is None or self._held[0] != path:
            fd = _descend(self._root, path.split("/") if path else [], path)
            self.close()
            self._held = (path, fd)
        return self._held[1]

    def _parent(self, path: str) -> tuple[int, str]:
        """An fd of path's directory, and path's last name."""
        join_inside(self._root, path)  # lexical containment, again, at the edge
        parent, leaf = posixpath.split(path)
        return self._directory(parent), leaf

    def _forget(self, path: str) -> None:
        """A directory at or below path goes away, or elsewhere: let go of it."""
        if self._held is not None and (self._held[0] + "/").startswith(path + "/"):
            self.close()

    def make_dir(self, path: str, mode: int | None = None) -> None:
        fd, leaf = self._parent(path)
        os.mkdir(leaf, 0o777 if mode is None else mode, dir_fd=fd)

    def stat(self, path: str) -> Entry:
        fd, leaf = self._parent(path)
        return _entry(fd, leaf, os.stat(leaf, dir_fd=fd, follow_symlinks=False))

    def list(self, path: str) -> list[Entry]:
        join_inside(self._root, path)
        try:
            fd = self._directory(path)
        except FileNotFoundError:
            return []
        listed = []
        with os.scandir(fd) as found:
            for item in found:
                try:
                    listed.append(_entry(fd, item.name, item.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # gone since it was listed
        return listed

    def chmod(self, path: str, mode: int) -> None:
        fd, leaf = self._parent(path)
        with _refused(path, _NOT_A_FILE, "a symbolic link, never followed"):
            opened = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.fchmod(opened, mode)
        finally:
            os.close(opened)

    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        fd, leaf = self._parent(path)
        opened = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        try:
            os.fchown(opened, -1 if uid is None else uid, -1 if gid is None else gid)
        finally:
            os.close(opened)

    def set_attributes(self, path: str, entry: Entry) -> None:
        times, may_chown = (entry.mtime_ns, entry.mtime_ns), os.geteuid() == 0  # owners only where root
        fd, leaf = self._parent(path)
        if entry.kind == SYMLINK:
            if may_chown:
                os.chown(leaf, entry.uid, entry.gid, dir_fd=fd, follow_symlinks=False)
            os.utime(leaf, ns=times, dir_fd=fd, follow_symlinks=False)
            return
        flags = _OPEN_DIR if entry.kind == DIRECTORY else os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with _refused(path, (*_NOT_A_DIRECTORY, *_NOT_A_FILE), f"no {entry.kind}"):
            target = os.open(leaf, flags, dir_fd=fd)
        try:
            if may_chown:
                os.fchown(target, entry.uid, entry.gid)  # before the mode: a chown clears set-id bits
            os.fchmod(target, entry.mode)
            os.utime(target, ns=times)
        finally:
            os.close(target)

    def rename(self, path: str, name: str) -> None:
        fd, leaf = self._parent(path)
        self._forget(path)
        with _refused(path, (errno.ENOTDIR, errno.EISDIR), f"not to be renamed over {name!r}, which is another kind"):
            os.rename(leaf, name, src_dir_fd=fd, dst_dir_fd=fd)

    def move(self, path: str, new_path: str) -> None:
        join_inside(self._root, new_path)
        parent, leaf = posixpath.split(new_path)
        into = _descend(self._root, parent.split("/") if parent else [], parent)  # apart from the one held
        try:
            fd, source = self._parent(path)
            self._forget(path)
            os.rename(source, leaf, src_dir_fd=fd, dst_dir_fd=into)
        finally:
            os.close(into)

    def read(self, path: str, limit: int) -> bytes | None:
        opened = self.open(path)
        if opened is None:
            return None
        with opened:
            return opened.read(limit)

    def open(self, path: str) -> BinaryIO | None:
        try:
            fd, leaf = self._parent(path)
            return os.fdopen(_open_regular(fd, leaf), "rb", buffering=CHUNK)
        except FileNotFoundError:
            return None

    def write(
        self, path: str, fill: Callable[[BinaryIO], object], mode: int, exclusive: bool = False, durable: bool = True
    ) -> int:
        fd, leaf = self._parent(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        flags |= os.O_EXCL if exclusive else os.O_TRUNC
        with _refused(path, _NOT_A_FILE, "not a regular file"):
            opened = os.open(leaf, flags, mode, dir_fd=fd)
        if not stat.S_ISREG(os.fstat(opened).st_mode):  # a device, or a FIFO with a reader, opens: never written to
            os.close(opened)
            raise Obstructed(f"{path!r} is not a regular file; refusing to write to it")
        with os.fdopen(opened, "wb", buffering=CHUNK) as handle:
            fill(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            return handle.tell()

    def write_atomically(self, path: str, data: bytes, mode: int) -> None:
        # A fixed name: a retry overwrites what a crash left, and removing the record takes it along.
        self.write(f"{path}.tmp", lambda out: out.write(data), mode)
        self.rename(f"{path}.tmp", posixpath.basename(path))

    def symlink(self, path: str, target: str) -> None:
        fd, leaf = self._parent(path)
        os.symlink(target, leaf, dir_fd=fd)

    def remove(self, path: str) -> None:
        try:
            fd, leaf = self._parent(path)
            with _refused(path, (errno.EISDIR,), "a directory; refusing to remove it"):
                os.unlink(leaf, dir_fd=fd)
        except FileNotFoundError:
            pass

    def remove_tree(self, path: str) -> None:
        try:
            fd, leaf = self._parent(path)
            self._forget(path)
            with _refused(path, _NOT_A_DIRECTORY, "not a directory (a file, a link or a FIFO); refusing to remove it"):
                top = os.open(leaf, _OPEN_DIR, dir_fd=fd)
            try:
                _empty(top)
            finally:
                os.close(top)
            os.rmdir(leaf, dir_fd=fd)
        except FileNotFoundError:
            pass  # missing, or gone meanwhile (a retry racing an earlier, timed-out removal)

    def free_bytes(self) -> int:
        info = os.fstatvfs(self._directory(""))
        return info.f_bavail * info.f_frsize


def _entry(dir_fd: int, name: str, info: os.stat_result) -> Entry:
    kind = _KINDS.get(stat.S_IFMT(info.st_mode), OTHER)
    size, target = info.st_size if kind == FILE else 0, os.readlink(name, dir_fd=dir_fd) if kind == SYMLINK else ""
    return Entry(name, kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, size, target)


@contextmanager
def _refused(path: str, errnos: Sequence[int], what: str) -> Iterator[None]:
    """An OSError with one of errnos, raised as Obstructed: path is what its name says, not what the call needs."""
    try:
        yield
    except OSError as err:
        if err.errno in errnos:
            raise Obstructed(f"{path!r} is {what}") from err
        raise


def _descend(root: str, names: Sequence[str], path: str) -> int:
    """An fd of root/names..., each opened with O_NOFOLLOW; FileNotFoundError when one is missing. Anything but a
    directory on the way (a file, a link, a FIFO) is Obstructed, never followed or opened."""
    fd = os.open(root, _OPEN_DIR)
    try:
        for name in names:
            try:
                child = os.open(name, _OPEN_DIR, dir_fd=fd)
            except OSError as err:
                if err.errno in _NOT_A_DIRECTORY:
                    raise Obstructed(f"{name!r} on the way to {path!r} is not a plain directory") from err
                if err.errno in (errno.ENOENT, errno.EACCES, errno.EPERM) or err.errno in STALE_ERRNOS:
                    raise
                raise StorageFailed(f"{name!r} on the way to {path!r} cannot be opened: {err.strerror}") from err
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _empty(top: int) -> None:
    """Remove everything below the directory open at top, links as links. Nothing but a directory is ever opened
    (O_DIRECTORY | O_NOFOLLOW: a FIFO, a device or a link in a directory's place fails before it is opened), and
    the walk keeps its own stack, so a tree of any depth is removed. What is already gone is fine; what changed
    kind since it was listed is removed as what it is now."""
    stack: list[tuple[int, str, list[str]]] = [(top, "", _names(top))]  # (fd, its name in its parent, names to do)
    try:
        while stack:
            fd, emptied, pending = stack[-1]
            if not pending:
                stack.pop()
                if stack:  # a directory emptied: close it, then remove it from its parent
                    os.close(fd)
                    with suppress(FileNotFoundError):
                        os.rmdir(emptied, dir_fd=stack[-1][0])
                continue
            name = pending.pop()
            try:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)  # a file, a link, a FIFO, a device: removed without being opened
                continue
            except IsADirectoryError:
                pass
            try:
                child = os.open(name, _OPEN_DIR, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as err:
                if err.errno not in _NOT_A_DIRECTORY:
                    raise
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)  # swapped for a non-directory since: removed as one
                continue
            stack.append((child, name, _names(child)))
    finally:
        for fd, _, _ in stack[1:]:
            os.close(fd)


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as found:
        return [entry.name for entry in found]


def _open_regular(dir_fd: int, name: str) -> int:
    """The one way a file on a share is opened for reading: never through a link, and anything but a regular
    file refused (Obstructed). O_NONBLOCK: a FIFO planted in the file's place must not block the open."""
    with _refused(name, _NOT_A_FILE, "not a regular file (a link, a directory or a device)"):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Obstructed(f"{name!r} is not a regular file")
    return fd
