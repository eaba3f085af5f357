"""Start our driver (or the floor's empty server) in the private mount namespace and time it to its first Probe."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Sequence

import grpc

from bench import procs
from bench.client import Client

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "standin" / "mount.nfs"
HANG_WRAPPER = ROOT / "bench" / "hang-mount.nfs"


class StartFailed(Exception):
    pass


@dataclass
class Running:
    """A process the benchmark started, serving CSI on endpoint."""

    name: str
    process: Popen[bytes]
    endpoint: str
    log: Path
    start_to_ready: float
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        return procs.stop(self.process)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def wait_ready(process: Popen[bytes], endpoint: str, started: float, timeout: float) -> float:
    """Seconds from `started` to the first Probe answered ready."""
    deadline = time.monotonic() + timeout
    path = endpoint[len("unix://") :] if endpoint.startswith("unix://") else None
    if path and not procs.sleep_until(lambda: os.path.exists(path) or process.poll() is not None, timeout):
        raise StartFailed(f"no socket at {path} within {timeout:g} s")
    client = Client(endpoint, {})
    try:
        while True:
            if process.poll() is not None:
                raise StartFailed(f"exited with status {process.returncode} before it was ready")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartFailed(f"not ready within {timeout:g} s")
            try:
                if client.probe(timeout=min(remaining, 1.0), wait_for_ready=True):
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            time.sleep(0.002)
    finally:
        client.close()


def start(
    name: str,
    argv: Sequence[str],
    endpoint: str,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Running:
    path = endpoint[len("unix://") :] if endpoint.startswith("unix://") else None
    if path and os.path.exists(path):
        os.unlink(path)
    full_env = dict(os.environ, **(env or {}))
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = procs.spawn(argv, out, env=full_env, cwd=str(ROOT))
    try:
        ready = wait_ready(process, endpoint, started, timeout)
    except StartFailed as err:
        procs.stop(process, grace=2)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise StartFailed(f"{name} did not start: {err}\n{tail}") from None
    return Running(name, process, endpoint, log, ready, env or {})


def start_our_driver(
    name: str,
    workdir: Path,
    export_root: Path,
    extra_args: Sequence[str] = (),
    mount_command: Path = STANDIN,
    env: dict[str, str] | None = None,
) -> Running:
    """Our driver as the README runs it: --mode all, the mount.nfs stand-in, logs at warning, other flags default."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    endpoint = f"unix://{home}/csi.sock"
    argv = [
        sys.executable, "-m", "app",
        "--endpoint", endpoint,
        "--mode", "all",
        "--nodeid", "bench-node",
        "--working-mount-dir", str(home / "shares"),
        "--state-dir", str(home / "state"),
        "--mount-command", str(mount_command),
        "--log-level", "warning",
        *extra_args,
    ]  # fmt: skip
    return start(name, argv, endpoint, home / "driver.log", env={"NFS_STANDIN_ROOT": str(export_root), **(env or {})})


def start_empty_server(workdir: Path, workers: int) -> Running:
    home = workdir / "empty-server"
    home.mkdir(parents=True, exist_ok=True)
    endpoint = f"unix://{home}/csi.sock"
    argv = [sys.executable, "-m", "bench.emptyserver", f"unix:{home}/csi.sock", str(workers)]
    return start("empty-server", argv, endpoint, home / "server.log")
