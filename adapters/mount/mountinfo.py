"""Read the mount table from /proc/self/mountinfo; no stat on a possibly hung path."""

from __future__ import annotations

import os
import re
import select
import threading
from dataclasses import dataclass

_ESCAPE = re.compile(r"\\([0-7]{3})")
# The characters the kernel writes as octal escapes in a mountinfo path (fs/proc_namespace.c).
_MANGLED = {ord(c): f"\\{ord(c):03o}" for c in " \t\n\\"}


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    root: str
    fs_type: str
    source: str
    options: tuple[str, ...]


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _entry(line: str) -> MountEntry | None:
    left, sep, right = line.partition(" - ")
    if not sep:
        return None
    fields = left.split()
    tail = right.split()
    if len(fields) < 6 or len(tail) < 2:
        return None
    return MountEntry(
        mount_point=_unescape(fields[4]),
        root=_unescape(fields[3]),
        fs_type=tail[0],
        source=_unescape(tail[1]),
        options=tuple(fields[5].split(",")),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    return [entry for line in text.splitlines() if (entry := _entry(line)) is not None]


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


def entries_at(text: str, path: str) -> list[MountEntry]:
    """The mounts stacked at exactly ``path`` in a mountinfo text, bottom first (later lines are later mounts).

    Only the lines that name the path are parsed: a search of the text costs microseconds where parsing
    thousands of lines costs milliseconds.
    """
    path = os.path.normpath(path)
    needle = f" {path.translate(_MANGLED)} "
    found = []
    start = text.find(needle)
    while start >= 0:
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        entry = _entry(text[line_start : len(text) if line_end < 0 else line_end])
        if entry is not None and entry.mount_point == path:
            found.append(entry)
        if line_end < 0:
            break
        start = text.find(needle, line_end)
    return found


class TableChanges:
    """Whether the mount namespace's table changed since the last question: O(1), the table is never read.

    The kernel flags an open /proc/<pid>/mountinfo with POLLPRI when the namespace's mount table changes (any
    mount, unmount or move), and a poll clears the flag. Any other file (tests hand one in) has no such signal:
    it is always reported changed, so nothing is ever kept on its word.
    """

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self._path = path
        self._fd = -1
        self._poll: select.poll | None = None

    def changed(self) -> bool:
        """Not thread-safe: a poll consumes the flag, so its owner serialises the calls."""
        if not self._path.startswith("/proc/"):
            return True
        if self._poll is None:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
            return True
        return bool(self._poll.poll(0))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._poll = -1, None


class MountTable:
    """The mounts at one path, from the whole table: for the rare questions the kernel answers no other way
    (how many mounts are stacked there, and from what source).

    The kernel generates the whole table on every read, in time that grows with the mounts on the node, so
    the last text is kept until the kernel flags an open /proc/<pid>/mountinfo with POLLPRI (the namespace's
    table changed); a poll(0) says whether it still holds. Any other file (tests hand one in) has no such
    signal: it is re-read on every question.
    """

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self._path = path
        self._changes = TableChanges(path)
        self._guard = threading.Lock()
        self._text: str | None = None

    def entries(self, path: str) -> list[MountEntry]:
        """The mounts stacked at path as the table spells it (symbolic links resolved), bottom first."""
        return entries_at(self._current(), path)

    def count(self, path: str) -> int:
        """How many mounts are stacked at path (0: it is no mount point)."""
        return len(self.entries(path))

    def source(self, path: str) -> str | None:
        """The source of the topmost mount at path (``server:/export`` for NFS), or None when it is no mount point."""
        entries = self.entries(path)
        return entries[-1].source if entries else None

    def _current(self) -> str:
        with self._guard:
            # Ask before reading: a change after the question shows in this read and flags the next question too.
            if self._changes.changed() or self._text is None:
                self._text = self._read()
            return self._text

    def _read(self) -> str:
        with open(self._path, "rb") as handle:
            return handle.read().decode("utf-8", errors="surrogateescape")

    def close(self) -> None:
        with self._guard:
            self._changes.close()
            self._text = None
