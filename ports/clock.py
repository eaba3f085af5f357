"""Clock: the time, injected so tests never sleep."""

from __future__ import annotations

import abc
import datetime


class Clock(abc.ABC):
    """Wall-clock time in UTC."""

    @abc.abstractmethod
    def now(self) -> datetime.datetime:
        """The current time, timezone-aware, in UTC."""
