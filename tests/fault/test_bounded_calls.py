"""BoundedCalls with calls really blocked in the kernel (open of a FIFO nobody writes): bounded time, fixed threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from adapters.mount.bounded import BoundedCalls
from domain.errors import DeadlineExceeded, Unavailable


def blocked_open(fifo: Path) -> None:
    os.close(os.open(fifo, os.O_RDONLY))  # blocks until a writer opens the other end


class TestBoundedCalls:
    def test_hung_calls_cost_at_most_the_workers_and_retries_are_refused_at_once(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        calls = BoundedCalls("a test share", workers=2, timeout=0.2)
        before = threading.active_count()
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded, match="did not finish within 0.2 s"):
                calls.call("open", lambda: blocked_open(fifo))
            assert time.monotonic() - started < 1
        time.sleep(0.25)
        for _ in range(50):
            started = time.monotonic()
            with pytest.raises(Unavailable, match="does not answer"):
                calls.call("open", lambda: blocked_open(fifo))
            assert time.monotonic() - started < 0.05
        assert calls.threads() == 2 and threading.active_count() == before + 2
        # When the server answers again (a writer opens the FIFO), the stuck calls return; new calls use the same threads
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO rather than a hang if no reader were waiting
        deadline = time.monotonic() + 5
        while True:
            try:
                assert calls.call("stat", lambda: os.stat(tmp_path).st_mode) > 0
                break
            except Unavailable:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert calls.threads() == 2
        os.close(writer)
        calls.close()

    def test_errors_and_results_come_back_to_the_caller(self) -> None:
        calls = BoundedCalls("a test share", workers=1, timeout=5)
        assert calls.call("add", lambda: 1 + 1) == 2
        with pytest.raises(FileNotFoundError):
            calls.call("stat", lambda: os.stat("/no/such/path"))
        calls.close()

    def test_busy_but_healthy_workers_make_callers_wait_not_fail(self) -> None:
        calls = BoundedCalls("a test share", workers=2, timeout=5)
        results: list[int] = []
        threads = [threading.Thread(target=lambda i=i: results.append(calls.call("sleep", lambda: time.sleep(0.05) or i))) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == list(range(8)) and calls.threads() == 2
        calls.close()
