"""The measured scenarios, each over a Client; names and targets are distinct so no call waits on a volume lock."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.client import OK, Client, Volume
from bench.procs import sleep_until
from bench.load import burst_create, closed_loop, create_delete_pair, publish_unpublish_pair
from bench.stats import Run


def create_delete(client: Client, prefix: str, count: int, concurrency: int) -> Run:
    return closed_loop(count, concurrency, create_delete_pair(client, lambda i: f"{prefix}-{i}"))


def publish_unpublish(
    client: Client, volumes: list[Volume], pods: Path, prefix: str, count: int, concurrency: int
) -> Run:
    return closed_loop(count, concurrency, publish_unpublish_pair(client, volumes, lambda i: str(pods / f"{prefix}-{i}")))


@dataclass
class StatsAtScale:
    """NodeGetVolumeStats with `count` volumes published: each published target asked `rounds` times."""

    publish: Run
    stats: Run
    unpublish: Run
    published: int

    def summary(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "publish": self.publish.summary(),
            "stats": self.stats.summary(),
            "unpublish": self.unpublish.summary(),
        }


def stats_at_scale(
    client: Client, volumes: list[Volume], pods: Path, prefix: str, count: int, rounds: int, concurrency: int
) -> StatsAtScale:
    """Publish count targets, ask for the stats of every one `rounds` times over, then unpublish them all."""
    targets = [str(pods / f"{prefix}-{i}") for i in range(count)]
    owner = [volumes[i % len(volumes)] for i in range(count)]
    published = closed_loop(count, 16, lambda i: client.publish(owner[i], targets[i]))
    stats = closed_loop(count * rounds, concurrency, lambda i: client.stats(owner[i % count].volume_id, targets[i % count]))
    unpublished = closed_loop(count, 16, lambda i: client.unpublish(owner[i].volume_id, targets[i]))
    return StatsAtScale(published, stats, unpublished, len(published.latencies))


def create_volumes(client: Client, prefix: str, count: int) -> list[Volume]:
    volumes = []
    for i in range(count):
        code, volume = client.create(f"{prefix}-{i}")
        if volume is None:
            raise RuntimeError(f"CreateVolume {prefix}-{i} failed: {code}")
        volumes.append(volume)
    return volumes


def burst(client: Client, prefix: str, size: int) -> tuple[Run, list[dict[str, Any]]]:
    """size CreateVolume calls at once; the volumes made are deleted afterwards, outside the measurement."""
    run, results = burst_create(client, [f"{prefix}-{i}" for i in range(size)])
    made = [r["volume_id"] for r in results if r["code"] == OK]
    closed_loop(len(made), 16, lambda i: client.delete(made[i]))
    return run, results


def operations(client: Client, volumes: list[Volume], pods: Path, prefix: str, ops: int, concurrency: int) -> int:
    """Exactly `ops` CSI calls: a tenth as NodePublish+NodeUnpublish pairs, the rest CreateVolume+DeleteVolume pairs.

    A refused CreateVolume makes a pair of one call, so pairs are added until the count is reached."""
    target = client.calls + ops
    publish_unpublish(client, volumes, pods, f"{prefix}-pub", ops // 20, concurrency)
    round_ = 0
    while target - client.calls >= 2:
        create_delete(client, f"{prefix}-cd{round_}", (target - client.calls) // 2, concurrency)
        round_ += 1
    if client.calls < target:
        client.delete("bench-not-a-volume")
    return ops


class HangControl:
    """The hang wrapper's side channel: it marks a hung mount in `directory` and waits there for `release`."""

    def __init__(self, directory: Path, max_seconds: float) -> None:
        self.directory = directory
        self.max_seconds = max_seconds
        directory.mkdir(parents=True, exist_ok=True)

    def env(self, server: str) -> dict[str, str]:
        return {"BENCH_HANG_SERVER": server, "BENCH_HANG_DIR": str(self.directory), "BENCH_HANG_MAX": f"{self.max_seconds:g}"}

    def hanging(self) -> bool:
        return any(name.startswith("hanging.") for name in os.listdir(self.directory))

    def release(self) -> None:
        (self.directory / "release").touch()

    def reset(self) -> None:
        (self.directory / "release").unlink(missing_ok=True)


def hung_volume(volume: Volume, server: str, hang_server: str) -> Volume:
    """The same volume as if it lived on hang_server: its id and context with the server name replaced."""
    return Volume(
        volume.volume_id.replace(server, hang_server),
        {k: (hang_server if v == server else v) for k, v in volume.context.items()},
    )


@dataclass
class IsolationRound:
    baseline: Run
    hung: Run
    stayed_hung: bool
    hung_code: str

    def summary(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.summary(),
            "with_hung_mount": self.hung.summary(),
            "hung_publish_stayed_hung": self.stayed_hung,
            "hung_publish_code": self.hung_code,
        }


def isolation_round(
    client: Client,
    volumes: list[Volume],
    hung: Volume,
    pods: Path,
    prefix: str,
    count: int,
    hang: HangControl | None,
) -> IsolationRound:
    """NodePublish latency of other volumes (each unpublished untimed), without and then with one mount hanging."""

    def publishes(tag: str) -> Run:
        run = Run()
        began = time.perf_counter()
        for i in range(count):
            volume, target = volumes[i % len(volumes)], str(pods / f"{prefix}-{tag}-{i}")
            started = time.perf_counter()
            code = client.publish(volume, target)
            elapsed = time.perf_counter() - started
            if code == OK:
                run.latencies.append(elapsed)
            else:
                run.fail(code)
            client.unpublish(volume.volume_id, target)
        run.seconds = time.perf_counter() - began
        return run

    baseline = publishes("base")
    hung_target = str(pods / f"{prefix}-hung")
    client.count()
    future = client.node.NodePublishVolume.future(
        client.publish_request(hung, hung_target), timeout=(hang.max_seconds if hang else 60) + 15
    )
    if hang is not None:
        sleep_until(hang.hanging, timeout=10, step=0.005)
    else:
        time.sleep(0.5)
    with_hung = publishes("hung")
    stayed_hung = not future.done()
    if hang is not None:
        hang.release()
    else:
        future.cancel()
    try:
        future.result(timeout=(hang.max_seconds if hang else 0) + 20)
        code = OK
    except grpc.RpcError as err:
        code = err.code().name if hasattr(err, "code") else "UNKNOWN"
    except grpc.FutureCancelledError:
        code = "CANCELLED_BY_BENCH"
    except grpc.FutureTimeoutError:
        code = "CLIENT_TIMEOUT"
    if hang is not None:
        sleep_until(lambda: not hang.hanging(), timeout=10, step=0.005)
        hang.reset()
    client.unpublish(hung.volume_id, hung_target)
    return IsolationRound(baseline, with_hung, stayed_hung, code)
