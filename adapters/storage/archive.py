"""Pack a volume directory into a tar archive and unpack one safely: nothing may land outside the destination."""

from __future__ import annotations

import os
import posixpath
import tarfile
from typing import BinaryIO

from domain.errors import InvalidArgument

FORMATS = {"tar.gz": "w:gz", "tar": "w"}


def pack(source_dir: str, out: BinaryIO, fmt: str = "tar.gz") -> None:
    """Write source_dir's contents (not following links) to out; members are relative paths."""
    mode = FORMATS.get(fmt)
    if mode is None:
        raise InvalidArgument(f"archive format {fmt!r} is not one of {', '.join(FORMATS)}")
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for name in sorted(os.listdir(source_dir)):
            archive.add(os.path.join(source_dir, name), arcname=name, recursive=True)


class UnsafeArchive(InvalidArgument):
    """An archive member would land outside the destination, or is a device."""


class SafeMembers:
    """A tarfile extraction filter that refuses escapes but keeps modes, owners and times.

    Refused: absolute names, '..' components, device and fifo members, symbolic or hard links
    whose target resolves (lexically, from where the link lives) outside the destination, and
    any member whose path passes through a symbolic link the archive itself created.
    """

    def __init__(self) -> None:
        self._links: set[str] = set()

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        name = member.name
        if name.startswith("/") or "\x00" in name or ".." in name.split("/"):
            raise UnsafeArchive(f"archive member {name!r} is absolute or contains '..'")
        name = posixpath.normpath(name)
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self._links:
                raise UnsafeArchive(f"archive member {member.name!r} passes through a symbolic link")
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchive(f"archive member {member.name!r} is a device or fifo")
        if member.issym() or member.islnk():
            base = posixpath.dirname(name) if member.issym() else ""
            target = member.linkname
            resolved = posixpath.normpath(posixpath.join(base, target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise UnsafeArchive(f"link {member.name!r} -> {target!r} leaves the destination")
            if member.issym():
                self._links.add(name)
        return member


def unpack(archive_file: BinaryIO, dest_dir: str) -> None:
    """Extract into dest_dir, which must exist; raise UnsafeArchive before writing an unsafe member."""
    with tarfile.open(fileobj=archive_file, mode="r:*") as archive:
        archive.extractall(dest_dir, filter=SafeMembers())
