"""How many malloc arenas the process keeps.

glibc gives a thread that allocates while another holds the main arena an arena of its own, up to eight per core,
and each keeps its freed memory. The driver runs tens of threads (gRPC workers, bounded file-system calls, mount
helpers' readers) that all run Python under one interpreter lock, so extra arenas buy no parallelism and only
hold memory: with two, RSS after the benchmark's 10,000 calls on a busy node is about 2 MiB lower (58.4 against
56.5 to 56.8 MiB, `bench/run` on the machine in the README). An operator's own ``MALLOC_ARENA_MAX`` wins.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's <malloc.h>
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Ask the C library for at most ``arenas`` arenas, before any thread starts; whether it took the setting
    (not with ``MALLOC_ARENA_MAX`` set, nor on a C library without ``mallopt``, such as musl)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(M_ARENA_MAX, arenas) == 1)
    if not taken:
        log.debug("the C library refused M_ARENA_MAX=%d", arenas)
    return taken
