"""The system clock."""

import datetime

from ports.clock import Clock


class SystemClock(Clock):
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)
