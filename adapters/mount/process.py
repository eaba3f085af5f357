"""Run an external command as an argument list, bounded in time; on timeout kill its process group."""

from __future__ import annotations

import os
import signal
import subprocess
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
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        process.communicate()
        raise CommandTimedOut(argv, timeout) from None
    except BaseException:
        _kill_group(process.pid)
        process.wait()
        raise
    return Completed(tuple(argv), process.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
