"""Clock: the time, injected so tests never sleep."""

from __future__ import annotations

import abc
import datetime


class Clock(abc.ABC):
    """Wall-clock time in UTC, and a clock for intervals."""

    @abc.abstractmethod
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware, in UTC."""

    @abc.abstractmethod
    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back (for idle times: wall-clock time may jump)."""
