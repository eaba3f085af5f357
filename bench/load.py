"""Load shapes: a closed loop of N operations at a given concurrency, and an open burst of concurrent calls."""

from __future__ import annotations

import threading
import time
from typing import Callable

import grpc

from bench.client import OK, Client, Volume, code_name
from bench.stats import Run

Operation = Callable[[int], str]
"""op(i) performs the i-th operation and returns its status code name ("OK" when it succeeded)."""


def closed_loop(count: int, concurrency: int, op: Operation) -> Run:
    """Operations 0..count-1 taken in turn by `concurrency` threads, each starting the next when it finishes."""
    run = Run()
    next_index = iter(range(count))
    lock = threading.Lock()
    workers = max(1, min(concurrency, count))
    start = threading.Barrier(workers + 1)

    def worker() -> None:
        start.wait()
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            began = time.perf_counter()
            code = op(i)
            elapsed = time.perf_counter() - began
            with lock:
                if code == OK:
                    run.latencies.append(elapsed)
                else:
                    run.fail(code)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - began
    return run


def create_delete_pair(client: Client, names: Callable[[int], str]) -> Operation:
    def op(i: int) -> str:
        code, volume = client.create(names(i))
        if volume is None:
            return code
        return client.delete(volume.volume_id)

    return op


def publish_unpublish_pair(client: Client, volumes: list[Volume], targets: Callable[[int], str]) -> Operation:
    def op(i: int) -> str:
        volume, target = volumes[i % len(volumes)], targets(i)
        code = client.publish(volume, target)
        if code != OK:
            client.unpublish(volume.volume_id, target)
            return code
        return client.unpublish(volume.volume_id, target)

    return op


def burst_create(client: Client, names: list[str]) -> tuple[Run, list[dict[str, object]]]:
    """Every CreateVolume issued at once (asynchronously, from one thread); each result and latency recorded."""
    run = Run()
    finished: dict[int, float] = {}
    lock = threading.Lock()
    calls = []
    began = time.perf_counter()
    for i, name in enumerate(names):
        issued = time.perf_counter()
        client.count()
        future = client.controller.CreateVolume.future(client.create_request(name), timeout=client.timeout)

        def done(_: object, i: int = i) -> None:
            with lock:
                finished[i] = time.perf_counter()

        future.add_done_callback(done)
        calls.append((name, issued, future))
    results = []
    for i, (name, issued, future) in enumerate(calls):
        volume_id = ""
        try:
            volume_id = future.result(timeout=client.timeout + 5).volume.volume_id
            code = OK
        except grpc.RpcError as err:
            code = code_name(err)
        except grpc.FutureTimeoutError:
            code = "CLIENT_TIMEOUT"
        with lock:
            ended = finished.get(i, time.perf_counter())
        latency = ended - issued
        if code == OK:
            run.latencies.append(latency)
        else:
            run.fail(code)
        results.append({"name": name, "code": code, "ms": round(latency * 1000, 3), "volume_id": volume_id})
    run.seconds = max(finished.values(), default=time.perf_counter()) - began
    return run, results
