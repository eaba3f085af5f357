"""Probe: ready when what this process depends on is present."""

from __future__ import annotations

from ports.mounter import Mounter


class Probe:
    """Probe: ready when what this process depends on is present (mount.nfs, where it mounts)."""

    def __init__(self, mounter: Mounter | None) -> None:
        self._mounter = mounter

    def __call__(self) -> None:
        if self._mounter is not None:
            self._mounter.check_ready()
