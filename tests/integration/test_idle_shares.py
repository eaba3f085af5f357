"""A controller asked about 50 distinct shares, then left idle, returns to its starting share mounts and threads.

Over the real socket: --storage mount against the mount.nfs stand-in (each share a bind mount of a directory of
the export), and --storage userspace against nfs-ganesha (each share an nfs-rs client with threads of its own).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections import Counter
import time
from pathlib import Path
from typing import Callable

import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import SERVER, SHARE, Driver, mount_capability, mounts_under, start_driver
from tests.integration.ganesha import Ganesha, ganesha  # noqa: F401 - the session's NFS server fixture
from tests.integration.test_userspace_controller import start_userspace_controller

pytestmark = pytest.mark.integration

SHARES, MOST = 50, 8
WORKERS, CALLERS = 4, 8  # more callers than workers: every pool the calls share grows to its bound in the first burst
IDLE = "1"  # --share-idle-timeout: seconds
FLAGS = ("--share-idle-timeout", IDLE, "--max-shares-held", str(MOST), "--workers", str(WORKERS))


def threads(driver: Driver) -> int:
    return len(os.listdir(f"/proc/{driver.process.pid}/task"))


def settled(count: Callable[[], int], most: int, seconds: float = 20.0) -> int:
    """count() once it is at most ``most``, or as it is after seconds (release happens in the background)."""
    deadline = time.monotonic() + seconds
    while count() > most and time.monotonic() < deadline:
        time.sleep(0.1)
    return count()


def steady(count: Callable[[], int], seconds: float = 20.0) -> int:
    """count() once it holds still for a second (threads told to end take a moment), or as it is after seconds."""
    deadline, last = time.monotonic() + seconds, count()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = count()
        if now == last:
            break
        last = now
    return last


def ask(driver: Driver, share: str) -> None:
    request = csi.GetCapacityRequest(volume_capabilities=[mount_capability()], parameters={"server": SERVER, "share": share})
    assert driver.controller.GetCapacity(request, timeout=30).available_capacity > 0


def names(driver: Driver) -> list[str]:
    """The driver's threads by name (Python's names reach the kernel's comm only in part: enough to tell pools)."""
    task = Path(f"/proc/{driver.process.pid}/task")
    return sorted((entry / "comm").read_text().strip() for entry in task.iterdir())


def burst(driver: Driver, shares: list[str], held: Callable[[], int]) -> int:
    """Ask about every share, from several callers at once as the sidecars call; the most shares seen held."""
    peak = 0

    def caller(index: int) -> None:
        nonlocal peak
        for share in shares[index::CALLERS]:
            ask(driver, share)
            peak = max(peak, held())

    with concurrent.futures.ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))
    return peak


def ask_fifty_then_idle(driver: Driver, shares: list[str], held: Callable[[], int]) -> None:
    # The start: the same burst once, and let go, so every pool that all calls share (gRPC's workers, the mounter's
    # threads) has grown to what these callers need; the threads per share are what must come and go.
    burst(driver, shares, held)
    assert settled(held, 0) == 0
    start, at_start = steady(lambda: threads(driver)), names(driver)
    peak = burst(driver, shares, held)
    busy = threads(driver)
    print(f"\n{len(shares)} shares: threads {start} at the start, {busy} after the calls; at most {peak} shares held")
    assert settled(held, 0) == 0
    assert settled(lambda: threads(driver), start) <= start, f"more: {Counter(names(driver)) - Counter(at_start)}"


class TestIdleShares:
    def test_share_mounts_and_their_threads_are_released(self, tmp_path: Path, export_root: Path) -> None:
        shares = [f"{SHARE}/s{n}" for n in range(SHARES)]
        for share in shares:
            (export_root / SERVER / share.strip("/")).mkdir()
        driver = start_driver(tmp_path / "driver", *FLAGS, mode="controller")
        try:
            ask_fifty_then_idle(driver, shares, lambda: len(mounts_under(tmp_path / "driver" / "shares")))
        finally:
            assert driver.stop() == 0, driver.log.read_text()[-3000:]

    def test_userspace_clients_and_their_threads_are_released(self, tmp_path: Path, ganesha: Ganesha) -> None:
        shares = [ganesha.new_share("idle")[0].share for _ in range(SHARES)]
        driver = start_userspace_controller(tmp_path / "driver", ganesha, *FLAGS)
        log = tmp_path / "driver" / "driver.log"

        def connected() -> int:
            text = log.read_text()
            return text.count("connected to share") - text.count("released NFS client")

        try:
            ask_fifty_then_idle(driver, shares, connected)
        finally:
            assert driver.stop() == 0, log.read_text()[-3000:]
