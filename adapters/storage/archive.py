"""Stream a volume's tree into a tar archive and back, safely: nothing may land outside the destination."""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Callable, ContextManager, Iterable, Iterator, Protocol

from domain.errors import DeadlineExceeded, DomainError, FailedPrecondition, InvalidArgument


class UnsafeArchive(InvalidArgument):
    """An archive member would land outside the destination, or is a device."""


class UnrestorableLink(FailedPrecondition):
    """The tree holds a symbolic link that unpacking would refuse: refused when packing, not found out at restore."""


def link_leaves(path: str, target: str) -> bool:
    """Whether a link at ``path`` (relative to the top) with this target points outside the top, lexically."""
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return target.startswith("/") or resolved == ".." or resolved.startswith("../")


class SafeMembers:
    """The check of each archive member before it is written, keeping the links seen so far. Refused: absolute names,
    '..' components, devices and fifos, symbolic or hard links whose target resolves (lexically, from where the link
    lives) outside the destination, and any member whose path passes through a link the archive itself made."""

    def __init__(self) -> None:
        self._links: set[str] = set()

    def __call__(self, member: tarfile.TarInfo) -> tarfile.TarInfo:
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
            # A hard link's target is named from the top; a symbolic link's from where it lives.
            if link_leaves(name if member.issym() else "", member.linkname):
                raise UnsafeArchive(f"link {member.name!r} -> {member.linkname!r} leaves the destination")
            if member.issym():
                self._links.add(name)
        return member


# -- streaming pack and unpack over any tree: the storage core walks and builds trees on a share ------------------

DIRECTORY, FILE, SYMLINK = "dir", "file", "symlink"
STREAM_MODES = {"tar.gz": "w|gz", "tar": "w|"}
CHUNK = 1 << 20
"""Bytes read or written at a time when streaming a file or an archive."""


class Deadline:
    """A cooperative bound on a long walk, checked between files and chunks. Made when the call is made, so time
    spent waiting for a thread counts: the work stops no later than its caller gives up (and releases its locks)."""

    def __init__(self, seconds: float, what: str) -> None:
        self._end = time.monotonic() + seconds
        self._seconds = seconds
        self._what = what

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self._end - time.monotonic())

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"{self._what} did not finish within {self._seconds:g} s (--snapshot-timeout)")

    def check(self) -> None:
        if time.monotonic() > self._end:
            raise self.error()


@dataclass(frozen=True)
class Entry:
    """One thing in a tree, as lstat saw it: ``path`` is relative ('.' is the top), never reached through a link."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    target: str = ""
    open: Callable[[], ContextManager[BinaryIO]] | None = None  # a regular file's content, opened without following


class SourceFailed(Exception):
    """A failure of the side long work reads from, told apart from the side it writes to: the file system blames
    the share it reads from, not the destination's."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"reading the source failed: {error}")
        self.error = error


@contextmanager
def reading_source() -> Iterator[None]:
    """Raise any failure but a domain error inside as SourceFailed."""
    try:
        yield
    except (DomainError, SourceFailed):
        raise
    except Exception as err:  # noqa: BLE001 - whatever the source's filesystem or client raises
        raise SourceFailed(err) from err


def source_entries(entries: Iterable[Entry]) -> Iterator[Entry]:
    """The entries of a source tree, with every failure of the walk raised as SourceFailed (those of opening and
    reading its files are, by the walk's own ``open``)."""
    iterator = iter(entries)
    while True:
        with reading_source():
            entry = next(iterator, None)
        if entry is None:
            return
        yield entry


def checked(inner: IO[bytes], deadline: Deadline | None = None, source: bool = False) -> BinaryIO:
    """inner, read through checks: the deadline before every chunk (when given), and, for a file of the side long
    work reads from, every failure raised as SourceFailed."""
    return io.BufferedReader(_Checked(inner, deadline, source))


class _Checked(io.RawIOBase):
    def __init__(self, inner: IO[bytes], deadline: Deadline | None, source: bool) -> None:
        self._inner, self._deadline, self._source = inner, deadline, source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._deadline is not None:
            self._deadline.check()
        with reading_source() if self._source else nullcontext():
            data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class TreeWriter(Protocol):
    """Builds a tree under an (empty) top directory; every path is relative, checked, and reached without links."""

    def directory(self, path: str) -> None: ...
    def file(self, path: str, data: BinaryIO) -> None: ...
    def symlink(self, path: str, target: str) -> None: ...
    def finish(self, path: str, entry: Entry) -> None: ...  # mode, owner (where allowed) and times


