"""EventSink: where use cases report what happened (volumes created, published, recovered)."""

from __future__ import annotations

import abc

from domain.events import Event


class EventSink(abc.ABC):
    """Receives domain events; must be cheap and must never raise into the use case."""

    @abc.abstractmethod
    def emit(self, event: Event) -> None:
        """Record that ``event`` happened once."""


class NoEvents(EventSink):
    """The sink for when nobody listens."""

    def emit(self, event: Event) -> None:
        pass
