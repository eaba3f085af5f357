"""Read the mount table from /proc/self/mountinfo; no stat on a possibly hung path."""

from __future__ import annotations

import collections
import os
import re
import select
import threading
from dataclasses import dataclass

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    root: str
    fs_type: str
    source: str
    options: tuple[str, ...]


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        tail = right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        entries.append(
            MountEntry(
                mount_point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                fs_type=tail[0],
                source=_unescape(tail[1]),
                options=tuple(fields[5].split(",")),
            )
        )
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return parse_mountinfo(handle.read())


@dataclass(frozen=True)
class _Parsed:
    counts: collections.Counter[str]
    sources: dict[str, str]  # mount point -> the source of the topmost mount there


def _parse(entries: list[MountEntry]) -> _Parsed:
    # Later lines are later mounts: the last entry at a mount point is the one on top.
    return _Parsed(collections.Counter(e.mount_point for e in entries), {e.mount_point: e.source for e in entries})


class MountTable:
    """How many mounts sit at each path, and from where, re-read only when the kernel says the table changed.

    Parsing the whole table on every question costs time in proportion to the mounts on the machine (a node with
    thousands of published volumes has thousands of lines), and a CreateVolume asks several times. The kernel
    flags an open /proc/<pid>/mountinfo with POLLPRI once the namespace's mount table changes, so a poll(0) says
    whether the last parse is still true. Any other file (tests hand one in) has no such signal: it is re-read on
    every question.
    """

    def __init__(self, path: str = "/proc/self/mountinfo") -> None:
        self._path = path
        self._watchable = path.startswith("/proc/")
        self._guard = threading.Lock()
        self._fd = -1
        self._poll: select.poll | None = None
        self._parsed: _Parsed | None = None

    def count(self, path: str) -> int:
        """How many mounts are stacked at path (0: it is no mount point)."""
        return self._current().counts[os.path.normpath(path)]

    def source(self, path: str) -> str | None:
        """The source of the topmost mount at path (``server:/export`` for NFS), or None when it is no mount point."""
        return self._current().sources.get(os.path.normpath(path))

    def _current(self) -> _Parsed:
        if not self._watchable:
            return _parse(read_mountinfo(self._path))
        with self._guard:
            if self._poll is None:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
            # Poll before reading: a change after the poll shows in this read and flags the next poll too.
            changed = bool(self._poll.poll(0))
            if changed or self._parsed is None:
                self._parsed = _parse(parse_mountinfo(self._read()))
            return self._parsed

    def _read(self) -> str:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape")

    def close(self) -> None:
        with self._guard:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd, self._poll, self._parsed = -1, None, None
