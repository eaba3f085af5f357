"""Clock: the time, injected so tests never sleep."""

from __future__ import annotations

import abc
import datetime

from domain.needs import Clock as ClockNeed


class Clock(abc.ABC):
    """Wall-clock time in UTC."""

    @abc.abstractmethod
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware, in UTC."""


def _satisfies_domain(clock: Clock) -> ClockNeed:
    return clock