def pack_tree(entries: Iterable[Entry], out: BinaryIO, fmt: str, deadline: Deadline) -> int:
    """Write the entries as a tar stream (PAX, numeric owners, nanosecond-ish times) to out, which need not seek;
    the bytes of the files' content it holds (what unpacking it writes)."""
    mode = STREAM_MODES.get(fmt)
    if mode is None:
        raise InvalidArgument(f"archive format {fmt!r} is not one of {', '.join(STREAM_MODES)}")
    content = 0
    with tarfile.open(fileobj=out, mode=mode, format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for entry in entries:
            deadline.check()
            info = tarfile.TarInfo(entry.path)
            info.mode, info.uid, info.gid = entry.mode & 0o7777, entry.uid, entry.gid
            info.mtime = entry.mtime_ns / 1e9
            info.pax_headers = {"mtime": _ns_text(entry.mtime_ns)}  # exact: a float would round the nanoseconds
            if entry.kind == DIRECTORY:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif entry.kind == SYMLINK:
                if link_leaves(entry.path, entry.target):
                    raise UnrestorableLink(
                        f"the volume holds a symbolic link {entry.path!r} -> {entry.target!r} pointing outside it; "
                        "restores refuse such links, so this snapshot or clone could never be restored: "
                        "make it a relative link that stays inside the volume"
                    )
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
                archive.addfile(info)
            elif entry.kind == FILE and entry.open is not None:
                with entry.open() as data:
                    info.size = entry.size
                    archive.addfile(info, checked(data, deadline))
                content += entry.size
    return content


def _ns_text(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"{seconds}.{fraction:09d}"


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The exact PAX mtime when there is one, else tar's own (whole or float seconds)."""
    text = member.pax_headers.get("mtime", "")
    seconds, _, fraction = text.partition(".")
    if seconds.lstrip("-").isdigit() and (not fraction or fraction.isdigit()):
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return int(member.mtime * 1_000_000_000)


def _entry_of(member: tarfile.TarInfo, path: str) -> Entry:
    kind = DIRECTORY if member.isdir() else SYMLINK if member.issym() else FILE
    return Entry(path, kind, member.mode & 0o7777, member.uid, member.gid, _mtime_ns(member), member.size)


def unpack_tree(archive_file: BinaryIO, writer: TreeWriter, deadline: Deadline) -> None:
    """Read a tar stream and build it with writer; refuse (UnsafeArchive) before writing any unsafe member.

    Refused: what SafeMembers refuses (absolute names, '..', devices, fifos, links leaving the top, paths through
    a link the archive made), and hard links. Directories get their mode and times after their content.
    """
    guard = SafeMembers()
    made: set[str] = {"."}
    directories: list[tuple[str, Entry]] = []
    with tarfile.open(fileobj=archive_file, mode="r|*") as archive:
        for member in archive:
            deadline.check()
            guard(member)
            path = posixpath.normpath(member.name)
            if member.islnk():
                raise UnsafeArchive(f"archive member {member.name!r} is a hard link; they are not restored")
            if not (member.isdir() or member.isreg() or member.issym()):
                raise UnsafeArchive(f"archive member {member.name!r} is of an unsupported type")
            if path in made and not member.isdir():
                raise UnsafeArchive(f"archive member {member.name!r} appears twice")
            parent = posixpath.dirname(path) or "."
            for missing in _missing_parents(parent, made):
                writer.directory(missing)
                made.add(missing)
            entry = _entry_of(member, path)
            if member.isdir():
                if path not in made:
                    writer.directory(path)
                    made.add(path)
                directories.append((path, entry))
                continue
            if member.issym():
                writer.symlink(path, member.linkname)
            else:
                data = archive.extractfile(member)
                assert data is not None
                writer.file(path, checked(data, deadline))
            made.add(path)
            writer.finish(path, entry)
    for path, entry in reversed(directories):
        writer.finish(path, entry)


def _missing_parents(parent: str, made: set[str]) -> list[str]:
    missing: list[str] = []
    while parent not in made and parent not in ("", "."):
        missing.append(parent)
        parent = posixpath.dirname(parent) or "."
    return list(reversed(missing))


def copy_tree(entries: Iterable[Entry], writer: TreeWriter, deadline: Deadline) -> None:
    """Copy a tree entry by entry (a clone): the same checks as an archive, without one in between."""
    pipe_r, pipe_w = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(pipe_w, "wb", buffering=CHUNK) as out:
                pack_tree(entries, out, "tar", deadline)
        except BaseException as err:  # noqa: BLE001 - reported by the consumer
            failure.append(err)

    producer = threading.Thread(target=produce, name="clone-pack", daemon=True)
    producer.start()
    error: BaseException | None = None
    try:
        with os.fdopen(pipe_r, "rb", buffering=CHUNK) as source:
            unpack_tree(source, writer, deadline)
            while source.read(CHUNK):  # the end-of-archive padding: let the producer finish writing it
                pass
    except BaseException as err:  # noqa: BLE001 - told apart from the producer's below
        error = err
    # The read end is closed by now, so a producer still writing fails instead of blocking; one stuck reading a
    # hung source is left behind (a daemon) at the deadline.
    producer.join(deadline.remaining())
    if failure and not isinstance(failure[0], BrokenPipeError):
        raise failure[0]  # the source side failed first; the consumer only saw a truncated stream
    if error is not None:
        raise error
    if producer.is_alive():
        raise deadline.error()
