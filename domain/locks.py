"""Per-volume operation locks: a second concurrent call on the same key is refused at once."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from domain.errors import OperationInFlight


class VolumeLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            if key in self._held:
                raise OperationInFlight(f"an operation on {key} is already in progress")
            self._held.add(key)
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(key)

    def held(self) -> frozenset[str]:
        with self._guard:
            return frozenset(self._held)
