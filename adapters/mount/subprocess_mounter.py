"""SubprocessMounter: mount.nfs and umount as argument lists, bounded in time, retried when transient."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import tenacity

from adapters.mount.mountinfo import is_mount_point
from adapters.mount.observer import MountObserver
from adapters.mount.process import CommandTimedOut, Completed, run_command
from domain.errors import DeadlineExceeded, DomainError, FailedPrecondition, MountFailed, NotFound, Unavailable
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
    ) -> None:
        self._observer = observer
        self._mount_command = mount_command
        self._umount_command = umount_command
        self._timeout = timeout
        self._retry = retry
        self._runner = runner
        self._mountinfo = mountinfo_path

    def _binary(self, command: str) -> str:
        path = resolve_binary(command)
        if path is None:
            raise FailedPrecondition(f"{command} is not installed or not executable")
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
                result = self._run("mount", argv)
                if result.returncode != 0:
                    raise self._classify(f"mount {source} at {target}", result)

    def unmount(self, target: str) -> None:
        argv = [self._binary(self._umount_command), target]
        for attempt in self._retry.retrying(lambda: self._observer.retry("umount")):
            with attempt:
                if not self.is_mount_point(target):
                    return
                result = self._run("umount", argv)
                if result.returncode != 0 and self.is_mount_point(target):
                    raise self._classify(f"unmount {target}", result)

    def is_mount_point(self, path: str) -> bool:
        return is_mount_point(path, self._mountinfo)

    def make_target(self, path: str) -> None:
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            if not os.path.isdir(path):
                raise FailedPrecondition(f"target {path} exists and is not a directory") from None
        except FileNotFoundError as err:
            raise NotFound(f"the parent of target {path} does not exist") from err

    def remove_target(self, path: str) -> None:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                os.unlink(path)
            else:
                raise MountFailed(f"cannot remove target {path}: {err.strerror}") from err

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
