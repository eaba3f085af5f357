"""PublicationStore: what the node published where, kept across restarts."""

from __future__ import annotations

import abc
from typing import Callable, Sequence

from domain.model import Publication

Admission = Callable[[Sequence[Publication]], None]
"""Called with the other publications of a volume before one more is recorded; raises to refuse it."""


class PublicationStore(abc.ABC):
    """Durable record of publications by target path; survives a restart of the node plugin."""

    @abc.abstractmethod
    def get(self, target: str) -> Publication | None:
        """The publication at target, or None."""

    @abc.abstractmethod
    def put(self, publication: Publication, admit: Admission | None = None) -> None:
        """Record a publication, replacing any at the same target, atomically.

        ``admit``, when given, is first called with the volume's publications at other targets (as ``of_volume``
        finds them), in one step with the write: a put of the same volume meanwhile waits for it. Whatever admit
        raises refuses the put, and nothing is written.
        """

    @abc.abstractmethod
    def remove(self, target: str) -> None:
        """Forget the publication at target. Missing is OK."""

    @abc.abstractmethod
    def of_volume(self, volume_id: str) -> list[Publication]:
        """Every publication of volume_id, found through an index by volume, never by reading every record."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many publications are recorded."""
