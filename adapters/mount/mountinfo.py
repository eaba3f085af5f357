"""Read the mount table from /proc/self/mountinfo; no stat on a possibly hung path."""

from __future__ import annotations

import os
import re
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


def is_mount_point(path: str, mountinfo_path: str = "/proc/self/mountinfo") -> bool:
    wanted = os.path.normpath(path)
    return any(entry.mount_point == wanted for entry in read_mountinfo(mountinfo_path))


def mount_count(path: str, mountinfo_path: str = "/proc/self/mountinfo") -> int:
    """How many mounts are stacked at path (0: it is no mount point)."""
    wanted = os.path.normpath(path)
    return sum(1 for entry in read_mountinfo(mountinfo_path) if entry.mount_point == wanted)
