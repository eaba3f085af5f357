"""Is this one path a mount point? Asked of the kernel about that path alone, never entering what is mounted there."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from collections import OrderedDict
from typing import Any

from adapters.mount.mountinfo import MountTable, TableChanges

log = logging.getLogger(__name__)

SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_CACHED = 0x20
_AT_FDCWD = -100
_PARENT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NAME = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_LOOKUP = RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)


Directory = tuple[int, int]
"""A directory as the kernel knows it: (mount id, inode number)."""


def _directory(fd: int) -> Directory | None:
    """The mount id and inode of an open directory, from procfs alone."""
    try:
        info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(info, 512)
        finally:
            os.close(info)
        fields = dict(line.split(b":", 1) for line in text.splitlines() if b":" in line)
        return int(fields[b"mnt_id"]), int(fields[b"ino"])
    except (OSError, KeyError, ValueError):
        return None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _libc_syscall() -> Any:
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return syscall


class RememberedMounts:
    """Paths last found to be mount points, kept while the namespace's mount table has not changed since.

    A poll of /proc/self/mountinfo (TableChanges) says in O(1) whether anything was mounted or unmounted: then
    everything is forgotten. An answer found before a change but stored after it is refused (its generation is
    past). What no mount or unmount changes, a renamed parent or a link pointed elsewhere, is caught by keeping
    the parent directory the path resolved to: a remembered path holds only while it still resolves to that
    very directory. (With the same parent directory and no mount or unmount since, the name is still the
    mounted one: a mount point cannot be renamed, removed or replaced.)
    """

    def __init__(self, changes: TableChanges, limit: int = 16384) -> None:
        self._changes = changes
        self._limit = limit
        self._guard = threading.Lock()
        self._generation = 0
        self._paths: OrderedDict[str, Directory] = OrderedDict()

    def _current(self) -> int:
        if self._changes.changed():
            self._generation += 1
            self._paths.clear()
        return self._generation

    def generation(self) -> int:
        """Take before asking the kernel; hand to ``remember`` with the answer."""
        with self._guard:
            return self._current()

    def has(self, path: str) -> bool:
        """Whether path may be remembered: a cheap first look, no poll of the table (a poll only forgets)."""
        with self._guard:
            return path in self._paths

    def holds(self, path: str, parent: Directory) -> bool:
        with self._guard:
            self._current()
            return self._paths.get(path) == parent

    def remember(self, path: str, parent: Directory, generation: int) -> None:
        with self._guard:
            if self._current() != generation:
                return
            self._paths[path] = parent
            while len(self._paths) > self._limit:
                self._paths.popitem(last=False)

    def forget(self, path: str) -> None:
        with self._guard:
            self._paths.pop(path, None)

    def close(self) -> None:
        with self._guard:
            self._changes.close()
            self._paths.clear()


class MountPoints:
    """Whether a path is a mount point, and the path as the kernel resolves it.

    The question goes to the kernel about that one path, at a cost that does not grow with the mounts on the
    node: the target's parent directory is opened (O_PATH, following symbolic links in the parent as every
    mount and unmount of the path does, so a relocated kubelet directory behind a link is answered where its
    mounts really are), then its last component is looked up with openat2(RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS).
    The kernel refuses a walk that would cross into another mount with EXDEV before anything of the mounted
    filesystem is asked: no revalidation of its root, no GETATTR to a server that may be dead. EXDEV is a
    mount point (any mount, a bind of the same filesystem too); an answer is not. The last component is never
    followed: a symbolic link there is answered as what it is, no mount point.

    What this cannot tell, the mount table does (``MountTable``, read only on those rare questions): how many
    mounts are stacked at a path and their source. Where openat2 is missing (a kernel before 5.6, or a seccomp
    profile that refuses it), every answer comes from the table.

    The parent is on the node's own disk for every path kubelet hands over, but a path inside another mount
    whose server is dead would block its walk, so callers run ``is_mount_point`` in a bounded thread. First
    they ask ``quick_answer``, which never blocks: the same two steps with RESOLVE_CACHED, which the kernel
    answers from its caches alone or refuses (EAGAIN) whenever any I/O or revalidation would be needed. That
    tells a path that is no mount point (before a mount, after an unmount), and a path remembered as a mount
    point (``RememberedMounts``: no mount or unmount since, same parent directory); the kernel never confirms a
    mount point from its caches, so the first answer about each one takes the bounded way.
    """

    def __init__(self, table: MountTable, changes: TableChanges | None = None, kernel: bool = True) -> None:
        self._table = table
        self._syscall = _libc_syscall() if kernel else None
        self._cached = self._syscall is not None
        self._remembered = RememberedMounts(changes or TableChanges())

    def is_mount_point(self, path: str) -> bool:
        path = os.path.normpath(path)
        parent, name = os.path.split(path)
        if self._syscall is None or not name:
            return self._table.count(self.resolved(path)) > 0
        try:
            parent_fd = os.open(parent, _PARENT)
        except OSError as err:
            if err.errno in _NOT_THERE:
                return False
            return self._table.count(path) > 0
        try:
            code = self._exists(parent_fd, name, _LOOKUP)
        finally:
            os.close(parent_fd)
        if code == 0 or code in _NOT_THERE:
            return False
        if code == errno.EXDEV:
            return True
        if code in (errno.ENOSYS, errno.EPERM):
            log.warning("openat2 is not available here (%s): mount points are looked up in the mount table",
                        os.strerror(code))
            self._syscall = None
        return self._table.count(self.resolved(path)) > 0

    def quick_answer(self, path: str) -> tuple[bool | None, Directory | None]:
        """(False, None), or (True, parent), when the kernel's caches and what is remembered tell; else (None, the
        parent directory path resolves to, for ``remember``, when the caches hold the way to it).

        Never blocks, whatever is mounted on the way: RESOLVE_CACHED makes the kernel refuse any walk that
        would need I/O or a revalidation, and the directory's identity comes from /proc/self/fdinfo, never from
        its filesystem.
        """
        if not self._cached or self._syscall is None:
            return None, None
        path = os.path.normpath(path)
        parent, name = os.path.split(path)
        if not name:
            return None, None
        parent_fd, code = self._openat2(_AT_FDCWD, parent, _PARENT, RESOLVE_CACHED)
        if parent_fd < 0:
            if code == errno.EINVAL:  # a kernel before 5.12: no RESOLVE_CACHED
                self._cached = False
            return (False, None) if code in _NOT_THERE else (None, None)
        try:
            # The parent's identity (three system calls on procfs) only when it is needed: to check a remembered
            # mount point, or to remember one the bounded lookup finds. A plain "no" needs none.
            directory = _directory(parent_fd) if self._remembered.has(path) else None
            if directory is not None and self._remembered.holds(path, directory):
                return True, directory
            code = self._exists(parent_fd, name, _LOOKUP | RESOLVE_CACHED)
            if code == 0 or code in _NOT_THERE:
                self._remembered.forget(path)
                return False, None
            return None, directory or _directory(parent_fd)
        finally:
            os.close(parent_fd)

    def generation(self) -> int:
        """Take before a bounded ``is_mount_point``; hand to ``remember`` with a yes."""
        return self._remembered.generation()

    def remember(self, path: str, parent: Directory, generation: int) -> None:
        self._remembered.remember(os.path.normpath(path), parent, generation)

    def close(self) -> None:
        self._remembered.close()

    def _openat2(self, dirfd: int, name: str, flags: int, resolve: int) -> tuple[int, int]:
        """(fd, 0) when name opens, else (-1, errno)."""
        assert self._syscall is not None
        how = _OpenHow(flags, 0, resolve)
        encoded = os.fsencode(name)
        while True:
            fd = self._syscall(SYS_OPENAT2, dirfd, encoded, ctypes.byref(how), ctypes.sizeof(how))
            if fd >= 0:
                return fd, 0
            code = ctypes.get_errno()
            if code != errno.EINTR:
                return -1, code

    def _exists(self, dirfd: int, name: str, resolve: int) -> int:
        """0 when name opens without crossing a mount (no mount point), else the errno."""
        fd, code = self._openat2(dirfd, name, _NAME, resolve)
        if fd >= 0:
            os.close(fd)
        return code

    def resolved(self, path: str) -> str:
        """path with its parent's symbolic links resolved, as the mount table spells it; path itself when its
        parent cannot be opened."""
        path = os.path.normpath(path)
        parent, name = os.path.split(path)
        if not name:
            return path
        try:
            parent_fd = os.open(parent, _PARENT)
        except OSError:
            return path
        try:
            real = os.readlink(f"/proc/self/fd/{parent_fd}")
        except OSError:
            return path
        finally:
            os.close(parent_fd)
        if not real.startswith("/") or real.endswith(" (deleted)"):
            return path
        return os.path.join(real, name)
