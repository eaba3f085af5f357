"""Leaks: retries against a hung server cost a fixed number of threads and file descriptors, not one per retry."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Callable

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import (
    SERVER,
    FaultDriver,
    Lab,
    alive,
    code_of,
    create_request,
    hang_pids,
    publish_request,
    standin_pids,
    volume_id_for,
)

pytestmark = pytest.mark.integration

RETRIES = 50
WORKERS = 4


def settled_counts(driver: FaultDriver) -> tuple[int, int]:
    time.sleep(0.3)  # let the last call's worker go idle
    return driver.threads(), driver.fds()


def fill_the_grpc_pool(driver: FaultDriver, call: Callable[[], object] | None = None) -> None:
    """gRPC starts its workers lazily, up to --workers: start them all, so a count taken now is the steady one.

    Probe runs on the reserved threads and fills those; ``call`` (one that runs on the main workers) fills those.
    """
    calls: list[Callable[[], object]] = [lambda: driver.identity.Probe(csi.ProbeRequest(), timeout=10)]
    if call is not None:
        calls.append(call)
    with concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS * 2) as pool:
        for each in calls:
            for _ in range(3):
                list(pool.map(lambda _: each(), range(WORKERS * 4)))


class TestRetriesAgainstAHungServer:
    def test_fifty_create_volume_retries_on_a_hung_share_leave_threads_and_fds_flat(self, lab: Lab) -> None:
        driver = lab.start(
            "--workers", str(WORKERS), "--fs-timeout", "0.3", "--mount-timeout", "0.5",
            mount_command="mount.nfs-hungfs", mode="controller",
        )  # fmt: skip
        lab.mark(f"{SERVER}.hung")
        retry = lambda: code_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"), timeout=10))  # noqa: E731
        for _ in range(5):  # the share is mounted, its few workers get stuck
            assert retry() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        fill_the_grpc_pool(driver, retry)
        before = settled_counts(driver)
        codes = [retry() for _ in range(RETRIES)]
        after = settled_counts(driver)
        assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
        print(f"hung share: threads, fds before {before}, after {RETRIES} retries {after}")
        assert after == before
        assert driver.stop() == 0  # and SIGTERM still ends it: the share's unmount escalates past the hung server

    def test_fifty_publish_retries_on_a_hung_mount_leave_threads_fds_and_processes_flat(self, lab: Lab) -> None:
        driver = lab.start(
            "--workers", str(WORKERS), "--mount-timeout", "0.05", "--mount-attempts", "1",
            mount_command="mount.nfs-hang", mode="node",
        )  # fmt: skip
        lab.mark(f"{SERVER}.hung")
        request = publish_request(volume_id_for("pvc-1"), lab.tmp / "target")
        retry = lambda: code_of(lambda: driver.node.NodePublishVolume(request, timeout=10))  # noqa: E731
        for _ in range(5):
            assert retry() == grpc.StatusCode.DEADLINE_EXCEEDED
        fill_the_grpc_pool(driver, retry)
        before = settled_counts(driver)
        codes = [retry() for _ in range(RETRIES)]
        after = settled_counts(driver)
        assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        print(f"hung mount: threads, fds before {before}, after {RETRIES} retries {after}")
        assert after == before
        assert standin_pids("mount.nfs-hang") == [] and not any(map(alive, hang_pids(lab.root)))
        assert driver.stop() == 0
