"""MountedShareStorage: mount each share once under a working directory, then work with directories there."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import threading
from contextlib import contextmanager
from typing import Iterator

from domain.errors import MountFailed
from domain.model import ShareRef, VolumeRecord
from domain.paths import join_inside
from ports.mounter import Mounter
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def record_name(leaf: str) -> str:
    """The record of volume directory ``leaf`` lives beside it under this name."""
    return f".{leaf}.nfs-csi.json"


class MountedShareStorage(ShareStorage):
    def __init__(self, mounter: Mounter, working_dir: str, mount_options: tuple[str, ...] = ()) -> None:
        self._mounter = mounter
        self._working_dir = os.path.abspath(working_dir)
        self._options = mount_options
        self._guard = threading.Lock()
        self._share_locks: dict[ShareRef, threading.Lock] = {}
        self._mounted: dict[ShareRef, str] = {}

    def shares_held(self) -> int:
        return len(self._mounted)

    def mount_point(self, share: ShareRef) -> str:
        digest = hashlib.sha256(share.source().encode()).hexdigest()[:20]
        return os.path.join(self._working_dir, digest)

    def _root(self, share: ShareRef) -> str:
        """The local path of the share, mounted on first use and reused afterwards."""
        path = self._mounted.get(share)
        if path is not None:
            return path
        with self._guard:
            lock = self._share_locks.setdefault(share, threading.Lock())
        with lock:
            if share in self._mounted:
                return self._mounted[share]
            path = self.mount_point(share)
            if not self._mounter.is_mount_point(path):
                os.makedirs(path, mode=0o700, exist_ok=True)
                self._mounter.mount(share.source(), path, self._options)
                log.info("mounted share %s at %s", share.source(), path)
            self._mounted[share] = path
            return path

    @contextmanager
    def _parent(self, share: ShareRef, subdir: str, create: bool = False) -> Iterator[tuple[int | None, str]]:
        """An fd of subdir's parent, reached without following any symbolic link, and subdir's leaf."""
        root = self._root(share)
        join_inside(root, subdir)  # lexical containment, again, at the edge
        *parents, leaf = subdir.split("/")
        fd = os.open(root, _OPEN_DIR)
        try:
            for name in parents:
                if create:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    child = os.open(name, _OPEN_DIR, dir_fd=fd)
                except FileNotFoundError:
                    os.close(fd)
                    fd = -1
                    yield None, leaf
                    return
                except OSError as err:
                    raise MountFailed(f"{name!r} on the way to {subdir!r} is not a plain directory") from err
                os.close(fd)
                fd = child
            yield fd, leaf
        finally:
            if fd >= 0:
                os.close(fd)

    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None) -> None:
        with self._parent(share, subdir, create=True) as (fd, leaf):
            assert fd is not None
            try:
                os.mkdir(leaf, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                volume_fd = os.open(leaf, _OPEN_DIR, dir_fd=fd)
            except OSError as err:
                raise MountFailed(f"{subdir!r} exists and is not a plain directory") from err
            try:
                if mode is not None:
                    os.fchmod(volume_fd, mode)
            finally:
                os.close(volume_fd)

    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        with self._parent(share, subdir) as (fd, leaf):
            if fd is None:
                return
            try:
                shutil.rmtree(leaf, dir_fd=fd)
            except FileNotFoundError:
                pass
            except NotADirectoryError as err:
                raise MountFailed(f"{subdir!r} is not a directory; refusing to remove it") from err

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        if os.path.dirname(subdir) != os.path.dirname(new_subdir):
            raise MountFailed("a volume directory is only renamed within its parent")
        with self._parent(share, subdir) as (fd, leaf):
            if fd is None:
                return
            try:
                os.rename(leaf, os.path.basename(new_subdir), src_dir_fd=fd, dst_dir_fd=fd)
            except FileNotFoundError:
                pass

    def exists(self, share: ShareRef, subdir: str) -> bool:
        with self._parent(share, subdir) as (fd, leaf):
            if fd is None:
                return False
            try:
                child = os.open(leaf, _OPEN_DIR, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return False
                raise
            os.close(child)
            return True

    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        with self._parent(share, subdir) as (fd, leaf):
            if fd is None:
                return None
            try:
                raw_fd = os.open(record_name(leaf), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                return None
            with os.fdopen(raw_fd, "rb") as handle:
                raw = handle.read(1 << 16)
        try:
            return VolumeRecord.from_json(raw)
        except (ValueError, KeyError, TypeError) as err:
            raise MountFailed(f"the record of {subdir!r} is unreadable") from err

    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        with self._parent(share, subdir, create=True) as (fd, leaf):
            assert fd is not None
            name = record_name(leaf)
            temporary = f"{name}.tmp{os.getpid()}.{threading.get_ident()}"
            raw_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
            with os.fdopen(raw_fd, "wb") as handle:
                handle.write(record.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)

    def remove_record(self, share: ShareRef, subdir: str) -> None:
        with self._parent(share, subdir) as (fd, leaf):
            if fd is None:
                return
            try:
                os.unlink(record_name(leaf), dir_fd=fd)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        with self._guard:
            mounted, self._mounted = dict(self._mounted), {}
        for share, path in mounted.items():
            try:
                self._mounter.unmount(path)
                os.rmdir(path)
                log.info("unmounted share %s from %s", share.source(), path)
            except Exception:  # noqa: BLE001 - shutdown goes on for the other shares
                log.exception("could not unmount share %s from %s", share.source(), path)
