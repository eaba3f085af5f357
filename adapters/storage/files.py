"""The file-system port FileShareStorage works over: one share's files, and how a technology reaches shares."""

from __future__ import annotations

import abc
from typing import BinaryIO, Callable, TypeVar

from adapters.storage.archive import Deadline, Entry
from domain.errors import DomainError
from domain.model import ShareRef

T = TypeVar("T")
OTHER = "other"  # the kind of an entry that is no directory, regular file or link: a fifo, a device, a socket


class ShareFiles(abc.ABC):
    """One share's files, as one piece of work sees them. Paths are relative to the share's root and reached one name
    at a time, never through a symbolic link: anything but a directory on the way (a file, a link, a FIFO) is
    refused as Obstructed, a directory missing on the way is FileNotFoundError unless a method says otherwise. No
    method opens a FIFO, a device or a socket in a way that could block."""

    @abc.abstractmethod
    def make_dir(self, path: str, mode: int | None = None) -> None:
        """Make the directory; FileExistsError when anything is there. None: the mode new directories get here."""

    @abc.abstractmethod
    def stat(self, path: str) -> Entry:
        """The entry at path itself, by its last name (a link: SYMLINK with its target); FileNotFoundError if none."""

    @abc.abstractmethod
    def list(self, path: str) -> list[Entry]:
        """The entries of the directory at path, as ``stat`` gives them; [] when it is missing."""

    @abc.abstractmethod
    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits of what is at path, never through a link."""

    @abc.abstractmethod
    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        """Give what is at path this owner (None: that part as it is), never through a link; PermissionError when
        the server refuses (this client may not give files away: root squashing, or no root identity)."""

    @abc.abstractmethod
    def set_attributes(self, path: str, entry: Entry) -> None:
        """Give path entry's owner (where this client may), mode (but to a link) and times."""

    @abc.abstractmethod
    def rename(self, path: str, name: str) -> None:
        """Rename path to ``name`` in the same directory, replacing a file there; FileNotFoundError when missing."""

    @abc.abstractmethod
    def move(self, path: str, new_path: str) -> None:
        """Rename path to new_path, whose directory may be another one (it must exist); FileNotFoundError when
        path is missing. What is at new_path is the caller's to look at first."""

    @abc.abstractmethod
    def read(self, path: str, limit: int) -> bytes | None:
        """At most limit bytes of the regular file at path; None when it (or a directory on the way) is missing.
        Anything else there is refused (Obstructed), a FIFO too, without blocking."""

    @abc.abstractmethod
    def open(self, path: str) -> BinaryIO | None:
        """The regular file at path, to stream from; None, and anything else, as ``read``."""

    @abc.abstractmethod
    def write(self, path: str, fill: Callable[[BinaryIO], object], mode: int, exclusive: bool = False,
              durable: bool = True) -> int:
        """Create (or truncate) the regular file at path with mode (where the technology lets it choose) and fill it;
        its size. durable: on stable storage when this returns; exclusive: FileExistsError when anything is there.
        Anything but a regular file at path (a link, a FIFO, a directory) is refused (Obstructed)."""

    @abc.abstractmethod
    def write_atomically(self, path: str, data: bytes, mode: int) -> None:
        """Write a temporary file whole and durable, then rename it over path: a reader sees the old or the new."""

    @abc.abstractmethod
    def symlink(self, path: str, target: str) -> None:
        """Make a symbolic link at path pointing to target (never followed here)."""

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Remove the file or link at path, never what it points to; missing (or its directory missing) is OK; a
        directory there is refused (Obstructed)."""

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None:
        """Remove the directory at path and all below it, links as links, FIFOs and devices never opened; missing is
        OK, anything but a directory at path refused (Obstructed)."""

    @abc.abstractmethod
    def free_bytes(self) -> int:
        """Bytes the share's filesystem has free for this client (statvfs f_bavail, NFS FSSTAT abytes)."""


class ShareFileSystem(abc.ABC):
    """How a technology reaches shares and runs work on their files: every run bounded in time, whatever it raises
    turned into a domain error, and a share gone stale (or a connection broken) let go, to be reached afresh."""

    @abc.abstractmethod
    def run(self, share: ShareRef, what: str, work: Callable[[ShareFiles], T]) -> T:
        """work's result, run on the share's files within the file-system timeout."""

    @abc.abstractmethod
    def run_long(
        self, share: ShareRef, what: str, work: Callable[[ShareFiles, ShareFiles, Deadline], T], source: ShareRef
    ) -> T:
        """work(files of share, files of source, deadline): long work writing to share and reading from source. The
        deadline (--snapshot-timeout) counts from this call, waiting for a thread included; what fails on the source
        side (SourceFailed) is blamed on the source share; after a lost connection, work may run again."""

    def reachable(self, share: ShareRef) -> bool:
        """Whether the share can be reached and is exported (mounting or connecting to it if need be)."""
        try:
            self.reach(share)
        except DomainError:
            return False
        return True

    @abc.abstractmethod
    def reach(self, share: ShareRef) -> None:
        """Mount or connect to the share unless it is; a domain error when that fails."""

    @abc.abstractmethod
    def held(self) -> int:
        """How many shares are held open now (mounts, or client connections)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every share held (unmount, disconnect)."""
