"""HeldShares: the shares a file system holds open (a mount, an NFS client), who uses each now, and which to let go."""

from __future__ import annotations

import contextlib
import logging
import threading
import zlib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from domain.model import ShareRef
from ports.clock import Clock

log = logging.getLogger(__name__)

H = TypeVar("H")
LOCK_STRIPES = 64


@dataclass
class _Entry(Generic[H]):
    handle: H | None  # None while it is being reached (or after it was dropped) by a call that still uses it
    users: int
    last_used: float  # the clock's monotonic seconds when the last call using it began or ended


class HeldShares(Generic[H]):
    """Each share a technology holds open (its handle: a mount point, a client), the calls using it now, and when it
    was last used. A share no call has used for ``idle_timeout`` seconds is released (``release``: unmount,
    disconnect), and while more than ``max_held`` are held the least recently used idle ones go at once. A share in
    use is never released: a call uses it from before it is reached until its work ends (``acquire``/``release``;
    the file systems hand a call's use to its work when the work outlives the call), so a burst of calls on more
    shares than ``max_held`` holds more for as long as they run, and the excess goes when they end. Refusing them
    instead would fail calls that a moment later succeed, while the overshoot is bounded anyway: each of the
    --workers calls in flight uses at most two shares (a clone's source and its destination).

    A background thread (one, and only while a share is held) releases idle shares; time comes from the injected
    clock, so tests call ``release_idle`` after moving a fake clock instead of sleeping.
    """

    def __init__(
        self, clock: Clock, release: Callable[[ShareRef, H], None], idle_timeout: float, max_held: int, what: str
    ) -> None:
        if idle_timeout < 0 or max_held < 1:
            raise ValueError("the idle timeout must not be negative, and at least one share must be held")
        self._clock = clock
        self._release = release
        self._idle_timeout = idle_timeout
        self._max_held = max_held
        self._what = what  # "share mount", "NFS client": for the log
        self._interval = min(max(idle_timeout / 4, 0.05), 30.0)
        self._guard = threading.Lock()
        self._entries: dict[ShareRef, _Entry[H]] = {}
        # Striped, so no lock per share is kept forever: mounting or connecting a share, and releasing it.
        self._locks = tuple(threading.Lock() for _ in range(LOCK_STRIPES))
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None
        self._closed = False

    def lock(self, share: ShareRef) -> threading.Lock:
        """The lock held while the share is reached (mounted, connected) or released: one of either at a time."""
        return self._locks[zlib.crc32(share.source().encode("utf-8", errors="surrogatepass")) % LOCK_STRIPES]

    def acquire(self, share: ShareRef) -> None:
        """A call begins to use the share: it is not released until the matching ``release``."""
        with self._guard:
            entry = self._entries.get(share)
            if entry is None:
                self._entries[share] = _Entry(None, 1, self._clock.monotonic())
            else:
                entry.users += 1
                entry.last_used = self._clock.monotonic()

    def release(self, share: ShareRef) -> None:
        """A call stopped using the share; it stays held until idle for long enough, or until too many are held."""
        with self._guard:
            entry = self._entries.get(share)
            if entry is None:  # closed meanwhile: everything was let go
                return
            entry.users -= 1
            entry.last_used = self._clock.monotonic()
            if not entry.users and entry.handle is None:
                del self._entries[share]
            elif not entry.users and (self._held() > self._max_held or not self._idle_timeout):
                self._wake.set()

    @contextlib.contextmanager
    def using(self, *shares: ShareRef) -> Iterator[None]:
        for share in shares:
            self.acquire(share)
        try:
            yield
        finally:
            for share in shares:
                self.release(share)

    def handle(self, share: ShareRef) -> H | None:
        with self._guard:
            entry = self._entries.get(share)
            return None if entry is None else entry.handle

    def hold(self, share: ShareRef, handle: H) -> None:
        """The share was reached by a call using it: keep its handle, and start the thread that lets go of it."""
        with self._guard:
            entry = self._entries.setdefault(share, _Entry(None, 0, self._clock.monotonic()))
            entry.handle = handle
            if self._held() > self._max_held:
                self._wake.set()
            if self._reaper is None and not self._closed:
                self._reaper = threading.Thread(target=self._reap, name="held-shares", daemon=True)
                self._reaper.start()

    def forget(self, share: ShareRef, handle: H) -> bool:
        """The handle broke (a stale mount, a lost connection) and was let go by its owner; whether it was held."""
        with self._guard:
            entry = self._entries.get(share)
            if entry is None or entry.handle != handle:
                return False
            entry.handle = None
            if not entry.users:
                del self._entries[share]
            return True

    def held(self) -> int:
        with self._guard:
            return self._held()

    def _held(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.handle is not None)

    def release_idle(self) -> int:
        """Release every share idle for the timeout, then the least recently used idle ones over the cap; how many.
        A share being reached or released by another call (its lock taken) is left for the next round."""
        now = self._clock.monotonic()
        taken: list[tuple[ShareRef, H, threading.Lock]] = []
        with self._guard:
            idle = sorted(
                ((entry.last_used, share) for share, entry in self._entries.items() if entry.handle is not None and not entry.users),
                key=lambda pair: pair[0],
            )
            over = self._held() - self._max_held
            for last_used, share in idle:
                if now - last_used < self._idle_timeout and over <= 0:
                    continue
                lock = self.lock(share)
                if not lock.acquire(blocking=False):
                    continue
                handle = self._entries.pop(share).handle
                assert handle is not None
                taken.append((share, handle, lock))
                over -= 1
        for share, handle, lock in taken:
            try:
                self._release(share, handle)
                log.info("released %s %s: idle, or more than %d held", self._what, share.source(), self._max_held)
            except Exception:  # noqa: BLE001 - the others are released all the same
                log.warning("could not release %s %s", self._what, share.source(), exc_info=True)
            finally:
                lock.release()
        if taken and not self.held():
            self._wake.set()  # the background thread ends at once: nothing is left to let go of
        return len(taken)

    def _reap(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.release_idle()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad round
                log.exception("releasing idle %ss failed", self._what)
            with self._guard:
                if not self._held():
                    self._reaper = None  # under the guard hold() starts another with
                    return

    def close(self) -> list[tuple[ShareRef, H]]:
        """Stop letting go in the background, and hand every held share to the caller to release (at shutdown)."""
        with self._guard:
            self._closed = True
            reaper, self._reaper = self._reaper, None
            held = [(share, entry.handle) for share, entry in self._entries.items() if entry.handle is not None]
            self._entries.clear()
        self._wake.set()
        if reaper is not None:
            reaper.join(timeout=60)
        return held
