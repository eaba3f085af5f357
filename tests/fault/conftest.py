"""Faults on real processes: the driver as a subprocess, fault-injecting mount.nfs stand-ins, kill -9, strace."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc
from adapters.mount.mountinfo import read_mountinfo
from tests.conftest import ROOT
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    SERVER,
    SHARE,
    create_request,
    export_dir,
    export_root,
    mount_capability,
    private_mount_namespace,
)

STANDINS = ROOT / "tests" / "standin"


def standin(name: str) -> str:
    return str(STANDINS / name)


@dataclass
class FaultDriver:
    """One driver process (perhaps under strace), its socket, its log and the environment its helpers see."""

    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    workdir: Path
    channel: grpc.Channel

    @property
    def identity(self) -> csi_grpc.IdentityStub:
        return csi_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> csi_grpc.ControllerStub:
        return csi_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> csi_grpc.NodeStub:
        return csi_grpc.NodeStub(self.channel)

    @property
    def pid(self) -> int:
        """The driver's own pid: the strace wrapper's child when there is one."""
        children = _children(self.process.pid)
        if Path(f"/proc/{self.process.pid}/exe").resolve().name.startswith("strace") and children:
            return children[0]
        return self.process.pid

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill9(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.wait_dead()

    def wait_dead(self, timeout: float = 15) -> int:
        self.channel.close()
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int:
        self.channel.close()
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(f"the driver did not stop within {timeout} s:\n{self.log_text()[-4000:]}")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except FileNotFoundError:
        return []


@dataclass
class Lab:
    """A private export root, the environment for the stand-ins, and every driver started here (all stopped after)."""

    tmp: Path
    root: Path
    export: Path
    env: dict[str, str]
    drivers: list[FaultDriver] = field(default_factory=list)
    count: int = 0

    def start(
        self,
        *flags: str,
        mount_command: str = "mount.nfs",
        mode: str = "all",
        wrapper: Sequence[str] = (),
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        ready: bool = True,
    ) -> FaultDriver:
        self.count += 1
        workdir = workdir or self.tmp / f"driver-{self.count}"
        workdir.mkdir(parents=True, exist_ok=True)
        sock = workdir / "csi.sock"
        log = workdir / f"driver-{self.count}.log"
        argv = [
            *wrapper,
            sys.executable, "-m", "app",
            "--endpoint", f"unix://{sock}",
            "--mode", mode,
            "--nodeid", "node-1",
            "--working-mount-dir", str(workdir / "shares"),
            "--state-dir", str(workdir / "state"),
            "--mount-command", standin(mount_command),
            "--mount-timeout", "10",
            "--grace-period", "2",
            "--log-level", "debug",
            *flags,
        ]  # fmt: skip
        if sock.exists():
            sock.unlink()  # a killed driver's socket: the new one would replace it, but waiting below needs it gone
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**self.env, **(env or {})})
        deadline = time.monotonic() + 20
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"driver did not start:\n{log.read_text()}")
            time.sleep(0.02)
        channel = grpc.insecure_channel(f"unix:{sock}")
        if ready:
            grpc.channel_ready_future(channel).result(timeout=10)
        driver = FaultDriver(process, sock, log, workdir, channel)
        self.drivers.append(driver)
        return driver

    def mark(self, name: str) -> Path:
        """Create a fault marker, such as '127.0.0.1.hung' or '127.0.0.1.stale'."""
        marker = self.root / name
        marker.touch()
        return marker

    def volume_dirs(self) -> list[str]:
        return sorted(str(p.relative_to(self.export)) for p in self.export.rglob("*"))


def standin_pids(name: str) -> list[int]:
    """Live processes of this test session (its mount namespace) running the stand-in script ``name``.

    A fork the script has made but not yet exec'd (``sleep &`` in bash) still shows the script's command line for
    a moment: a process whose parent runs the script too is that fork, not another helper.
    """
    found: dict[int, int] = {}
    script, namespace = standin(name).encode(), os.readlink("/proc/self/ns/mnt")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            same_session = os.readlink(f"/proc/{entry}/ns/mnt") == namespace
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        if fields[0] != "Z" and same_session and len(argv) > 1 and argv[1] == script:
            found[int(entry)] = int(fields[1])
    return [pid for pid, parent in found.items() if parent not in found]


def hang_pids(root: Path) -> list[int]:
    """Every process mount.nfs-hang started: the helpers and their children."""
    path = root / ".hang-pids"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def fuse_pids(root: Path) -> list[int]:
    pids = root / ".fuse-pids"
    return [int(p.name) for p in pids.iterdir()] if pids.is_dir() else []


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_groups(pids: list[int]) -> None:
    """SIGKILL each stand-in's whole process group (the driver starts each helper as a session of its own)."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def release_hung_mounts(lab: Lab) -> None:
    """The server answers again: later mounts succeed, and the hung ones die with their process groups."""
    (lab.root / f"{SERVER}.hung").unlink(missing_ok=True)
    kill_groups(standin_pids("mount.nfs-hang"))


def wait_for(condition: Callable[[], object], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def mounts_under(path: Path) -> list[str]:
    return [e.mount_point for e in read_mountinfo() if e.mount_point == str(path) or e.mount_point.startswith(f"{path}/")]


@contextlib.contextmanager
def laboratory(tmp: Path) -> Iterator[Lab]:
    """An export root below tmp for the stand-ins; afterwards no process or mount of the test outlives it."""
    root = tmp / "exports-root"
    export = root / SERVER / SHARE.strip("/")
    export.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "NFS_STANDIN_ROOT": str(root),
        "NFS_STANDIN_PYTHON": sys.executable,
        "NFS_STANDIN_FUSE_LIFETIME": "120",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    lab = Lab(tmp, root, export, env)
    yield lab
    # The FUSE servers go first: a process blocked on a hung FUSE mount cannot die until its connection is gone.
    kill_all(fuse_pids(root))
    for name in ("mount.nfs-hang", "mount.nfs-gated"):
        kill_groups(standin_pids(name))
    for driver in lab.drivers:
        if driver.process.poll() is None:
            kill_all([driver.pid, driver.process.pid])
            driver.process.wait(timeout=10)
    for mount_point in sorted(mounts_under(tmp), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, timeout=10)
    assert mounts_under(tmp) == []


@pytest.fixture
def lab(tmp_path: Path, export_root: Path) -> Iterator[Lab]:
    with laboratory(tmp_path) as running:
        yield running


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def publish_request(volume_id: str, target: Path, **changes: object) -> csi.NodePublishVolumeRequest:
    fields: dict[str, object] = {"volume_id": volume_id, "target_path": str(target), "volume_capability": mount_capability()}
    fields.update(changes)
    return csi.NodePublishVolumeRequest(**fields)  # type: ignore[arg-type]


def volume_id_for(name: str, on_delete: str = "delete", server: str = SERVER, share: str = SHARE) -> str:
    return f"nfs1#{server}#{share}#{name}#{on_delete}"


def strace_available() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.fail("strace is needed to kill the driver at chosen system calls: apt-get install strace")
    return path


@pytest.fixture
def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
