"""Hooks through which the mount helper reports its work; the default reports nothing."""

from __future__ import annotations


class MountObserver:
    def operation(self, kind: str, result: str, seconds: float) -> None:
        """One mount or umount attempt finished: kind is mount|umount, result ok|error|timeout."""

    def retry(self, kind: str) -> None:
        """A transient failure of ``kind`` will be tried again."""

    def child_started(self) -> None:
        """A mount helper child process started."""

    def child_finished(self) -> None:
        """A mount helper child process ended (or was killed)."""
