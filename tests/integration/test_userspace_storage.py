"""The storage over NfsRsFileSystem against real servers: its identity, its time bounds, and losing the server."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from adapters.storage.share_storage import FileShareStorage
from adapters.storage.userspace import Connector, NfsClientOptions, NfsRsFileSystem, connect_with_nfs_rs
from domain.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from domain.model import ShareRef, VolumeRecord
from tests.integration.ganesha import Ganesha, free_port, ganesha  # noqa: F401 - the session's NFS server fixture

pytestmark = pytest.mark.integration

RECORD = VolumeRecord("pvc-1", 1 << 30, {"subDir": "v"})


def userspace_storage(settings: NfsClientOptions, connect: Connector = connect_with_nfs_rs) -> FileShareStorage:
    return FileShareStorage(NfsRsFileSystem(settings, connect))


def options(port: int, **overrides: object) -> NfsClientOptions:
    settings: dict[str, object] = {"versions": ("4.1",), "port": port, "timeout": 2.0, **overrides}
    return NfsClientOptions(**settings)  # type: ignore[arg-type]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on loopback that accepts connections and never answers a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    done.set()
    thread.join(timeout=5)
    for connection in held:
        connection.close()
    listener.close()


@pytest.fixture
def own_ganesha(tmp_path: Path) -> Iterator[Ganesha]:
    """A server of this test's own, which the test may stop, freeze or restart."""
    server = Ganesha(tmp_path / "ganesha")
    server.base.mkdir()
    server.start()
    yield server
    server.stop()


class TestIdentity:
    def test_files_belong_to_the_configured_auth_sys_identity(self, ganesha: Ganesha) -> None:
        share, directory = ganesha.new_share("uid")
        os.chown(directory, 4321, 4322)
        storage = userspace_storage(options(ganesha.port, uid=4321, gid=4322))
        storage.write_record(share, "ns/v", RECORD)
        storage.create_volume_dir(share, "ns/v", 0o750)
        storage.close()
        for path in (directory / "ns", directory / "ns" / "v", directory / "ns" / ".v.nfs-csi.json"):
            assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322), path

    def test_the_server_enforces_that_identity(self, ganesha: Ganesha) -> None:
        share, directory = ganesha.new_share("uid")
        directory.chmod(0o755)  # root's, not writable by uid 4321
        storage = userspace_storage(options(ganesha.port, uid=4321, gid=4322))
        with pytest.raises(Exception, match="(?i)permission|access"):
            storage.create_volume_dir(share, "v", None)
        storage.close()
        assert list(directory.iterdir()) == []


class TestTimeBounds:
    def test_a_server_that_never_answers_costs_one_timeout(self, silent_server: int) -> None:
        storage = userspace_storage(options(silent_server, timeout=1.0))
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            storage.exists(ShareRef("127.0.0.1", "/exports"), "v")
        assert time.monotonic() - started < 3
        storage.close()

    def test_nobody_listening_is_unavailable_at_once(self) -> None:
        storage = userspace_storage(options(free_port(), attempts=2))
        started = time.monotonic()
        with pytest.raises(Unavailable):
            storage.exists(ShareRef("127.0.0.1", "/exports"), "v")
        assert time.monotonic() - started < 3
        storage.close()

    def test_a_frozen_server_costs_one_timeout_per_call_and_is_used_again_once_it_thaws(self, own_ganesha: Ganesha) -> None:
        assert own_ganesha.process is not None
        storage = userspace_storage(options(own_ganesha.port, timeout=1.0))
        share = own_ganesha.share
        storage.create_volume_dir(share, "v", None)
        os.kill(own_ganesha.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                storage.exists(share, "v")
            assert time.monotonic() - started < 3
        finally:
            os.kill(own_ganesha.process.pid, signal.SIGCONT)
        assert storage.exists(share, "v")
        started = time.monotonic()
        storage.close()
        assert time.monotonic() - started < 3


class TestLosingTheServer:
    def test_a_restarted_server_is_reconnected_to_without_an_error(self, own_ganesha: Ganesha) -> None:
        # nfs-rs notices the lost NFSv4.1 session after about 5 s and reports it as retryable; the adapter
        # then opens a new client and repeats the (idempotent) call.
        storage = userspace_storage(options(own_ganesha.port, timeout=10.0, attempts=2))
        share = own_ganesha.share
        storage.write_record(share, "v", RECORD)
        own_ganesha.stop()
        own_ganesha.start()
        assert storage.read_record(share, "v") == RECORD
        storage.close()

    def test_a_server_that_is_gone_costs_one_timeout_then_is_unavailable_at_once(self, own_ganesha: Ganesha) -> None:
        storage = userspace_storage(options(own_ganesha.port, timeout=1.0))
        storage.create_volume_dir(own_ganesha.share, "v", None)
        own_ganesha.stop()
        started = time.monotonic()
        with pytest.raises((DeadlineExceeded, Unavailable)):
            storage.exists(own_ganesha.share, "v")
        assert time.monotonic() - started < 3
        started = time.monotonic()
        with pytest.raises(Unavailable):
            storage.exists(own_ganesha.share, "v")
        assert time.monotonic() - started < 1
        storage.close()

    def test_close_waits_for_broken_clients_being_closed_aside(self, own_ganesha: Ganesha) -> None:
        # A thread left inside nfs-rs when the interpreter ends is unwound there and crashes the process.
        storage = userspace_storage(options(own_ganesha.port, timeout=1.0))
        storage.create_volume_dir(own_ganesha.share, "v", None)
        own_ganesha.stop()
        with pytest.raises((DeadlineExceeded, Unavailable)):
            storage.exists(own_ganesha.share, "v")
        storage.close()
        assert [t.name for t in threading.enumerate() if t.name == "nfs-close" and t.is_alive()] == []


class TestShares:
    def test_a_share_the_server_does_not_export_is_not_found(self, ganesha: Ganesha) -> None:
        storage = userspace_storage(options(ganesha.port))
        with pytest.raises(NotFound):
            storage.exists(ShareRef("127.0.0.1", "/exports/no-such-share"), "v")
        storage.close()

    def test_a_share_path_the_url_cannot_carry_is_refused(self, ganesha: Ganesha) -> None:
        storage = userspace_storage(options(ganesha.port))
        with pytest.raises(InvalidArgument):
            storage.exists(ShareRef("127.0.0.1", "/exports/what?version=3"), "v")

    def test_one_connection_per_share_is_reused(self, ganesha: Ganesha) -> None:
        opened: list[ShareRef] = []

        def counting(share: ShareRef, settings: NfsClientOptions):  # type: ignore[no-untyped-def]
            from adapters.storage.userspace import connect_with_nfs_rs

            opened.append(share)
            return connect_with_nfs_rs(share, settings)

        first, _ = ganesha.new_share("reuse")
        second, _ = ganesha.new_share("reuse")
        storage = userspace_storage(options(ganesha.port), connect=counting)
        for share in (first, second, first, second):
            storage.create_volume_dir(share, "v", None)
            assert storage.exists(share, "v")
        storage.close()
        assert opened == [first, second]


class TestOptions:
    @pytest.mark.parametrize("bad", [{"versions": ()}, {"versions": ("4",)}, {"versions": ("4.2",)}, {"timeout": 0}, {"attempts": 0}])
    def test_what_nfs_rs_cannot_do_is_refused_up_front(self, bad: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            NfsClientOptions(**bad)  # type: ignore[arg-type]
