"""Run an external command as an argument list, bounded in time; on timeout kill its process group."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-2000:]


# After SIGKILL, how long to wait for the group to go. A process blocked in the kernel on a hung mount (state D)
# cannot die until the kernel lets go: the caller is not held hostage to it.
KILL_GRACE = 1.0
OUTPUT_KEPT = 1 << 16  # the last bytes of each stream kept; a message is its tail
_abandoned: list[subprocess.Popen[bytes]] = []
_abandoned_guard = threading.Lock()


class CommandTimedOut(Exception):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:g} s; its process group was killed")
        self.argv = tuple(argv)
        self.timeout = timeout


def run_command(argv: Sequence[str], timeout: float) -> Completed:
    """Run argv (never through a shell) as a process group of its own, so the whole group can be killed.

    A process group, not a session: with the scheduler's autogroups (on by default) every new session is a new
    scheduling group, and on a loaded node each one started behind the others; mount.nfs ran 30 to 50 % longer.

    The child's stdin is one /dev/null kept open, its stdout and stderr plain pipes read with os.read: no file
    objects around them (their fstat, ioctl and lseek, and /dev/null opened and closed, were eight system calls a
    command, each a chance for another thread to take the interpreter).
    """
    out_read, out_write = os.pipe()
    try:
        err_read, err_write = os.pipe()
    except BaseException:
        os.close(out_read)
        os.close(out_write)
        raise
    try:
        try:
            process = subprocess.Popen(
                list(argv), stdin=_dev_null(), stdout=out_write, stderr=err_write, process_group=0
            )
        finally:
            os.close(out_write)
            os.close(err_write)
        _reap_abandoned()
        try:
            stdout, stderr = _communicate(process, out_read, err_read, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            _let_go(process)
            raise CommandTimedOut(argv, timeout) from None
        except BaseException:
            _kill_group(process.pid)
            _let_go(process)
            raise
    finally:
        os.close(out_read)
        os.close(err_read)
    return Completed(tuple(argv), process.returncode, _text(stdout), _text(stderr))


_null: int | None = None
_null_guard = threading.Lock()


def _dev_null() -> int:
    """A descriptor of /dev/null for every child's stdin, opened once (close-on-exec: only dup2 hands it over)."""
    global _null
    with _null_guard:
        if _null is None:
            _null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return _null


def _communicate(process: subprocess.Popen[bytes], out: int, err: int, timeout: float) -> tuple[bytes, bytes]:
    """The child's output, once it has exited: woken by the child's pidfd the moment it exits.

    Popen.communicate(timeout) ends with wait(timeout), which polls waitpid with sleeps of 1, 2, 4 ms...: the pipes
    reach EOF as the child closes its files, just before it can be reaped, so nearly every call slept a millisecond
    or more. A grandchild that keeps the pipes open does not hold the call once the child itself has exited.
    Without a pidfd (a kernel before 5.3), the pipes are read to their end, then the child waited for.
    """
    try:
        pidfd: int | None = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = None
    kept = {out: bytearray(), err: bytearray()}
    deadline = time.monotonic() + timeout
    poller = select.poll()
    for fd in (out, err) if pidfd is None else (out, err, pidfd):
        poller.register(fd, select.POLLIN)
    reading, exited = {out, err}, False
    try:
        while reading or not exited:
            if pidfd is None and not reading:
                process.wait(max(0.0, deadline - time.monotonic()))
                break
            wait = deadline - time.monotonic()
            if wait <= 0:
                if exited:
                    break
                raise subprocess.TimeoutExpired(process.args, timeout)
            # Once it is gone, only what is in the pipes now: a writer it left behind is not waited for.
            events = poller.poll(0 if exited else wait * 1000)
            if not events and exited:
                break
            for fd, _ in events:
                if fd == pidfd:
                    exited = True
                    poller.unregister(pidfd)
                elif chunk := os.read(fd, 1 << 16):
                    kept[fd] += chunk
                    del kept[fd][: max(0, len(kept[fd]) - OUTPUT_KEPT)]
                else:
                    reading.discard(fd)
                    poller.unregister(fd)
        process.wait()
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return bytes(kept[out]), bytes(kept[err])


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _let_go(process: subprocess.Popen[bytes]) -> None:
    """Wait a little for a killed child; if the kernel still holds it, reap it later."""
    try:
        process.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        with _abandoned_guard:
            _abandoned.append(process)


def _reap_abandoned() -> None:
    with _abandoned_guard:
        _abandoned[:] = [process for process in _abandoned if process.poll() is None]


def abandoned() -> int:
    """Killed children the kernel has not let die yet."""
    _reap_abandoned()
    with _abandoned_guard:
        return len(_abandoned)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
