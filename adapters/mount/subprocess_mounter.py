"""SubprocessMounter: mount.nfs and umount as argument lists, bounded in time, retried when transient."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import tenacity

from adapters.mount.bounded import BoundedCalls
from adapters.mount.mountinfo import MountTable, TableChanges
from adapters.mount.mountpoint import MountPoints
from adapters.mount.observer import MountObserver
from adapters.mount.process import CommandTimedOut, Completed, run_command
from domain.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    MountFailed,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from domain.model import FilesystemUsage
from ports.mounter import Mounter

log = logging.getLogger(__name__)

# mount.nfs messages that say the server may answer on a later try.
_TRANSIENT = (
    "connection timed out",
    "connection refused",
    "no route to host",
    "network is unreachable",
    "resource temporarily unavailable",
    "server is down",
    "timed out",
)
_MISSING = ("no such file or directory", "does not exist")

# What a stat of a mount whose server restarted or went away answers (the kernel's "corrupted mount" errors).
STALE_ERRNOS = frozenset({errno.ESTALE, errno.ENOTCONN, errno.EIO, errno.EHOSTDOWN})

# Escalation: a plain unmount, then forced (aborts calls to a dead server), then lazy (detaches at once).
UNMOUNT_STEPS: tuple[tuple[str, ...], ...] = ((), ("-f",), ("-l",))
MAX_STACKED_MOUNTS = 8
REMEMBERED_SERVERS = 16384  # the server of each mount made here: more than any node's mounts, bounded all the same


class TransientMountError(Unavailable):
    """A failure worth retrying: the server may answer on a later attempt."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0

    def retrying(self, on_retry: Callable[[], None] = lambda: None) -> tenacity.Retrying:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            on_retry()
            _log_before_sleep(state)

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.attempts)),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_wait, max=self.max_wait),
            retry=tenacity.retry_if_exception_type(TransientMountError),
            before_sleep=before_sleep,
            reraise=True,
        )


_log_before_sleep = tenacity.before_sleep_log(log, logging.WARNING)

Runner = Callable[[Sequence[str], float], Completed]


def resolve_binary(name_or_path: str) -> str | None:
    if os.sep in name_or_path:
        return name_or_path if os.access(name_or_path, os.X_OK) else None
    return shutil.which(name_or_path) or shutil.which(name_or_path, path="/usr/sbin:/sbin:/usr/bin:/bin")


