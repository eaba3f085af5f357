"""PublicationStore: what the node published where, kept across restarts."""

from __future__ import annotations

import abc

from domain.model import Publication


class PublicationStore(abc.ABC):
    """Durable record of publications by target path; survives a restart of the node plugin."""

    @abc.abstractmethod
    def get(self, target: str) -> Publication | None:
        """The publication at target, or None."""

    @abc.abstractmethod
    def put(self, publication: Publication) -> None:
        """Record a publication, replacing any at the same target, atomically."""

    @abc.abstractmethod
    def remove(self, target: str) -> None:
        """Forget the publication at target. Missing is OK."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many publications are recorded."""
