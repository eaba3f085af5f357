"""Mount-point answers from the kernel, one path at a time: real mounts in the private namespace, real FUSE hangs.

What is real: every mount here (tmpfs, bind mounts of the same filesystem, stacked mounts, a FUSE filesystem whose
server never answers, tests/standin/fusefs) and the kernel's answers about them. What stands in: the FUSE server
plays a dead NFS server; this kernel has no NFS client.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from adapters.mount.mountinfo import MountTable, read_mountinfo
from adapters.mount.mountpoint import MountPoints
from adapters.mount.subprocess_mounter import MAX_STACKED_MOUNTS, RetryPolicy, SubprocessMounter
from domain.errors import DeadlineExceeded, MountFailed
from tests.conftest import ROOT
from tests.integration.conftest import STANDIN, mounts_under

pytestmark = pytest.mark.integration

FUSEFS = ROOT / "tests" / "standin" / "fusefs"
_libc = ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path: Path, source: str = "busy") -> None:
    if _libc.mount(source.encode(), str(path).encode(), b"tmpfs", 0, b"size=64k") != 0:
        raise OSError(ctypes.get_errno(), f"mount tmpfs at {path}")


def bind(source: Path, path: Path) -> None:
    if _libc.mount(str(source).encode(), str(path).encode(), None, 4096, None) != 0:  # MS_BIND
        raise OSError(ctypes.get_errno(), f"bind {source} at {path}")


def umount(path: Path) -> None:
    if _libc.umount2(str(path).encode(), 0) != 0:
        raise OSError(ctypes.get_errno(), f"umount {path}")


def umount_all(path: Path) -> None:
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10)


def lookups(kind: str) -> Callable[[Path], bool]:
    """The kernel's one-path answer, the mount table's fallback, and the mounter that uses them."""
    if kind == "kernel":
        return lambda path: MountPoints(MountTable()).is_mount_point(str(path))
    if kind == "table":
        return lambda path: MountPoints(MountTable(), kernel=False).is_mount_point(str(path))
    mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
    return lambda path: mounter.is_mount_point(str(path))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    """A directory of targets: cleaned of every mount afterwards, whatever a test left."""
    base = tmp_path / "node"
    base.mkdir()
    yield base
    umount_all(tmp_path)


@pytest.fixture(params=["kernel", "table", "mounter"])
def is_mount_point(request: pytest.FixtureRequest) -> Callable[[Path], bool]:
    return lookups(request.param)


class TestWhatIsAMountPoint:
    def test_a_plain_directory_a_missing_path_and_a_missing_parent_are_not(self, node: Path, is_mount_point) -> None:
        (node / "plain").mkdir()
        assert not is_mount_point(node / "plain")
        assert not is_mount_point(node / "missing")
        assert not is_mount_point(node / "missing" / "target")
        assert not is_mount_point(node / "plain" / "file")

    def test_a_mount_is_one_and_stops_being_one_when_unmounted(self, node: Path, is_mount_point) -> None:
        target = node / "t"
        target.mkdir()
        mount_tmpfs(target)
        assert is_mount_point(target) and not is_mount_point(node)
        umount(target)
        assert not is_mount_point(target)

    def test_a_bind_mount_of_the_same_filesystem_is_one(self, node: Path, is_mount_point) -> None:
        # A stat could not tell it: same device, same filesystem as its parent.
        (node / "data").mkdir()
        (node / "t").mkdir()
        (node / "self").mkdir()
        bind(node / "data", node / "t")
        bind(node / "self", node / "self")
        assert os.stat(node / "t").st_dev == os.stat(node).st_dev
        assert is_mount_point(node / "t") and is_mount_point(node / "self")
        assert not is_mount_point(node / "data")

    def test_a_directory_inside_a_mount_is_not_one(self, node: Path, is_mount_point) -> None:
        target = node / "t"
        target.mkdir()
        mount_tmpfs(target)
        (target / "inside").mkdir()
        assert not is_mount_point(target / "inside")

    def test_under_a_symlinked_parent_the_mount_is_found_where_the_link_leads(self, node: Path, is_mount_point) -> None:
        # Given a relocated kubelet directory: /var/lib/kubelet is a link to another disk's directory
        (node / "disk" / "pods").mkdir(parents=True)
        (node / "kubelet").symlink_to(node / "disk")
        target = node / "kubelet" / "pods" / "t"
        target.mkdir()
        # When the target is mounted through the link, the kernel mounts at the resolved path
        mount_tmpfs(target)
        assert [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(str(node))] == [str(node / "disk" / "pods" / "t")]
        # Then both spellings are a mount point
        assert is_mount_point(target) and is_mount_point(node / "disk" / "pods" / "t")

    def test_a_symlink_as_the_last_component_is_never_one_even_to_a_mount(self, node: Path, is_mount_point) -> None:
        target = node / "t"
        target.mkdir()
        mount_tmpfs(target)
        (node / "link").symlink_to(target)
        assert not is_mount_point(node / "link")

    def test_stacked_mounts_are_a_mount_point_until_the_last_is_gone(self, node: Path, is_mount_point) -> None:
        target = node / "t"
        target.mkdir()
        for _ in range(3):
            mount_tmpfs(target)
        for _ in range(3):
            assert is_mount_point(target)
            umount(target)
        assert not is_mount_point(target)

    def test_names_that_need_escaping_in_the_mount_table_are_answered(self, node: Path, is_mount_point) -> None:
        for name in ("with space", "tab\there", "back\\slash", "trailing ", "ünïcode"):
            target = node / name
            target.mkdir()
            twin = node / (name + "x")
            twin.mkdir()
            mount_tmpfs(twin)
            assert not is_mount_point(target), name
            mount_tmpfs(target)
            assert is_mount_point(target), name


class TestQuickAnswer:
    """The answer without I/O: from the kernel's caches (RESOLVE_CACHED), only "no mount point"; "a mount point"
    only once remembered."""

    def test_no_mount_point_is_told_and_a_mount_point_is_not_confirmed_until_remembered(self, node: Path) -> None:
        points = MountPoints(MountTable())
        (node / "plain").mkdir()
        (node / "t").mkdir()
        (node / "data").mkdir()
        mount_tmpfs(node / "t")
        bind(node / "data", node / "data")
        assert points.quick_answer(str(node / "plain")) == (False, None)  # a plain "no" needs no parent identity
        # A name never looked up is not in the caches (nothing to answer from) until a lookup leaves it there
        assert points.quick_answer(str(node / "missing"))[0] is None
        assert not (node / "missing").exists()
        assert points.quick_answer(str(node / "missing"))[0] is False
        # A mount point is never confirmed; the answer names the parent directory instead
        parent = os.stat(node).st_ino
        for path in (node / "t", node / "data"):
            answer, directory = points.quick_answer(str(path))
            assert answer is None and directory is not None and directory[1] == parent
            points.remember(str(path), directory, points.generation())
            assert points.quick_answer(str(path)) == (True, directory)
        # A mount or an unmount anywhere forgets every remembered one
        (node / "elsewhere").mkdir()
        mount_tmpfs(node / "elsewhere")
        assert points.quick_answer(str(node / "t"))[0] is None
        (node / "kubelet").symlink_to(node / "t")
        (node / "t" / "inside").mkdir()
        assert points.quick_answer(str(node / "kubelet" / "inside"))[0] is False

    def test_without_the_kernel_lookup_there_is_no_quick_answer(self, node: Path) -> None:
        (node / "plain").mkdir()
        assert MountPoints(MountTable(), kernel=False).quick_answer(str(node / "plain")) == (None, None)


class TestRememberedAnswers:
    """The mounter remembers mount points until the table changes; nothing it remembers may outlive the truth."""

    def test_an_unmount_a_renamed_parent_and_a_relinked_parent_are_all_seen_at_once(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        (node / "a" / "t").mkdir(parents=True)
        mount_tmpfs(node / "a" / "t")
        assert mounter.is_mount_point(str(node / "a" / "t")) and mounter.is_mount_point(str(node / "a" / "t"))
        # A parent renamed: no mount or unmount, the path now names nothing
        os.rename(node / "a", node / "b")
        assert not mounter.is_mount_point(str(node / "a" / "t"))
        assert mounter.is_mount_point(str(node / "b" / "t"))
        # A link among the parents pointed elsewhere: no mount or unmount either
        (node / "c" / "t").mkdir(parents=True)
        (node / "link").symlink_to(node / "b")
        assert mounter.is_mount_point(str(node / "link" / "t"))
        (node / "link").unlink()
        (node / "link").symlink_to(node / "c")
        assert not mounter.is_mount_point(str(node / "link" / "t"))
        # An unmount by someone else
        assert mounter.is_mount_point(str(node / "b" / "t"))
        umount(node / "b" / "t")
        assert not mounter.is_mount_point(str(node / "b" / "t"))


class TestWhileOtherMountsComeAndGo:
    def test_answers_stay_right_while_mounts_appear_and_disappear_all_around(self, node: Path) -> None:
        # Given watched paths of every kind
        (node / "data").mkdir()
        watched: dict[Path, bool] = {}
        for name in ("mounted", "bound", "plain", "stacked", "prefix", "prefix2"):
            (node / name).mkdir()
        mount_tmpfs(node / "mounted")
        bind(node / "data", node / "bound")
        mount_tmpfs(node / "stacked")
        mount_tmpfs(node / "stacked")
        mount_tmpfs(node / "prefix2")
        (node / "disk").mkdir()
        (node / "link").symlink_to(node / "disk")
        (node / "disk" / "t").mkdir()
        mount_tmpfs(node / "link" / "t")
        watched = {
            node / "mounted": True, node / "bound": True, node / "stacked": True, node / "link" / "t": True,
            node / "disk" / "t": True, node / "plain": False, node / "prefix": False, node / "data": False,
        }  # fmt: skip
        # and mounts coming and going around them: siblings, names that share a prefix, mounts inside the
        # watched ones, and a mount on a watched plain path's neighbour stacked and removed
        churn = [node / f"churn-{i}" for i in range(40)] + [node / "plain-0", node / "prefix0"]
        for path in churn:
            path.mkdir()
        (node / "mounted" / "sub").mkdir()
        churn.append(node / "mounted" / "sub")
        stop = threading.Event()
        changes = 0

        def churner(offset: int) -> None:
            nonlocal changes
            while not stop.is_set():
                for path in churn[offset::2]:
                    mount_tmpfs(path, "churn")
                for path in churn[offset::2]:
                    umount(path)
                changes += 1

        wrong: list[str] = []
        checks = 0

        def checker(kind: str) -> None:
            nonlocal checks
            lookup = lookups(kind)
            while not stop.is_set():
                for path, expected in watched.items():
                    if lookup(path) != expected:
                        wrong.append(f"{kind}: {path} answered {not expected}")
                    checks += 1

        threads = [threading.Thread(target=churner, args=(k,)) for k in (0, 1)]
        threads += [threading.Thread(target=checker, args=(kind,)) for kind in ("kernel", "mounter", "mounter", "table")]
        for thread in threads:
            thread.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        # Then not one answer was wrong, over many checks and many changes of the table
        assert wrong == []
        assert checks > 500 and changes > 20, (checks, changes)

    def test_a_mount_made_or_removed_at_a_watched_path_is_seen_by_the_very_next_answer(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        others = [node / f"o{i}" for i in range(20)]
        for path in others:
            path.mkdir()
        for round_ in range(50):
            mount_tmpfs(others[round_ % 20])
            mount_tmpfs(target)
            assert mounter.is_mount_point(str(target))
            umount(others[round_ % 20])
            umount(target)
            assert not mounter.is_mount_point(str(target))


class TestMountedSource:
    def test_the_source_of_the_topmost_mount_or_none(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        assert mounter.mounted_source(str(target)) is None
        mount_tmpfs(target, "nfs.example:/exports/pvc-1")
        assert mounter.mounted_source(str(target)) == "nfs.example:/exports/pvc-1"
        mount_tmpfs(target, "nfs.example:/exports/pvc-2")
        assert mounter.mounted_source(str(target)) == "nfs.example:/exports/pvc-2"
        umount(target)
        assert mounter.mounted_source(str(target)) == "nfs.example:/exports/pvc-1"
        assert mounter.mounted_source(str(node)) is None

    def test_every_stacked_source_bottom_first(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        assert mounter.mounted_sources(str(target)) == ()
        mount_tmpfs(target, "nfs.example:/exports/pvc-1")
        mount_tmpfs(target, "[fd00::4]:/exports/pvc-2")
        assert mounter.mounted_sources(str(target)) == ("nfs.example:/exports/pvc-1", "[fd00::4]:/exports/pvc-2")
        umount(target)
        assert mounter.mounted_sources(str(target)) == ("nfs.example:/exports/pvc-1",)
        umount(target)

    def test_through_a_symlinked_parent(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        (node / "disk" / "t").mkdir(parents=True)
        (node / "kubelet").symlink_to(node / "disk")
        mount_tmpfs(node / "disk" / "t", "nfs.example:/exports/pvc-1")
        assert mounter.mounted_source(str(node / "kubelet" / "t")) == "nfs.example:/exports/pvc-1"
        assert mounter.mounted_source(str(node / "kubelet")) is None  # the link itself: no mount point

    def test_what_the_stand_in_mounted(self, node: Path, export_dir: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        mounter.make_target(str(target))
        mounter.mount("127.0.0.1:/exports", str(target), [])
        # The stand-in is a bind mount: the kernel shows the device of the export's filesystem, not server:/path
        (entry,) = [e for e in read_mountinfo() if e.mount_point == str(target)]
        assert mounter.mounted_source(str(target)) == entry.source
        mounter.unmount(str(target))
        assert mounter.mounted_source(str(target)) is None


class TestUnmountStacked:
    def test_every_stacked_mount_goes_one_at_a_time(self, node: Path, export_root: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        for _ in range(3):
            mount_tmpfs(target)
        mounter.unmount(str(target))
        assert mounts_under(target) == [] and not mounter.is_mount_point(str(target))

    def test_more_stacked_mounts_than_the_bound_is_a_failure_that_leaves_the_rest(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        for _ in range(MAX_STACKED_MOUNTS + 1):
            mount_tmpfs(target)
        with pytest.raises(MountFailed, match=f"still a mount point after {MAX_STACKED_MOUNTS} unmounts"):
            mounter.unmount(str(target))
        assert len(mounts_under(target)) == 1

    def test_through_a_symlinked_parent(self, node: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        (node / "disk" / "t").mkdir(parents=True)
        (node / "kubelet").symlink_to(node / "disk")
        mount_tmpfs(node / "disk" / "t")
        mount_tmpfs(node / "disk" / "t")
        mounter.unmount(str(node / "kubelet" / "t"))
        assert mounts_under(node) == []

    def test_an_umount_that_fails_after_taking_a_mount_away_does_not_stop_the_unmount(self, node: Path, tmp_path: Path) -> None:
        # Given an umount helper that unmounts, then exits 1 (as a helper does when something after the kernel's
        # unmount fails), and two mounts stacked at the target
        calls = tmp_path / "calls"
        helper = tmp_path / "umount-then-fail"
        helper.write_text(f'#!/bin/bash\necho "$*" >> {calls}\numount "$@"\nexit 1\n')
        helper.chmod(0o755)
        mounter = SubprocessMounter(mount_command=STANDIN, umount_command=str(helper), retry=RetryPolicy(attempts=1))
        target = node / "t"
        target.mkdir()
        mount_tmpfs(target)
        mount_tmpfs(target)
        # When it is unmounted, then both mounts go: the failed plain umount took the top one, umount -f the
        # other (its exit status says nothing; the kernel's answer does), and nothing was detached lazily
        mounter.unmount(str(target))
        assert mounts_under(target) == []
        assert calls.read_text().splitlines() == [str(target), f"-f {target}"]


class TestNeverBlocksOnAHungFilesystem:
    @pytest.fixture
    def hung(self, node: Path, export_root: Path) -> Iterator[Path]:
        """A FUSE mount whose server never answers, at node/hung; every call into it blocks in the kernel."""
        target = node / "hung"
        target.mkdir()
        subprocess.run(
            [sys.executable, str(FUSEFS), "hang", str(target), "dead.invalid:/exports/pvc-1"],
            check=True, timeout=10, env={**os.environ, "NFS_STANDIN_FUSE_LIFETIME": "60"},
        )  # fmt: skip
        blocked = subprocess.Popen(["stat", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        assert blocked.poll() is None, "the FUSE mount must really hang a stat"
        yield target
        pids = export_root / ".fuse-pids"
        for pid in (int(p.name) for p in pids.iterdir()) if pids.is_dir() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        blocked.wait(timeout=10)
        umount_all(node)

    def answer_within(self, seconds: float, call: Callable[[], object]) -> object:
        """call() in a daemon thread: the test itself never hangs, whatever the call does."""
        result: list[object] = []
        thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(timeout=seconds)
        assert not thread.is_alive(), f"blocked for more than {seconds} s"
        assert result, "raised"
        return result[0]

    def test_the_hung_mount_is_a_mount_point_and_its_source_known_at_once(self, hung: Path) -> None:
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1), fs_timeout=2)
        assert self.answer_within(1, lambda: mounter.is_mount_point(str(hung))) is True
        assert self.answer_within(1, lambda: mounter.mounted_source(str(hung))) == "dead.invalid:/exports/pvc-1"
        assert self.answer_within(1, lambda: MountPoints(MountTable()).is_mount_point(str(hung))) is True
        assert self.answer_within(1, lambda: mounter.is_mount_point(str(hung.parent))) is False

    def test_through_a_symlinked_parent_too(self, hung: Path) -> None:
        (hung.parent.parent / "kubelet").symlink_to(hung.parent)
        via_link = hung.parent.parent / "kubelet" / "hung"
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1), fs_timeout=2)
        assert self.answer_within(1, lambda: mounter.is_mount_point(str(via_link))) is True
        assert self.answer_within(1, lambda: mounter.mounted_source(str(via_link))) == "dead.invalid:/exports/pvc-1"

    def test_the_quick_answer_never_blocks_on_it_or_inside_it(self, hung: Path) -> None:
        points = MountPoints(MountTable())
        assert self.answer_within(1, lambda: points.quick_answer(str(hung)))[0] is None  # type: ignore[index]
        assert self.answer_within(1, lambda: points.quick_answer(str(hung / "pod" / "target"))) == (None, None)

    def test_a_path_inside_the_hung_mount_ends_at_the_bound(self, hung: Path) -> None:
        # A target whose parent is on the dead server: its parent's walk blocks; the caller does not.
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1), fs_timeout=0.5)

        def ask() -> str:
            try:
                mounter.is_mount_point(str(hung / "pod" / "target"))
            except DeadlineExceeded as err:
                return str(err)
            return "answered"

        assert "did not finish within 0.5 s" in str(self.answer_within(3, ask))
        # and the lookups of healthy paths still answer
        assert self.answer_within(1, lambda: mounter.is_mount_point(str(hung))) is True
