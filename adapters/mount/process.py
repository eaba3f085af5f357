"""Run an external command as an argument list, bounded in time; on timeout kill its process group."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
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
_abandoned: list[subprocess.Popen[str]] = []
_abandoned_guard = threading.Lock()


class CommandTimedOut(Exception):
    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(f"{argv[0]} did not finish within {timeout:g} s; its process group was killed")
        self.argv = tuple(argv)
        self.timeout = timeout


def run_command(argv: Sequence[str], timeout: float) -> Completed:
    """Run argv (never through a shell) in a new session so the whole group can be killed."""
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
        errors="replace",
    )
    _reap_abandoned()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        _let_go(process)
        raise CommandTimedOut(argv, timeout) from None
    except BaseException:
        _kill_group(process.pid)
        _let_go(process)
        raise
    return Completed(tuple(argv), process.returncode, stdout, stderr)


def _let_go(process: subprocess.Popen[str]) -> None:
    """Wait a little for a killed child; if the kernel still holds it, close our pipe ends and reap it later."""
    try:
        process.communicate(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
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
