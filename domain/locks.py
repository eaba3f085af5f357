"""Per-volume operation locks: a second concurrent call on the same key is refused at once."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from domain.errors import OperationInFlight


class VolumeLocks:
    """Keys name what an operation works on: a volume name, a volume id, or an id and a target path.

    ``hold`` never waits: a key already held means ABORTED, so a caller's retry cannot queue behind a stuck call.
    Every key is released when the block ends, by return or by any exception (a timeout included).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, *keys: str) -> Iterator[None]:
        wanted = set(keys)
        with self._guard:
            busy = sorted(wanted & self._held)
            if busy:
                raise OperationInFlight(f"an operation on {busy[0]} is already in progress")
            self._held |= wanted
        try:
            yield
        finally:
            with self._guard:
                self._held -= wanted

    def held(self) -> frozenset[str]:
        with self._guard:
            return frozenset(self._held)
