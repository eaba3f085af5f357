"""TreeWalker: a published volume's bytes and inodes, from walks of its tree in the background, bounded and kept."""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from domain.model import TreeUsage
from ports.usage import UsageMeter

log = logging.getLogger(__name__)

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PACE_EVERY = 256  # entries between looks at the clock (pace, deadline, stop)


@dataclass(frozen=True)
class WalkLimits:
    """How often a tree is walked again, and the bounds of one walk (``--volume-usage-*``)."""

    interval: float = 300.0  # a measure older than this is walked again when asked for
    timeout: float = 120.0  # a walk stops after this long and keeps what it counted
    max_entries: int = 1_000_000  # ... or after this many entries
    rate: float = 10_000.0  # entries a second, at most, each walk (each is an lstat, to a server over NFS)
    max_depth: int = 128  # directories deeper than this are not entered (each level holds a descriptor)
    first_wait: float = 1.0  # how long a first ask waits for the first walk

    def __post_init__(self) -> None:
        if min(self.interval, self.timeout, self.rate, self.first_wait) <= 0 or min(self.max_entries, self.max_depth) < 1:
            raise ValueError("volume usage limits must be positive")


@dataclass(frozen=True)
class Walked:
    used_bytes: int
    used_inodes: int
    complete: bool
    entries: int


class UsageObserver:
    """Where walks are reported (metrics); does nothing by default."""

    def walk(self, result: str, seconds: float) -> None:
        """One walk ended: ``complete``, ``limited`` (stopped at a bound: its figures a lower bound) or ``failed``."""


class _Stop(Exception):
    """A walk reached one of its bounds, or the walker is closing."""


