"""HeldShares: idle shares are let go, the least recently used first past the cap, never one a call still uses."""

from __future__ import annotations

from typing import Iterator

import pytest

from adapters.storage.held import HeldShares
from domain.model import ShareRef
from tests.fakes import FakeClock

IDLE = 300.0


def share(n: int) -> ShareRef:
    return ShareRef("nfs.example", f"/exports/s{n}")


class Released:
    def __init__(self) -> None:
        self.shares: list[tuple[ShareRef, str]] = []

    def __call__(self, share: ShareRef, handle: str) -> None:
        self.shares.append((share, handle))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def released() -> Released:
    return Released()


@pytest.fixture
def held(clock: FakeClock, released: Released) -> Iterator[HeldShares[str]]:
    shares: HeldShares[str] = HeldShares(clock, released, IDLE, max_held=4, what="share mount")
    yield shares
    shares.close()


def reach(held: HeldShares[str], n: int) -> None:
    """A call reaches share n, holds it, and ends."""
    with held.using(share(n)):
        if held.handle(share(n)) is None:
            held.hold(share(n), f"mount-{n}")


class TestIdleRelease:
    def test_a_share_is_released_once_idle_for_the_timeout_and_not_before(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        reach(held, 1)
        clock.advance(IDLE - 1)
        assert held.release_idle() == 0 and held.held() == 1
        reach(held, 1)  # used again: idle from now
        clock.advance(IDLE - 1)
        assert held.release_idle() == 0
        clock.advance(1)
        assert held.release_idle() == 1
        assert (held.held(), released.shares, held.handle(share(1))) == (0, [(share(1), "mount-1")], None)

    def test_a_share_a_call_uses_is_never_released_however_long_it_takes(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        held.acquire(share(1))
        held.hold(share(1), "mount-1")
        clock.advance(IDLE * 10)
        assert held.release_idle() == 0 and held.handle(share(1)) == "mount-1"
        held.release(share(1))  # the call (or the work it handed its use to) ends: idle from now
        assert held.release_idle() == 0
        clock.advance(IDLE)
        assert held.release_idle() == 1 and released.shares == [(share(1), "mount-1")]

    def test_a_share_being_reached_or_released_by_another_call_is_left_for_the_next_round(
        self, held: HeldShares[str], clock: FakeClock
    ) -> None:
        reach(held, 1)
        clock.advance(IDLE)
        with held.lock(share(1)):
            assert held.release_idle() == 0
        assert held.release_idle() == 1

    def test_after_a_release_the_next_call_reaches_the_share_afresh(self, held: HeldShares[str], clock: FakeClock) -> None:
        reach(held, 1)
        clock.advance(IDLE)
        held.release_idle()
        with held.using(share(1)):
            assert held.handle(share(1)) is None  # so the caller mounts (connects) again
            held.hold(share(1), "mount-1 again")
        assert held.held() == 1


class TestMostHeld:
    def test_past_the_cap_the_least_recently_used_idle_shares_go_at_once(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        for n in range(6):
            reach(held, n)
            clock.advance(1)
        reach(held, 0)  # used again: now the most recent
        assert held.release_idle() == 2
        assert [s for s, _ in released.shares] == [share(1), share(2)] and held.held() == 4

    def test_shares_in_use_are_kept_past_the_cap_and_go_when_their_calls_end(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        for n in range(6):
            held.acquire(share(n))
            held.hold(share(n), f"mount-{n}")
        assert held.release_idle() == 0 and held.held() == 6  # every one in use: more held, for now
        for n in range(6):
            held.release(share(n))
            clock.advance(1)
        assert held.release_idle() == 2 and [s for s, _ in released.shares] == [share(0), share(1)]

    def test_fifty_shares_asked_about_then_left_idle_are_all_released(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        for n in range(50):
            reach(held, n)
            held.release_idle()
            assert held.held() <= 4
        clock.advance(IDLE)
        held.release_idle()
        assert held.held() == 0 and sorted(h for _, h in released.shares) == sorted(f"mount-{n}" for n in range(50))


class TestBrokenAndClosed:
    def test_a_handle_forgotten_by_its_owner_is_not_released_again(
        self, held: HeldShares[str], clock: FakeClock, released: Released
    ) -> None:
        reach(held, 1)
        assert not held.forget(share(1), "another mount")
        assert held.forget(share(1), "mount-1") and held.held() == 0
        clock.advance(IDLE)
        assert held.release_idle() == 0 and released.shares == []

    def test_close_hands_over_every_share_held_even_in_use(self, held: HeldShares[str]) -> None:
        reach(held, 1)
        held.acquire(share(2))
        held.hold(share(2), "mount-2")
        assert sorted(held.close(), key=lambda pair: pair[1]) == [(share(1), "mount-1"), (share(2), "mount-2")]
        held.release(share(2))  # a call ending after shutdown began
        assert held.held() == 0

    @pytest.mark.parametrize("idle, most", [(-1.0, 4), (IDLE, 0)])
    def test_a_negative_timeout_or_no_share_at_all_is_refused(self, clock: FakeClock, idle: float, most: int) -> None:
        with pytest.raises(ValueError):
            HeldShares(clock, Released(), idle, most, "share mount")