class SubprocessMounter(Mounter):
    def __init__(
        self,
        mount_command: str = "mount.nfs",
        umount_command: str = "umount",
        timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        runner: Runner = run_command,
        mountinfo_path: str = "/proc/self/mountinfo",
        observer: MountObserver = MountObserver(),
        max_concurrent_mounts: int = 8,
        fs_timeout: float = 30.0,
        fs_workers: int = 4,
        bind_command: str = "mount",
        stat_workers: int = 4,
    ) -> None:
        self._observer = observer
        self._mount_command = mount_command
        self._umount_command = umount_command
        self._timeout = timeout
        self._retry = retry
        self._runner = runner
        self._table = MountTable(mountinfo_path)
        self._points = MountPoints(
            self._table, TableChanges(mountinfo_path), kernel=mountinfo_path == "/proc/self/mountinfo"
        )
        # Mount-point lookups walk only the paths' parents (kubelet's own directories), but a hostile path inside
        # a mount of a dead server would block that walk too: threads of their own, bounded like every stat.
        self._lookups = BoundedCalls("mount-point lookups", fs_workers, fs_timeout)
        self._max_mounts = max(1, max_concurrent_mounts)
        self._mount_slots = threading.BoundedSemaphore(self._max_mounts)
        # Stats and mkdirs of publish targets: a target may be a mount of a hung server.
        self._fs = BoundedCalls("the publish targets' filesystem", fs_workers, fs_timeout)
        # NodeGetVolumeStats: threads of their own, so kubelet's polls of hung volumes never hold up a publish;
        # a few per NFS server, so volumes of a hung server never crowd out the stats of the others; and at most
        # one call per path in flight, so a hung mount holds one thread however often it is polled.
        self._stat_workers = stat_workers
        self._fs_timeout = fs_timeout
        self._stats: dict[str, BoundedCalls] = {}
        self._statting: set[str] = set()
        self._statting_guard = threading.Lock()
        # The NFS server of each mount made here, so that a stat is given its server's threads without reading
        # the mount table; after a restart, the table tells it once per path.
        self._servers: OrderedDict[str, str] = OrderedDict()
        self._bind_command = bind_command
        self._resolved_binaries: dict[str, str] = {}  # three commands at most: mount.nfs, umount, mount

    def _binary(self, command: str) -> str:
        """command's executable; a search of PATH (300 us here) only when the last one found is gone."""
        path = self._resolved_binaries.get(command)
        if path is None or not os.access(path, os.X_OK):
            path = resolve_binary(command)
            if path is None:
                raise FailedPrecondition(f"{command} is not installed or not executable")
            self._resolved_binaries[command] = path
        return path

    def check_ready(self) -> None:
        self._binary(self._mount_command)
        self._binary(self._umount_command)

    def mount(self, source: str, target: str, options: Sequence[str]) -> None:
        argv = [self._binary(self._mount_command), source, target]
        if options:
            argv += ["-o", ",".join(options)]
        for attempt in self._retry.retrying(lambda: self._observer.retry("mount")):
            with attempt:
                result = self._run_mount(argv)
                if result.returncode != 0:
                    raise self._classify(f"mount {source} at {target}", result)
        self._remember_server(target, _server(source))

    def _run_mount(self, argv: Sequence[str]) -> Completed:
        """Each mount.nfs costs memory: at most max_concurrent_mounts run at once; a wait for a slot is bounded."""
        if not self._mount_slots.acquire(timeout=self._timeout):
            raise ResourceExhausted(
                f"{self._max_mounts} mount.nfs processes are running (--max-concurrent-mounts) and none finished "
                f"within {self._timeout:g} s; try again later"
            )
        try:
            return self._run("mount", argv)
        finally:
            self._mount_slots.release()

    def bind_mount(self, source: str, target: str, readonly: bool) -> None:
        """mount --bind, then a read-only remount (a bind takes no ro at creation); a failed remount is undone."""
        binary = self._binary(self._bind_command)
        result = self._run("mount", [binary, "--bind", source, target])
        if result.returncode != 0:
            raise self._classify(f"bind {source} at {target}", result)
        self._remember_server(target, self._server_of(source))
        if not readonly:
            return
        try:
            result = self._run("mount", [binary, "-o", "remount,bind,ro", target])
        except DeadlineExceeded:
            self.unmount(target)
            raise
        if result.returncode != 0:
            self.unmount(target)
            raise MountFailed(f"cannot make the bind of {source} at {target} read-only (exit {result.returncode}): "
                              f"{result.output}; unmounted it")

    def unmount(self, target: str) -> None:
        # Callers ask is_mount_point first: the first umount comes without asking again. On a path where nothing
        # is mounted it fails at once, and the lookup after it says there is nothing to do.
        binary = self._binary(self._umount_command)
        for _ in range(MAX_STACKED_MOUNTS):
            self._unmount_one(binary, target)
            if not self.is_mount_point(target):
                self._forget_server(target)
                return
        raise MountFailed(f"{target} is still a mount point after {MAX_STACKED_MOUNTS} unmounts")

    def _unmount_one(self, binary: str, target: str) -> None:
        """umount, then umount -f, then umount -l, each bounded; done as soon as one mount is gone.

        umount exits 0 only when the kernel took the topmost mount away. A step that failed or hung may have
        taken it all the same: the target is no mount point any more, or (mounts stacked there) the table
        shows one fewer than after the step before. Only this rare path reads the table.
        """
        failures: list[str] = []
        timeouts = 0
        stacked: int | None = None
        for step, flags in enumerate(UNMOUNT_STEPS):
            if step:
                self._observer.retry("umount")
                log.warning("unmount of %s failed (%s); escalating to umount %s", target, failures[-1], flags[0])
            try:
                result = self._run("umount", [binary, *flags, target])
            except DeadlineExceeded as err:
                timeouts += 1
                failures.append(str(err))
            else:
                if result.returncode == 0:
                    return
                failures.append(" ".join(["umount", *flags, f"exited {result.returncode}: {result.output}"]))
            if not self.is_mount_point(target):
                return
            now = self._table.count(self._resolved(target))
            if stacked is not None and now < stacked:
                return
            stacked = now
        message = f"cannot unmount {target}: " + "; ".join(failures)
        if timeouts == len(UNMOUNT_STEPS):
            raise DeadlineExceeded(message)
        raise MountFailed(message)

    def is_mount_point(self, path: str) -> bool:
        # In the caller's thread and without I/O when the kernel's caches tell (nothing there, or a mount point
        # remembered with no mount or unmount since): the controller asks about each share's mount point before
        # every operation on it. Otherwise on a bounded thread.
        answer, parent = self._points.quick_answer(path)
        if answer is not None:
            return answer
        generation = self._points.generation()
        answer = self._lookups.call(f"looking up whether {path} is a mount point", lambda: self._points.is_mount_point(path))
        if answer and parent is not None:
            self._points.remember(path, parent, generation)
        return answer

    def mounted_source(self, path: str) -> str | None:
        if not self.is_mount_point(path):
            return None
        return self._table.source(self._resolved(path))

    def mounted_sources(self, path: str) -> tuple[str, ...]:
        if not self.is_mount_point(path):
            return ()
        return tuple(entry.source for entry in self._table.entries(self._resolved(path)))

    def _resolved(self, path: str) -> str:
        return self._lookups.call(f"resolving the parent of {path}", lambda: self._points.resolved(path))

    def is_stale(self, path: str) -> bool:
        try:
            self._fs.call(f"stat of {path}", lambda: os.stat(path))
        except OSError as err:
            if err.errno in STALE_ERRNOS:
                return True
            raise MountFailed(f"cannot stat {path}: {err.strerror}") from err
        return False

    def filesystem_usage(self, path: str) -> FilesystemUsage:
        with self._statting_guard:
            if path in self._statting:
                raise Unavailable(
                    f"an earlier stat of {path} has not returned after up to {self._fs_timeout:g} s "
                    "(the NFS server may be down)"
                )
            self._statting.add(path)
        started = threading.Event()

        def measure() -> os.statvfs_result:
            started.set()
            try:
                return os.statvfs(path)
            finally:
                self._done_statting(path)

        try:
            result = self._stats_of(path).call(f"statvfs of {path}", measure)
        except OSError as err:
            if err.errno in STALE_ERRNOS:
                raise Unavailable(f"cannot stat {path}: {err.strerror} (errno {err.errno})") from err
            raise MountFailed(f"cannot stat {path}: {err.strerror}") from err
        finally:
            if not started.is_set():
                self._done_statting(path)  # refused before it ran: nothing of it is stuck
        return _usage(result)

    def _stats_of(self, path: str) -> BoundedCalls:
        """The stat threads of the server path is mounted from."""
        server = self._server_of(path)
        with self._statting_guard:
            calls = self._stats.get(server)
            if calls is None:
                calls = self._stats[server] = BoundedCalls(f"statvfs on {server}", self._stat_workers, self._fs_timeout)
            return calls

    def _server_of(self, path: str) -> str:
        """The NFS server of the mount at path: remembered from the mount made here, else from the mount table
        (``server:/export``); a local path, or a path that is no mount point, is its own."""
        with self._statting_guard:
            server = self._servers.get(path)
        if server is None:
            server = _server(self.mounted_source(path) or path)
            self._remember_server(path, server)
        return server

    def _remember_server(self, path: str, server: str) -> None:
        with self._statting_guard:
            self._servers[path] = server
            self._servers.move_to_end(path)
            while len(self._servers) > REMEMBERED_SERVERS:
                self._servers.popitem(last=False)

    def _forget_server(self, path: str) -> None:
        with self._statting_guard:
            self._servers.pop(path, None)

    def _done_statting(self, path: str) -> None:
        with self._statting_guard:
            self._statting.discard(path)

    def make_target(self, path: str) -> bool:
        return self._fs.call(f"creating target {path}", lambda: _make_target(path))

    def remove_target(self, path: str) -> bool:
        return self._fs.call(f"removing target {path}", lambda: _remove_target(path))

    def close(self) -> None:
        self._fs.close()
        self._lookups.close()
        self._points.close()
        with self._statting_guard:
            stats, self._stats = list(self._stats.values()), {}
        for calls in stats:
            calls.close()
        self._table.close()

    def _run(self, kind: str, argv: Sequence[str]) -> Completed:
        started = time.perf_counter()
        self._observer.child_started()
        try:
            result = self._runner(argv, self._timeout)
        except CommandTimedOut as err:
            self._observer.operation(kind, "timeout", time.perf_counter() - started)
            raise DeadlineExceeded(str(err)) from err
        finally:
            self._observer.child_finished()
        self._observer.operation(kind, "ok" if result.returncode == 0 else "error", time.perf_counter() - started)
        return result

    @staticmethod
    def _classify(action: str, result: Completed) -> DomainError:
        message = f"{action} failed (exit {result.returncode}): {result.output}"
        lowered = result.output.lower()
        if any(text in lowered for text in _TRANSIENT):
            return TransientMountError(message)
        if any(text in lowered for text in _MISSING):
            return NotFound(message)
        return MountFailed(message)