def walk_tree(
    path: str,
    limits: WalkLimits,
    stop: threading.Event,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Walked:
    """Bytes allocated (st_blocks, as du counts them) and inodes below the directory at path, path included.

    Never follows a link (every directory opened with O_NOFOLLOW from its parent's descriptor), never leaves the
    filesystem (a mount inside is neither counted nor entered), counts a file of many links once, and skips what
    it may not read (root squashing). It stops, keeping what it counted, at ``limits`` (time, entries, depth) or
    when ``stop`` is set; it keeps to ``limits.rate`` entries a second, sleeping between batches.
    """
    started = clock()
    deadline = started + limits.timeout
    root = os.open(path, _DIRECTORY)
    opened = [root]
    try:
        top = os.fstat(root)
        counted = {"bytes": top.st_blocks * 512, "inodes": 1, "entries": 0}
        linked: set[int] = set()
        complete = True

        def pace() -> None:
            counted["entries"] += 1
            entries = counted["entries"]
            if entries > limits.max_entries:
                raise _Stop
            if entries % _PACE_EVERY:
                return
            now = clock()
            if stop.is_set() or now > deadline:
                raise _Stop
            ahead = started + entries / limits.rate - now
            if ahead > 0:
                sleep(min(ahead, deadline - now))

        def scan(fd: int) -> list[str]:
            """Count a directory's entries; the names of its subdirectories, to enter."""
            below = []
            with os.scandir(fd) as found:
                for entry in found:
                    pace()
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # gone since it was listed
                    if info.st_dev != top.st_dev:
                        continue  # another filesystem mounted inside: not the volume's
                    if stat.S_ISDIR(info.st_mode):
                        below.append(entry.name)
                    elif info.st_nlink > 1:
                        if info.st_ino in linked:
                            continue
                        linked.add(info.st_ino)
                    counted["bytes"] += info.st_blocks * 512
                    counted["inodes"] += 1
            return below

        pending = [scan(root)]
        try:
            while pending:
                if not pending[-1]:
                    pending.pop()
                    os.close(opened.pop())
                    continue
                name = pending[-1].pop()
                if len(pending) >= limits.max_depth:
                    complete = False
                    continue
                try:
                    child = os.open(name, _DIRECTORY, dir_fd=opened[-1])
                except OSError as err:
                    if err.errno in (errno.EACCES, errno.EPERM):
                        complete = False  # a directory this node may not read (root squashed): a lower bound
                    elif err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise  # ESTALE, EIO, ...: the walk failed
                    continue  # gone, or swapped for a link or a file since it was listed
                opened.append(child)
                try:
                    pending.append(scan(child))
                except PermissionError:
                    complete = False
                    pending.append([])
        except _Stop:
            complete = False
        return Walked(counted["bytes"], counted["inodes"], complete, counted["entries"])
    finally:
        for fd in opened:
            os.close(fd)


@dataclass
class _Tree:
    path: str
    server: str
    capacity: int
    asked: float
    measured: Walked | None = None
    measured_at: float = 0.0
    walking: bool = False
    first: threading.Event = field(default_factory=threading.Event)


class TreeWalker(UsageMeter):
    """Walks on threads of their own: one per server with walks waiting (so a hung server holds only its own, and a
    walk stuck in its kernel never delays another server's), ending when idle, at most MAX_SERVERS. Measures are
    kept for REMEMBERED trees, the least recently asked for dropped first."""

    REMEMBERED = 4096
    MAX_SERVERS = 64
    IDLE = 60.0  # a server's thread ends after this long with nothing to walk
    COUNTED_FOR = 600.0  # a volume not asked about for this long (unpublished: kubelet asks each minute) is not counted

    def __init__(
        self, limits: WalkLimits = WalkLimits(), observer: UsageObserver = UsageObserver(),
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limits = limits
        self._observer = observer
        self._clock = clock
        self._sleep = sleep
        self._guard = threading.Lock()
        self._work = threading.Condition(self._guard)
        self._trees: OrderedDict[str, _Tree] = OrderedDict()
        self._queues: dict[str, deque[str]] = {}  # server -> keys waiting; a server here has a thread
        self._stop = threading.Event()
        self._warned_full = False

    def usage(self, key: str, path: str, server: str, capacity_bytes: int) -> TreeUsage | None:
        now = self._clock()
        with self._guard:
            tree = self._trees.get(key)
            if tree is None:
                tree = self._trees[key] = _Tree(path, server, capacity_bytes, now)
                self._evict()
            tree.path, tree.server, tree.capacity, tree.asked = path, server, capacity_bytes, now
            self._trees.move_to_end(key)
            if not tree.walking and (tree.measured is None or now - tree.measured_at >= self._limits.interval):
                self._queue(key, tree)
            first = tree.first
        if tree.measured is None:
            first.wait(self._limits.first_wait)
        with self._guard:
            measured, at = tree.measured, tree.measured_at
        if measured is None:
            return None
        return TreeUsage(measured.used_bytes, measured.used_inodes, max(0.0, self._clock() - at), measured.complete)

    def filled(self, at_least: float) -> int:
        """How many volumes asked about lately have used at least this share of their capacity."""
        now = self._clock()
        with self._guard:
            return sum(
                1
                for tree in self._trees.values()
                if tree.measured is not None and tree.capacity > 0 and now - tree.asked < self.COUNTED_FOR
                and tree.measured.used_bytes >= at_least * tree.capacity
            )

    def _evict(self) -> None:
        while len(self._trees) > self.REMEMBERED:
            oldest = next((k for k, t in self._trees.items() if not t.walking), None)
            if oldest is None:
                return
            del self._trees[oldest]

    def _queue(self, key: str, tree: _Tree) -> None:
        """With the guard held: the walk waits its server's turn; a server without a thread gets one."""
        waiting = self._queues.get(tree.server)
        if waiting is None:
            if len(self._queues) >= self.MAX_SERVERS:
                if not self._warned_full:
                    log.warning("volume usage: %d servers are being walked; %s waits", self.MAX_SERVERS, tree.server)
                    self._warned_full = True
                return
            waiting = self._queues[tree.server] = deque()
            threading.Thread(target=self._serve, args=(tree.server,), name=f"usage-{tree.server[:20]}", daemon=True).start()
        tree.walking = True
        waiting.append(key)
        self._work.notify_all()

    def _serve(self, server: str) -> None:
        while True:
            with self._guard:
                waiting = self._queues[server]
                idle_until = time.monotonic() + self.IDLE
                while not waiting and not self._stop.is_set() and time.monotonic() < idle_until:
                    self._work.wait(idle_until - time.monotonic())
                if not waiting or self._stop.is_set():
                    del self._queues[server]
                    for key in waiting:
                        if key in self._trees:
                            self._trees[key].walking = False
                    return
                key = waiting.popleft()
                tree = self._trees.get(key)
                path = tree.path if tree is not None else ""
            if tree is not None:
                self._walk(key, tree, path)

    def _walk(self, key: str, tree: _Tree, path: str) -> None:
        log.debug("volume usage: walking %s (server %s)", path, tree.server)
        started = self._clock()
        try:
            walked: Walked | None = walk_tree(path, self._limits, self._stop, self._clock, self._sleep)
        except OSError as err:
            walked = None
            log.info("volume usage: the walk of %s failed: %s", path, err.strerror or err)
        except Exception:  # noqa: BLE001 - the server's thread must go on with the next walk
            walked = None
            log.exception("volume usage: the walk of %s failed", path)
        self._observer.walk("failed" if walked is None else "complete" if walked.complete else "limited",
                            self._clock() - started)  # fmt: skip
        with self._guard:
            tree.walking = False
            if walked is not None:
                tree.measured, tree.measured_at = walked, self._clock()
        tree.first.set()

    def close(self) -> None:
        self._stop.set()
        with self._guard:
            self._work.notify_all()
