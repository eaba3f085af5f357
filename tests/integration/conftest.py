"""Real processes, real mounts (mount.nfs stand-in) and a real CSI socket, in a private mount namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc
from adapters.mount.mountinfo import read_mountinfo
from domain.model import METADATA_DIR
from tests.conftest import ROOT, in_private_namespace

STANDIN = str(ROOT / "tests" / "standin" / "mount.nfs")
SERVER = "127.0.0.1"
SHARE = "/exports"


@pytest.fixture(scope="session", autouse=True)
def private_mount_namespace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if not in_private_namespace():
        pytest.fail(
            "integration tests need root and a private mount namespace: run them with scripts/test "
            "(or as root, where tests/conftest.py re-runs pytest under unshare --mount)"
        )
    yield
    base = str(tmp_path_factory.getbasetemp())
    leftover = [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(base)]
    assert leftover == [], f"tests left mounts behind: {leftover}"


@pytest.fixture
def export_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$NFS_STANDIN_ROOT: the stand-in serves SERVER:SHARE from export_root/SERVER/SHARE."""
    root = tmp_path / "exports-root"
    (root / SERVER / SHARE.strip("/")).mkdir(parents=True)
    monkeypatch.setenv("NFS_STANDIN_ROOT", str(root))
    return root


@pytest.fixture
def export_dir(export_root: Path) -> Path:
    return export_root / SERVER / SHARE.strip("/")


def share_entries(directory: Path) -> list[str]:
    """The names in a share's directory, but the driver's own METADATA_DIR (its volume index), sorted."""
    return sorted(name for name in os.listdir(directory) if name != METADATA_DIR)


def volume_index(export: Path) -> list[str]:
    """The entries of the share's volume index (one per recorded volume)."""
    index = export / METADATA_DIR / "volumes"
    return sorted(os.listdir(index)) if index.is_dir() else []


def mounts_under(path: Path) -> list[str]:
    return [e.mount_point for e in read_mountinfo() if e.mount_point.startswith(str(path))]


@dataclass
class Driver:
    process: subprocess.Popen[bytes]
    socket: Path
    channel: grpc.Channel
    log: Path

    @property
    def identity(self) -> csi_grpc.IdentityStub:
        return csi_grpc.IdentityStub(self.channel)

    @property
    def controller(self) -> csi_grpc.ControllerStub:
        return csi_grpc.ControllerStub(self.channel)

    @property
    def node(self) -> csi_grpc.NodeStub:
        return csi_grpc.NodeStub(self.channel)

    def stop(self) -> int:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def start_driver(workdir: Path, *extra: str, mode: str = "all", wrapper: Sequence[str] = ()) -> Driver:
    """``python -m app`` with the stand-in, run under ``wrapper`` (e.g. setpriv) when given; ready to call."""
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "csi.sock"
    log = workdir / "driver.log"
    argv = [
        *wrapper, sys.executable, "-m", "app",
        "--endpoint", f"unix://{sock}",
        "--mode", mode,
        "--nodeid", "node-1",
        "--working-mount-dir", str(workdir / "shares"),
        "--state-dir", str(workdir / "state"),
        "--mount-command", STANDIN,
        "--mount-timeout", "10",
        "--log-level", "debug",
        *extra,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"driver did not start:\n{log.read_text()}")
        time.sleep(0.02)
    channel = grpc.insecure_channel(f"unix:{sock}")
    grpc.channel_ready_future(channel).result(timeout=10)
    return Driver(process, sock, channel, log)


@pytest.fixture
def driver(tmp_path: Path, export_root: Path) -> Iterator[Driver]:
    running = start_driver(tmp_path / "driver")
    yield running
    assert running.stop() == 0, running.log.read_text()


def mount_capability(mode: int = csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER, *flags: str) -> csi.VolumeCapability:
    return csi.VolumeCapability(
        mount=csi.VolumeCapability.MountVolume(mount_flags=list(flags)),
        access_mode=csi.VolumeCapability.AccessMode(mode=mode),
    )


def create_request(name: str = "pvc-1", capacity: int = 1 << 30, **params: str) -> csi.CreateVolumeRequest:
    return csi.CreateVolumeRequest(
        name=name,
        capacity_range=csi.CapacityRange(required_bytes=capacity),
        volume_capabilities=[mount_capability()],
        parameters={"server": SERVER, "share": SHARE, **params},
    )


def own_mount_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")
