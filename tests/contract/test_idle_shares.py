"""Both file systems let go of idle shares (a mount, an NFS client) and their threads, never one a call still uses."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from adapters.mount.mountinfo import read_mountinfo
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter
from adapters.storage.archive import Deadline
from adapters.storage.files import ShareFiles, ShareFileSystem
from adapters.storage.mounted import MountedFileSystem
from adapters.storage.userspace import NfsRsFileSystem
from domain.errors import DeadlineExceeded
from domain.model import ShareRef
from tests.contract.conftest import REAL, STANDIN, _require_namespace, userspace_options
from tests.fakes import FakeClock
from tests.integration.ganesha import Ganesha, ganesha  # noqa: F401 - the session's NFS server fixture

IDLE, MOST = 60.0, 8
SHARES = 50


@dataclass
class Held:
    name: str
    files: ShareFileSystem
    shares: list[ShareRef]
    clock: FakeClock
    work: Path

    def mounts(self) -> int:
        return sum(1 for e in read_mountinfo() if e.mount_point.startswith(f"{self.work}/"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))  # nfs-rs's threads are not Python's: count the kernel's


def settle(count: Callable[[], int], expected: int, seconds: float = 15.0) -> int:
    """count() once it falls to expected, or as it is after seconds: threads end, and the background thread
    unmounts, a moment after they are told to."""
    deadline = time.monotonic() + seconds
    while count() > expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count()


@pytest.fixture(params=[pytest.param("mounted", marks=REAL), pytest.param("userspace", marks=REAL)])
def held(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    clock = FakeClock()
    work = tmp_path / "work"
    if request.param == "mounted":
        _require_namespace()
        root = tmp_path / "standin-root"
        monkeypatch.setenv("NFS_STANDIN_ROOT", str(root))
        shares = []
        for n in range(SHARES):
            (root / "127.0.0.1" / "exports" / f"s{n}").mkdir(parents=True)
            shares.append(ShareRef("127.0.0.1", f"/exports/s{n}"))
        mounter = SubprocessMounter(mount_command=STANDIN, retry=RetryPolicy(attempts=1))
        files: ShareFileSystem = MountedFileSystem(
            mounter, str(work), snapshot_timeout=0.5, clock=clock, share_idle_timeout=IDLE, max_shares_held=MOST
        )
    else:
        server: Ganesha = request.getfixturevalue("ganesha")
        shares = [server.new_share("idle")[0] for _ in range(SHARES)]
        files = NfsRsFileSystem(userspace_options(server), clock=clock, share_idle_timeout=IDLE, max_shares_held=MOST)
    subject = Held(request.param, files, shares, clock, work)
    yield subject
    files.close()
    assert subject.mounts() == 0


def release_idle(files: ShareFileSystem) -> int:
    assert isinstance(files, (MountedFileSystem, NfsRsFileSystem))
    return files.release_idle()


class TestIdleShares:
    def test_fifty_shares_asked_about_then_left_idle_return_to_the_start(self, held: Held) -> None:
        # the start: one share asked about and let go, so what every call shares (the mounter's pools) is running
        held.files.run(held.shares[0], "reading free space", lambda files: files.free_bytes())
        held.clock.advance(IDLE)
        release_idle(held.files)
        before = settle(threads, 0, seconds=1)
        for share in held.shares:
            assert held.files.run(share, "reading free space", lambda files: files.free_bytes()) > 0
            release_idle(held.files)  # what the background thread does when more than MOST are held
            assert held.files.held() <= MOST
        assert settle(held.mounts, MOST if held.name == "mounted" else 0) == (MOST if held.name == "mounted" else 0)
        held.clock.advance(IDLE)
        assert release_idle(held.files) == MOST
        assert (held.files.held(), held.mounts(), settle(threads, before)) == (0, 0, before)

    def test_a_share_is_kept_while_long_work_uses_it_even_after_its_caller_gave_up(self, held: Held) -> None:
        share, source = held.shares[0], held.shares[1]
        started, go_on, done = threading.Event(), threading.Event(), threading.Event()

        def work(files: ShareFiles, source_files: ShareFiles, deadline: Deadline) -> int:
            started.set()
            try:
                go_on.wait(30)
                return source_files.free_bytes()
            finally:
                done.set()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(held.files.run_long, share, "packing", work, source)
            assert started.wait(30)
            if held.name == "mounted":  # its caller waits --snapshot-timeout (0.5 s here), the work goes on
                with pytest.raises(DeadlineExceeded):
                    call.result(10)
            held.clock.advance(IDLE * 10)
            assert release_idle(held.files) == 0 and held.files.held() == 2 and not done.is_set()
            go_on.set()
            assert done.wait(30)
            if held.name != "mounted":
                assert call.result(30) > 0
        deadline = time.monotonic() + 10  # the work gave its use back as it ended, a moment after done
        while held.files.held() and time.monotonic() < deadline:
            held.clock.advance(IDLE)
            release_idle(held.files)
            time.sleep(0.01)
        assert (held.files.held(), held.mounts()) == (0, 0)
