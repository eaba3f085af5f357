"""Processes the benchmark starts: each in its own process group, all killed on exit; RSS from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import IO, Sequence

_started: list[subprocess.Popen[bytes]] = []
_lock = threading.Lock()


def spawn(argv: Sequence[str], log: IO[bytes], env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.Popen[bytes]:
    """Start argv in a new session (its own process group), remembered so that kill_all can end it."""
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
    )
    with _lock:
        _started.append(process)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL to the whole group after grace seconds; returns the exit status (None if killed)."""
    status = None
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            status = process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            status = None
    else:
        status = process.returncode
    _kill_group(process.pid)
    if process.poll() is None:
        process.wait(timeout=5)
        status = None
    with _lock:
        if process in _started:
            _started.remove(process)
    return status


def kill_all() -> None:
    """Kill every group still running; safe to call from a watchdog thread or at exit."""
    with _lock:
        running = list(_started)
        _started.clear()
    for process in running:
        _kill_group(process.pid)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def rss_mib(pid: int) -> float | None:
    """Resident set size of pid from /proc/PID/status, in MiB; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except FileNotFoundError:
        return None
    return None


class Watchdog:
    """Ends the whole benchmark, with every process it started, if it runs past its deadline."""

    def __init__(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._fire, args=(seconds,))
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    @staticmethod
    def _fire(seconds: float) -> None:
        print(f"bench: deadline of {seconds:g} s passed; killing everything it started", flush=True)
        kill_all()
        os._exit(3)


def sleep_until(predicate, timeout: float, step: float = 0.001) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True
