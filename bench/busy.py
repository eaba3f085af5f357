"""A busy node: N tmpfs mounts in the benchmark's private namespace, as kubelet makes one per secret and projected volume."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2


class BusyMounts:
    """Mounts made with the mount system call itself (no helper process), so that a few thousand take a second.

    They live below ``directory``, in the namespace the benchmark and the driver share, and are all unmounted by
    ``down``; what the benchmark leaves behind dies with its namespace anyway.
    """

    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = count
        self.mounted: list[Path] = []
        self._libc = ctypes.CDLL(None, use_errno=True)

    def up(self) -> float:
        """Mount them all; the seconds it took."""
        began = time.perf_counter()
        for i in range(len(self.mounted), self.count):
            path = self.directory / str(i)
            path.mkdir(parents=True, exist_ok=True)
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            if self._libc.mount(b"bench-busy", os.fsencode(path), b"tmpfs", flags, b"size=4k,mode=0755") != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"mount tmpfs at {path}: {os.strerror(code)}")
            self.mounted.append(path)
        return time.perf_counter() - began

    def down(self) -> None:
        while self.mounted:
            path = self.mounted.pop()
            if self._libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"umount {path}: {os.strerror(code)}")


def mounts_in_namespace() -> int:
    with open("/proc/self/mountinfo", "rb") as handle:
        return handle.read().count(b"\n")
