"""Floors: what the same machine costs without any driver logic, measured in the same run."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Sequence

from bench.client import OK, Client
from bench.load import closed_loop
from bench.stats import Run


def grpc_round_trips(client: Client, count: int, concurrency: int, per_op: int) -> Run:
    """Closed loop of operations of per_op empty round trips (Identity.Probe on the empty server)."""

    def op(_: int) -> str:
        try:
            for _ in range(per_op):
                client.probe()
        except Exception as err:  # noqa: BLE001 - the code is the result
            return type(err).__name__
        return OK

    return closed_loop(count, concurrency, op)


def mkdir_rmdir(export_dir: str, count: int) -> Run:
    """A bare mkdir then rmdir of a fresh directory on the export, from this process."""
    run = Run()
    began = time.perf_counter()
    for i in range(count):
        path = os.path.join(export_dir, f".bench-floor-{os.getpid()}-{i}")
        started = time.perf_counter()
        os.mkdir(path)
        os.rmdir(path)
        run.latencies.append(time.perf_counter() - started)
    run.seconds = time.perf_counter() - began
    return run


def run_command(argv: Sequence[str], timeout: float = 30.0, env: dict[str, str] | None = None) -> int:
    """As the driver runs a helper: argument list, own process group, output captured, bounded in time."""
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
        env=env,
    )
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.communicate()
        return -9
    return process.returncode


def mount_umount(mount_command: str, source: str, targets_dir: str, count: int, export_root: str) -> tuple[Run, Run, Run]:
    """A bare subprocess mount then umount of a fresh target, timed from before the mount to after the umount.

    Returns the pairs, and the mounts and the umounts alone."""
    run, mounts, umounts = Run(), Run(), Run()
    env = dict(os.environ, NFS_STANDIN_ROOT=export_root)
    began = time.perf_counter()
    for i in range(count):
        target = os.path.join(targets_dir, f"floor-{i}")
        os.mkdir(target)
        mounted = unmounted = -1
        try:
            started = time.perf_counter()
            mounted = run_command([mount_command, source, target], env=env)
            between = time.perf_counter()
            unmounted = run_command(["umount", target]) if mounted == 0 else -1
            ended = time.perf_counter()
            elapsed = ended - started
        finally:
            if mounted == 0 and unmounted != 0:
                run_command(["umount", "-l", target])
            os.rmdir(target)
        if mounted == 0 and unmounted == 0:
            run.latencies.append(elapsed)
            mounts.latencies.append(between - started)
            umounts.latencies.append(ended - between)
        else:
            run.fail(f"mount exit {mounted}, umount exit {unmounted}")
    run.seconds = mounts.seconds = umounts.seconds = time.perf_counter() - began
    return run, mounts, umounts
