"""What a ShareStorage left on the export, seen from the server's side, and foreign things planted there."""

from __future__ import annotations

import abc
import hashlib
import os
import posixpath
import stat
from pathlib import Path

import pytest

from domain.model import METADATA_DIR, ShareRef
from tests.fakes import FakeShareStorage

DIR, FILE, SYMLINK, FIFO = "dir", "file", "symlink", "fifo"


def record_path(subdir: str) -> str:
    """Where the record of volume directory ``subdir`` lives: beside it, as ``.<leaf>.nfs-csi.json``."""
    parent, leaf = posixpath.split(subdir)
    return posixpath.join(parent, f".{leaf}.nfs-csi.json")


class ExportView(abc.ABC):
    """The share's directory as its server holds it; paths are relative to the share."""

    @abc.abstractmethod
    def tree(self) -> dict[str, str]:
        """Every entry below the share but the driver's own METADATA_DIR (see ``index``): path -> dir, file or
        symlink. Links are listed, never followed."""

    @abc.abstractmethod
    def index(self) -> dict[str, bytes]:
        """The volume index, ``.nfs-csi/volumes``: entry name -> what the entry holds."""

    @abc.abstractmethod
    def free_bytes(self) -> int:
        """What the share's filesystem has available, as its server sees it."""

    @abc.abstractmethod
    def read(self, path: str) -> bytes:
        """The bytes of a regular file."""

    @abc.abstractmethod
    def mode(self, path: str) -> int | None:
        """Permission bits of a directory, or None where the implementation keeps none."""

    @abc.abstractmethod
    def owner(self, path: str) -> tuple[int, int]:
        """(uid, gid) of a directory (the fake's: (0, 0) until given one)."""

    @abc.abstractmethod
    def plant_dir(self, path: str) -> None:
        """Make a directory (and parents) behind the storage's back."""

    @abc.abstractmethod
    def plant_file(self, path: str, data: bytes = b"data") -> None:
        """Make a regular file behind the storage's back; skips where the implementation holds no files."""

    @abc.abstractmethod
    def plant_symlink(self, path: str) -> None:
        """Make ``path`` a link to a directory outside the share holding ``victim/data`` and the record of ``victim``."""

    def outside_state(self) -> dict[str, bytes | str]:
        """A snapshot of what lies outside the share, to prove it was not touched."""
        return {}

    def leftovers(self) -> list[str]:
        """Temporary files a storage operation left behind."""
        return [path for path in self.tree() if ".tmp" in posixpath.basename(path)]


class DiskExport(ExportView):
    """A real directory: the export behind the stand-in, or ganesha's FSAL_VFS export."""

    def __init__(self, root: Path, outside: Path) -> None:
        self.root = root
        self.outside = outside
        (outside / "victim").mkdir(parents=True, exist_ok=True)
        (outside / "victim" / "data").write_bytes(b"keep")
        (outside / ".victim.nfs-csi.json").write_bytes(b'{"name": "not-yours", "capacity_bytes": 1}')

    def tree(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for top, dirs, files in os.walk(self.root, followlinks=False):
            base = os.path.relpath(top, self.root)
            if base == "." and METADATA_DIR in dirs:
                dirs.remove(METADATA_DIR)
            for name in dirs + files:
                path = os.path.normpath(os.path.join(base, name))
                mode = os.lstat(os.path.join(top, name)).st_mode
                kinds = ((stat.S_ISLNK, SYMLINK), (stat.S_ISDIR, DIR), (stat.S_ISFIFO, FIFO))
                found[path] = next((kind for test, kind in kinds if test(mode)), FILE)
        return found

    def read(self, path: str) -> bytes:
        fd = os.open(self.root / path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def index(self) -> dict[str, bytes]:
        directory = self.root / METADATA_DIR / "volumes"
        return {entry.name: entry.read_bytes() for entry in directory.iterdir()} if directory.is_dir() else {}

    def free_bytes(self) -> int:
        info = os.statvfs(self.root)
        return info.f_bavail * info.f_frsize

    def mode(self, path: str) -> int | None:
        return stat.S_IMODE(os.lstat(self.root / path).st_mode)

    def owner(self, path: str) -> tuple[int, int]:
        info = os.lstat(self.root / path)
        return info.st_uid, info.st_gid

    def plant_dir(self, path: str) -> None:
        (self.root / path).mkdir(parents=True, exist_ok=True)

    def plant_file(self, path: str, data: bytes = b"data") -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_bytes(data)

    def plant_symlink(self, path: str) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).symlink_to(self.outside)

    def plant_fifo(self, path: str) -> None:
        """A FIFO no one writes to: opening it to read without O_NONBLOCK would wait forever."""
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.root / path)

    def outside_state(self) -> dict[str, bytes | str]:
        state: dict[str, bytes | str] = {}
        for top, dirs, files in os.walk(self.outside):
            for name in dirs:
                state[os.path.join(top, name)] = "dir"
            for name in files:
                state[os.path.join(top, name)] = Path(top, name).read_bytes()
        return state


class FakeExport(ExportView):
    """The fake's state, laid out as a disk would hold it: directories, and each record as a file beside its directory."""

    def __init__(self, fake: FakeShareStorage, share: ShareRef) -> None:
        self.fake = fake
        self.share = share

    def tree(self) -> dict[str, str]:
        found = {path: DIR for (share, path) in self.fake.dirs if share == self.share}
        for share, subdir in self.fake.records:
            if share == self.share:
                found[record_path(subdir)] = FILE
        return found

    def index(self) -> dict[str, bytes]:
        return {
            hashlib.sha256(subdir.encode()).hexdigest(): subdir.encode()
            for share, subdir in self.fake.index
            if share == self.share
        }

    def free_bytes(self) -> int:
        return self.fake.free.setdefault(self.share, 5 << 30)

    def read(self, path: str) -> bytes:
        for (share, subdir), record in self.fake.records.items():
            if share == self.share and record_path(subdir) == path:
                return record.to_json()
        raise FileNotFoundError(path)

    def mode(self, path: str) -> int | None:
        return self.fake.dirs[(self.share, path)]

    def owner(self, path: str) -> tuple[int, int]:
        return self.fake.owners.get((self.share, path), (0, 0))

    def plant_dir(self, path: str) -> None:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            self.fake.dirs.setdefault((self.share, "/".join(parts[:depth])), None)

    def plant_file(self, path: str, data: bytes = b"data") -> None:
        raise AssertionError("on_disk_only cases are deselected for the fake")

    def plant_symlink(self, path: str) -> None:
        raise AssertionError("on_disk_only cases are deselected for the fake")
