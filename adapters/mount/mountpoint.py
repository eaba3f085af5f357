"""Is this one path a mount point? Asked of the kernel about that path alone, never entering what is mounted there."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Any

from adapters.mount.mountinfo import MountTable

log = logging.getLogger(__name__)

SYS_OPENAT2 = 437  # the same number on every architecture (the unified syscall table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
_PARENT = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_NAME = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP)


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

    The parent is on the node's own disk for every path kubelet hands over; a path inside another mount whose
    server is dead can still block its walk, so callers run these in a bounded thread.
    """

    def __init__(self, table: MountTable, kernel: bool = True) -> None:
        self._table = table
        self._syscall = _libc_syscall() if kernel else None

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
            answer = self._lookup(parent_fd, name)
        finally:
            os.close(parent_fd)
        if answer is None:
            return self._table.count(self.resolved(path)) > 0
        return answer

    def _lookup(self, parent_fd: int, name: str) -> bool | None:
        """True: name is a mount point; False: it is not; None: openat2 cannot say (ask the table)."""
        assert self._syscall is not None
        how = _OpenHow(_NAME, 0, RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        encoded = os.fsencode(name)
        fd = self._syscall(SYS_OPENAT2, parent_fd, encoded, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            os.close(fd)
            return False
        code = ctypes.get_errno()
        if code == errno.EXDEV:
            return True
        if code in _NOT_THERE:
            return False
        if code in (errno.ENOSYS, errno.EPERM):
            log.warning("openat2 is not available here (%s): mount points are looked up in the mount table",
                        os.strerror(code))
            self._syscall = None
        elif code == errno.EINTR:
            return self._lookup(parent_fd, name)
        return None

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
