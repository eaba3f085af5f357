"""Walking a volume's tree for its usage: what is counted, the bounds of a walk, and the walker's keeping of it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from adapters.usage.walker import TreeWalker, UsageObserver, WalkLimits, walk_tree
from tests.conftest import ROOT

NEVER = threading.Event()


class Ticks:
    """A clock that moves only when told, and a sleep that moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def blocks(path: Path) -> int:
    return path.lstat().st_blocks * 512


def tree(root: Path, files: int = 0, size: int = 0) -> Path:
    root.mkdir()
    (root / "a" / "b").mkdir(parents=True)
    for i in range(files):
        (root / "a" / f"f{i}").write_bytes(b"x" * size)
    return root


class TestWalkTree:
    def test_counts_allocated_bytes_and_inodes_of_everything_below_and_itself(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v")
        (root / "a" / "data").write_bytes(os.urandom(3 << 20))
        (root / "link").symlink_to("/etc")  # counted as itself, never followed
        walked = walk_tree(str(root), WalkLimits(), NEVER)
        paths = [root, root / "a", root / "a" / "b", root / "a" / "data", root / "link"]
        assert walked.used_inodes == 5 and walked.complete
        assert walked.used_bytes == sum(blocks(p) for p in paths) >= 3 << 20

    def test_a_file_of_many_links_counts_once(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v")
        (root / "a" / "data").write_bytes(os.urandom(1 << 20))
        os.link(root / "a" / "data", root / "a" / "b" / "again")
        walked = walk_tree(str(root), WalkLimits(), NEVER)
        assert walked.used_inodes == 4 and walked.used_bytes < 2 << 20

    def test_stops_at_its_entry_limit_with_a_lower_bound(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v", files=50)
        walked = walk_tree(str(root), WalkLimits(max_entries=10), NEVER)
        assert not walked.complete and walked.entries == 11 and walked.used_inodes <= 11

    def test_stops_at_its_time_limit(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v", files=600)
        ticks = Ticks()

        def slow_clock() -> float:
            ticks.now += 0.01  # each look at the clock: 10 ms later
            return ticks.now

        walked = walk_tree(str(root), WalkLimits(timeout=0.015, rate=1e9), NEVER, slow_clock, ticks.sleep)
        assert not walked.complete and walked.entries < 600

    def test_keeps_to_its_pace_by_sleeping_between_batches(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v", files=1000)
        ticks = Ticks()
        walked = walk_tree(str(root), WalkLimits(rate=100, timeout=1e6), NEVER, ticks, ticks.sleep)
        assert walked.complete and walked.entries == 1002
        # paced at 100 entries a second, looked at each 256 entries: 768 entries' worth of time by the last look
        assert sum(ticks.slept) == pytest.approx(768 / 100) and len(ticks.slept) == 3

    def test_does_not_enter_directories_deeper_than_its_limit(self, tmp_path: Path) -> None:
        root = tmp_path / "v"
        (root / "1" / "2" / "3" / "4").mkdir(parents=True)
        walked = walk_tree(str(root), WalkLimits(max_depth=2), NEVER)
        assert not walked.complete and walked.used_inodes == 3  # v, 1, 2

    def test_stops_when_asked_to(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v", files=600)
        stop = threading.Event()
        stop.set()
        assert not walk_tree(str(root), WalkLimits(), stop).complete

    def test_a_missing_tree_fails(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            walk_tree(str(tmp_path / "gone"), WalkLimits(), NEVER)

    def test_a_directory_it_may_not_read_is_skipped_and_the_figures_are_a_lower_bound(self) -> None:
        # As a squashed root is on an NFS server: an identity that may not read one directory of the volume
        with tempfile.TemporaryDirectory() as top:
            os.chmod(top, 0o755)
            root = tree(Path(top) / "v")
            (root / "a" / "b" / "inside").mkdir()
            (root / "a" / "b").chmod(0o700)
            probe = (
                "import sys, threading; from adapters.usage.walker import WalkLimits, walk_tree; "
                f"w = walk_tree({str(root)!r}, WalkLimits(), threading.Event()); print(w.complete, w.used_inodes)"
            )
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
            done = subprocess.run(
                [*as_nobody, sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
            )
        assert done.stdout.split() == ["False", "3"], done.stderr  # v, a and b counted; b's content not read


class Recorder(UsageObserver):
    def __init__(self) -> None:
        self.walks: list[str] = []

    def walk(self, result: str, seconds: float) -> None:
        self.walks.append(result)


def wait_for(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TestTreeWalker:
    def test_a_first_ask_waits_for_the_first_walk_and_later_asks_answer_from_what_was_kept(self, tmp_path: Path) -> None:
        root = tree(tmp_path / "v")
        ticks, seen = Ticks(), Recorder()
        walker = TreeWalker(WalkLimits(interval=300), seen, clock=ticks)
        try:
            first = walker.usage("vol", str(root), "nfs.example", 1 << 30)
            assert first is not None and first.used_inodes == 3 and first.age_seconds == 0
            (root / "data").write_bytes(os.urandom(1 << 20))
            ticks.now += 100
            kept = walker.usage("vol", str(root), "nfs.example", 1 << 30)
            assert kept is not None and kept.used_inodes == 3 and kept.age_seconds == 100  # not walked again yet
            assert seen.walks == ["complete"]
            # once the figures are older than the interval, an ask starts a walk and answers what was kept
            ticks.now += 200
            walker.usage("vol", str(root), "nfs.example", 1 << 30)
            wait_for(lambda: seen.walks == ["complete", "complete"])
            fresh = walker.usage("vol", str(root), "nfs.example", 1 << 30)
            assert fresh is not None and fresh.used_inodes == 4 and fresh.age_seconds == 0
        finally:
            walker.close()

    def test_a_tree_that_cannot_be_walked_has_no_figures(self, tmp_path: Path) -> None:
        seen = Recorder()
        walker = TreeWalker(WalkLimits(), seen)
        try:
            assert walker.usage("vol", str(tmp_path / "gone"), "nfs.example", 1 << 30) is None
            assert seen.walks == ["failed"]
        finally:
            walker.close()

    def test_volumes_are_counted_by_how_full_they_are_and_forgotten_when_no_longer_asked_about(
        self, tmp_path: Path
    ) -> None:
        ticks = Ticks()
        walker = TreeWalker(WalkLimits(), clock=ticks)
        try:
            for name, size in (("empty", 0), ("half", 512 << 10), ("full", 1 << 20)):
                root = tmp_path / name
                root.mkdir()
                if size:
                    (root / "data").write_bytes(os.urandom(size))
                assert walker.usage(name, str(root), "nfs.example", 1 << 20) is not None
            assert (walker.filled(0.4), walker.filled(0.9), walker.filled(1.0)) == (2, 1, 1)
            ticks.now += TreeWalker.COUNTED_FOR
            assert walker.filled(0.4) == 0
        finally:
            walker.close()

    def test_a_hung_servers_walk_holds_only_its_own_thread(self, tmp_path: Path) -> None:
        # Given a walk of one server stuck (its pace sleep never returns, as a stat of a dead server would not)
        stuck, release = threading.Event(), threading.Event()

        def sleep(seconds: float) -> None:
            stuck.set()
            release.wait(30)

        hung = tree(tmp_path / "hung", files=600)
        walker = TreeWalker(WalkLimits(rate=1.0, first_wait=0.05), sleep=sleep)
        try:
            assert walker.usage("a", str(hung), "dead.example", 1 << 30) is None
            assert stuck.wait(10)
            # When another server's volume is asked for, then it is walked at once
            fine = tree(tmp_path / "fine")
            answer = walker.usage("b", str(fine), "live.example", 1 << 30)
            assert answer is not None and answer.used_inodes == 3
        finally:
            release.set()
            walker.close()
