"""BoundedCalls: filesystem calls that may hang on a dead NFS server, run on a few fixed threads, bounded in time."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Callable, TypeVar

from domain.errors import DeadlineExceeded, Unavailable

T = TypeVar("T")


class _Call:
    """One call handed to a worker: the caller waits on ``done`` (a plain lock, the cheapest wait CPython has),
    the worker fills in the outcome and releases it."""

    __slots__ = ("fn", "number", "done", "result", "error")

    def __init__(self, fn: Callable[[], object], number: int) -> None:
        self.fn = fn
        self.number = number
        self.done = threading.Lock()
        self.done.acquire()
        self.result: object = None
        self.error: BaseException | None = None


class BoundedCalls:
    """Run callables on at most ``workers`` daemon threads; the caller waits at most ``timeout`` seconds.

    A thread stuck in the kernel cannot be killed, so a call that times out keeps its thread (and its slot) until
    the kernel lets go. New calls never start new threads beyond ``workers``: when every slot is held by a call
    that has run longer than ``timeout``, a new call is refused at once as UNAVAILABLE. So a hung server costs
    at most ``workers`` threads, however often callers retry, and the process never waits on them to exit.
    """

    def __init__(self, name: str, workers: int, timeout: float) -> None:
        self._name = name
        self._workers = max(1, workers)
        self._timeout = timeout
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(self._workers):
            self._slots.put(None)
        self._jobs: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, float] = {}  # call number -> monotonic start
        self._numbers = itertools.count()

    @property
    def timeout(self) -> float:
        return self._timeout

    def threads(self) -> int:
        with self._guard:
            return len(self._threads)

    def call(self, what: str, fn: Callable[[], T], queued: Callable[[], None] | None = None) -> T:
        """fn's result or exception; DeadlineExceeded when it takes longer than the bound. ``queued`` is called in the
        caller's thread once fn is sure to run (it may then outlive the call); when this raises before, fn never runs."""
        now = time.monotonic()
        deadline = now + self._timeout
        with self._guard:
            stuck = sum(1 for started in self._running.values() if now - started > self._timeout)
        if stuck >= self._workers:
            raise Unavailable(
                f"{what}: {self._name} does not answer; {stuck} earlier calls have not returned "
                f"after {self._timeout:g} s (the NFS server may be down)"
            )
        try:
            self._slots.get(timeout=self._timeout)
        except queue.Empty:
            raise DeadlineExceeded(
                f"{what}: {self._name} is busy; no call finished within {self._timeout:g} s (the NFS server may be slow or down)"
            ) from None
        with self._guard:
            job = _Call(fn, next(self._numbers))
            self._running[job.number] = time.monotonic()
            if len(self._running) > len(self._threads):
                thread = threading.Thread(
                    target=self._work, name=f"bounded-{self._name[:24]}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        if queued is not None:
            queued()
        self._jobs.put(job)
        if not job.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded(
                f"{what} on {self._name} did not finish within {self._timeout:g} s (the NFS server may be down)"
            )
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job.result = job.fn()
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                job.error = err
            finally:
                with self._guard:
                    self._running.pop(job.number, None)
                self._slots.put(None)
                job.done.release()

    def close(self) -> None:
        """Let idle threads end; a thread stuck in the kernel ends when its call returns (it is a daemon)."""
        with self._guard:
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)