def _server(source: str) -> str:
    """The server of an NFS source (``server:/export``); any other source is its own key."""
    return source.partition(":/")[0] if ":/" in source else source


def _usage(result: os.statvfs_result) -> FilesystemUsage:
    block = result.f_frsize or result.f_bsize
    return FilesystemUsage(
        total_bytes=result.f_blocks * block,
        available_bytes=result.f_bavail * block,
        used_bytes=(result.f_blocks - result.f_bfree) * block,
        total_inodes=result.f_files,
        free_inodes=result.f_ffree,
        used_inodes=result.f_files - result.f_ffree,
    )


_TARGET_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _target_error(action: str, path: str, err: OSError) -> DomainError:
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"cannot {action} {path}: a parent directory does not exist ({err.strerror})")
    if err.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        return InvalidArgument(f"cannot {action} {path}: {err.strerror}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FailedPrecondition(f"cannot {action} {path}: {err.strerror}")
    if err.errno in STALE_ERRNOS:
        return Unavailable(f"cannot {action} {path}: {err.strerror}")
    return MountFailed(f"cannot {action} {path}: {err.strerror}")


def _make_target(path: str) -> bool:
    """Create the target, or accept an existing empty directory; never mount over data or through a link. Whether
    it was made here."""
    try:
        os.mkdir(path, 0o750)
        return True
    except FileExistsError:
        pass
    except OSError as err:
        raise _target_error("create target", path, err) from err
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise FailedPrecondition(f"target {path} is a symbolic link; refusing to mount there")
        if not stat.S_ISDIR(mode):
            raise FailedPrecondition(f"target {path} exists and is not a directory; refusing to mount there")
        fd = os.open(path, _TARGET_DIR)
        try:
            with os.scandir(fd) as entries:
                if next(entries, None) is not None:
                    raise FailedPrecondition(f"target {path} is not an empty directory; refusing to mount over it")
        finally:
            os.close(fd)
    except OSError as err:
        raise _target_error("check target", path, err) from err
    return False


def _remove_target(path: str) -> bool:
    """Remove an empty target directory; leave anything else where it is. Whether there was one."""
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
            raise FailedPrecondition(
                f"target {path} is not an empty, unmounted directory ({err.strerror}); left in place"
            ) from err
        raise _target_error("remove target", path, err) from err
