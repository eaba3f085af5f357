"""UsageMeter: how much a volume's directory tree holds, measured in the background."""

from __future__ import annotations

import abc

from domain.model import TreeUsage


class UsageMeter(abc.ABC):
    """The bytes and inodes under a published volume's directory, from walks of its tree.

    Walking is slow on a large tree and can hang on a dead server, so callers never wait for one: a walk runs in
    the background, bounded in time, entries and pace, one at a time per server (a hung server holds only its
    own), and its result is kept, bounded, with when it was made.
    """

    @abc.abstractmethod
    def usage(self, key: str, path: str, server: str, capacity_bytes: int) -> TreeUsage | None:
        """The last walk of the tree ``key`` names (mounted at ``path``, served by ``server``), with its age; None
        when none finished yet. A walk is started when none runs and the last is older than the refresh interval;
        with no figures at all yet, waits a moment for the first (a new volume walks in milliseconds).
        ``capacity_bytes`` is what the figures are measured against, kept for counting volumes by how full they
        are, without naming any."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the walks (each stops at its next entry) and let their threads end."""
