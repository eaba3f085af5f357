"""Orchestration: floors, our driver (or any driver at --endpoint), the scenarios, repeated; then the report."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import grpc

from bench import floors, procs, report, scenarios
from bench.busy import BusyMounts, mounts_in_namespace
from bench.client import Client, Volume
from bench.drivers import HANG_WRAPPER, ROOT, STANDIN, Running, StartFailed, start_empty_server, start_our_driver
from bench.stats import Run, median, median_summary

FULL = {
    "repeat": 5, "warmup": 30, "cd_pairs": 400, "publish_pairs": 60, "burst": 100, "isolation_publishes": 30,
    "ops": 10_000, "floor_samples": 500, "floor_mounts": 60, "busy_mounts": 3000, "stats_volumes": 1000,
    "stats_rounds": 3,
}  # fmt: skip
QUICK = {
    "repeat": 1, "warmup": 2, "cd_pairs": 64, "publish_pairs": 16, "burst": 100, "isolation_publishes": 6,
    "ops": 200, "floor_samples": 50, "floor_mounts": 6, "busy_mounts": 50, "stats_volumes": 20, "stats_rounds": 1,
}  # fmt: skip


def levels(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="CSI benchmark over the real socket. Without --endpoint it starts this repository's driver "
        "with the mount.nfs stand-in; run it through bench/run, which provides the private mount namespace.",
    )
    target = p.add_argument_group("what to drive")
    target.add_argument("--endpoint", help="attach to this CSI endpoint (unix:///path or tcp://host:port) instead")
    target.add_argument("--pid", type=int, help="with --endpoint: the driver's process id, to read its RSS")
    target.add_argument("--server", default="127.0.0.1", help="StorageClass parameter server (default %(default)s)")
    target.add_argument("--share", default="/exports", help="StorageClass parameter share (default %(default)s)")
    target.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE", help="another StorageClass parameter")
    target.add_argument("--hang-server", default="hang.invalid", help="a server whose mounts hang (default %(default)s)")
    target.add_argument(
        "--versus", metavar="ENDPOINT",
        help="also drive the CSI driver at ENDPOINT, interleaved with the first one scenario by scenario, run by run "
        "(same client, same load at the same moment); its figures are printed beside the first one's",
    )  # fmt: skip
    target.add_argument("--versus-pid", type=int, help="with --versus: that driver's process id, to read its RSS")
    target.add_argument(
        "--driver-arg", action="append", default=[], metavar="ARG",
        help="an extra flag for our driver, e.g. --driver-arg=--workers=64 (repeatable)",
    )  # fmt: skip
    sizes = p.add_argument_group("how much (defaults: the full run; --quick: a smoke run of a few seconds)")
    sizes.add_argument("--quick", action="store_true", help="tiny counts: proves every figure is produced, measures little")
    sizes.add_argument("--repeat", type=int, help=f"runs of each scenario; figures are their medians ({FULL['repeat']})")
    sizes.add_argument("--warmup", type=int, help=f"operations per scenario before measuring, discarded ({FULL['warmup']})")
    sizes.add_argument("--cd-pairs", type=int, help=f"CreateVolume+DeleteVolume pairs per run and level ({FULL['cd_pairs']})")
    sizes.add_argument("--cd-concurrency", type=levels, default=[1, 16, 64], help="levels (default 1,16,64)")
    sizes.add_argument("--publish-pairs", type=int, help=f"NodePublish+NodeUnpublish pairs per run and level ({FULL['publish_pairs']})")
    sizes.add_argument("--publish-concurrency", type=levels, default=[1, 16], help="levels (default 1,16)")
    sizes.add_argument("--burst", type=int, help=f"concurrent CreateVolume calls in the burst ({FULL['burst']})")
    sizes.add_argument("--isolation-publishes", type=int, help=f"publishes timed per isolation phase ({FULL['isolation_publishes']})")
    sizes.add_argument("--ops", type=int, help=f"operations before the second RSS reading ({FULL['ops']:,})")
    sizes.add_argument("--floor-samples", type=int, help=f"samples of the round-trip and mkdir floors ({FULL['floor_samples']})")
    sizes.add_argument("--floor-mounts", type=int, help=f"samples of the mount+umount floor ({FULL['floor_mounts']})")
    sizes.add_argument("--floor-workers", type=int, default=16, help="the empty server's threads (default 16, the driver's)")
    sizes.add_argument(
        "--busy-mounts", type=int, metavar="N",
        help=f"tmpfs mounts that make the node busy, for the busy-node figures; 0: no busy node ({FULL['busy_mounts']:,})",
    )  # fmt: skip
    sizes.add_argument("--stats-volumes", type=int, help=f"volumes published for NodeGetVolumeStats on the busy node ({FULL['stats_volumes']:,})")
    sizes.add_argument("--stats-rounds", type=int, help=f"NodeGetVolumeStats calls per published volume ({FULL['stats_rounds']})")
    sizes.add_argument("--stats-concurrency", type=int, default=1, help="NodeGetVolumeStats calls at once (default 1: the cost of one)")
    sizes.add_argument("--hang-max", type=float, default=30.0, help="seconds a hung mount waits at most (default 30)")
    out = p.add_argument_group("output and limits")
    out.add_argument("--json", type=Path, default=ROOT / ".work" / "bench" / "latest.json", help="where the JSON goes")
    out.add_argument("--workdir", type=Path, help="scratch directory (bench/run makes one and removes it)")
    out.add_argument("--deadline", type=float, default=1800.0, help="seconds before the whole run is killed (1800)")
    return p


def settings(argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.pid is not None and not args.endpoint:
        parser().error("--pid only goes with --endpoint")
    if args.versus_pid is not None and not args.versus:
        parser().error("--versus-pid only goes with --versus")
    if args.driver_arg and args.endpoint:
        parser().error("--driver-arg only goes with our own driver, not with --endpoint")
    return args


def in_private_namespace() -> bool:
    host = os.environ.get("NFS_STANDIN_HOST_NS", "")
    return bool(host) and os.readlink("/proc/self/ns/mnt") != host


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
        kib = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1])
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    import google.protobuf

    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "hostname": platform.node(),
        "commit": commit,
        "loadavg_at_start": loadavg(),
    }


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(prefix)]


@dataclass
class Driven:
    """One driver under measurement: its client, its process (for RSS) and the volumes it publishes."""

    name: str
    client: Client
    pid: int | None
    volumes: list[Volume] = field(default_factory=list)

    def rss(self) -> float | None:
        return procs.rss_mib(self.pid) if self.pid else None


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.export_root = workdir / "exports-root"
        self.export_dir = self.export_root / args.server / args.share.strip("/")
        self.pods = workdir / "pods"
        self.parameters = {"server": args.server, "share": args.share}
        for pair in args.parameter:
            key, _, value = pair.partition("=")
            self.parameters[key] = value
        self.own = not args.endpoint
        self.busy = BusyMounts(workdir / "busy", args.busy_mounts)
        self.running: list[Running] = []
        self.floor_client: Client

    def log(self, message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    def start_driver(self, name: str, **kwargs: Any) -> Running:
        running = start_our_driver(name, self.workdir, self.export_root, self.args.driver_arg, **kwargs)
        self.running.append(running)
        return running

    def stop(self, running: Running) -> None:
        status = running.stop()
        if running in self.running:
            self.running.remove(running)
        if status not in (0, None) and running.name != "empty-server":
            self.log(f"{running.name} exited with status {status}:\n{running.log_tail()}")

    def run(self) -> dict[str, Any]:
        """Floors and driver scenarios interleaved run by run, so that drift on a shared machine hits both alike."""
        a = self.args
        for path in (self.export_dir, self.pods, self.workdir / "floor-targets"):
            path.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "schema": 1,
            "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "driver": {
                "description": f"the driver at {a.endpoint}" if a.endpoint else "this repository's driver, started by bench "
                f"(--mode all, mount.nfs stand-in, --log-level warning{''.join(' ' + x for x in a.driver_arg)})",
                "endpoint": a.endpoint,
                "driver_args": a.driver_arg,
                "storage_class_parameters": self.parameters,
            },
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        }
        self.log("floors: starting the empty gRPC server")
        empty = start_empty_server(self.workdir, a.floor_workers)
        self.running.append(empty)
        self.floor_client = Client(empty.endpoint, {})
        self.floor_client.probe(timeout=30, wait_for_ready=True)
        time.sleep(0.5)
        empty_rss = procs.rss_mib(empty.pid)
        floors.grpc_round_trips(self.floor_client, a.warmup * 10, 1, 1)
        floors.mkdir_rmdir(str(self.export_dir), a.warmup * 10)
        self.mount_floor(max(1, a.warmup // 5))

        figures = self.starts() if self.own else {"start_to_ready_s": None, "rss_idle_mib": None, "starts": []}
        main = self.start_driver("main") if self.own else None
        endpoint, pid = (main.endpoint, main.pid) if main else (a.endpoint, a.pid)
        drivers = [Driven("first", Client(endpoint, self.parameters), pid)]
        if a.versus:
            drivers.append(Driven("versus", Client(a.versus, self.parameters), a.versus_pid))
        versus: dict[str, Any] = {"endpoint": a.versus, "rss_idle_mib": None} if a.versus else {}
        try:
            for d in drivers:
                d.client.probe(timeout=30, wait_for_ready=True)
            time.sleep(0.5 if main else 0)
            if not main:
                figures["rss_idle_mib"] = drivers[0].rss()
            if a.versus:
                versus["rss_idle_mib"] = drivers[1].rss()
            for d, out in zip(drivers, (figures, versus)):
                d.volumes = scenarios.create_volumes(d.client, f"bench-pub-{d.name}", max(a.publish_concurrency))
                self.log(f"operations ({d.name}): {a.ops:,} calls, then RSS")
                scenarios.operations(d.client, d.volumes, self.pods, f"bench-ops-{d.name}", max(0, a.ops - d.client.calls), 16)
                out["ops_for_rss"] = d.client.calls
                out["rss_after_ops_mib"] = d.rss()
            runs, burst_runs = self.repeated(drivers)
            busy = [self.busy_node(d) if a.busy_mounts else None for d in drivers]
            for d, out in zip(drivers, (figures, versus)):
                out["ops_at_end"] = d.client.calls
                out["rss_at_end_mib"] = d.rss()
        finally:
            self.busy.down()
            for d in drivers:
                d.client.close()
            if main:
                self.stop(main)
            self.floor_client.close()
            self.stop(empty)

        for d, out, node in zip(drivers, (figures, versus), busy):
            out["create_delete"] = {f"c{c}": median_summary(runs[f"{d.name}.cd.c{c}"]) for c in a.cd_concurrency}
            out["publish_unpublish"] = {f"c{c}": median_summary(runs[f"{d.name}.pub.c{c}"]) for c in a.publish_concurrency}
            out["burst_create"] = burst_figures(a.burst, burst_runs[d.name])
            if node is not None:
                node["create_delete"] = {f"c{c}": median_summary(runs[f"{d.name}.busy.cd.c{c}"]) for c in a.cd_concurrency}
                node["publish_unpublish"] = {
                    f"c{c}": median_summary(runs[f"{d.name}.busy.pub.c{c}"]) for c in a.publish_concurrency
                }
                node["mount_umount_floor"] = median_summary(runs["busy.floor.mount"])
            out["busy_node"] = node
        doc["floors"] = floor_figures(runs, a.cd_concurrency, empty_rss)
        figures["isolation"] = self.isolation()
        doc["figures"] = figures
        if a.versus:
            doc["versus"] = versus
        doc["targets"] = report.targets(doc)
        doc["machine"]["loadavg_at_end"] = loadavg()
        return doc

    def starts(self) -> dict[str, Any]:
        """Start to ready, and RSS half a second later, over fresh driver processes; the first start is warm-up."""
        starts = []
        for k in range(self.args.repeat + 1):
            running = self.start_driver(f"start-{k}")
            time.sleep(0.5)
            starts.append({"start_to_ready_s": round(running.start_to_ready, 4), "rss_idle_mib": procs.rss_mib(running.pid), "warmup": k == 0})
            self.stop(running)
        measured = [s for s in starts if not s["warmup"]]
        self.log(f"start to ready: {', '.join(str(s['start_to_ready_s']) for s in measured)} s")
        by_mode = {"all": median(s["rss_idle_mib"] for s in measured)}
        for mode in ("controller", "node"):  # as deployed: one process of each kind
            running = start_our_driver(f"start-{mode}", self.workdir, self.export_root, [*self.args.driver_arg, "--mode", mode])
            self.running.append(running)
            time.sleep(0.5)
            by_mode[mode] = procs.rss_mib(running.pid)
            self.stop(running)
        return {
            "start_to_ready_s": median(s["start_to_ready_s"] for s in measured),
            "rss_idle_mib": by_mode["all"],
            "rss_idle_by_mode_mib": by_mode,
            "starts": starts,
        }

    def repeated(self, drivers: list[Driven]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        """Warm-up, then each run: the floors, every driver scenario, then the pairs again on a busy node.

        With two drivers each scenario runs for one, then at once for the other, the first of the two taking turns
        run by run, so the load of that moment falls on both."""
        a = self.args
        self.log("warm-up")
        for d in drivers:
            for c in a.cd_concurrency:
                scenarios.create_delete(d.client, f"bench-warm-{d.name}-cd{c}", max(a.warmup, c), c)
            for c in a.publish_concurrency:
                scenarios.publish_unpublish(d.client, d.volumes, self.pods, f"bench-warm-{d.name}-pub{c}", max(a.warmup // 2, c), c)
        floors.grpc_round_trips(self.floor_client, max(a.warmup, 64), 64, 2)

        runs: dict[str, list[dict[str, Any]]] = {}
        bursts: dict[str, list[dict[str, Any]]] = {d.name: [] for d in drivers}

        def keep(key: str, run: Run) -> None:
            runs.setdefault(key, []).append(run.summary())

        def each(r: int) -> Iterator[Driven]:
            return iter(drivers if r % 2 == 0 else drivers[::-1])

        for r in range(a.repeat):
            self.log(f"run {r + 1} of {a.repeat}")
            keep("floor.rtt", floors.grpc_round_trips(self.floor_client, a.floor_samples, 1, 1))
            for c in a.cd_concurrency:
                keep(f"floor.pairs.c{c}", floors.grpc_round_trips(self.floor_client, max(a.cd_pairs, c), c, 2))
            keep("floor.mkdir", floors.mkdir_rmdir(str(self.export_dir), a.floor_samples))
            pairs, mounts, umounts = self.mount_floor(a.floor_mounts)
            keep("floor.mount", pairs)
            keep("floor.mount.alone", mounts)
            keep("floor.umount.alone", umounts)
            for node in ("", "busy.") if a.busy_mounts else ("",):
                if node:
                    self.busy.up()
                    keep("busy.floor.mount", self.mount_floor(a.floor_mounts)[0])
                tag = f"bench-r{r}-{node.rstrip('.') or 'empty'}"
                for c in a.cd_concurrency:
                    for d in each(r):
                        keep(f"{d.name}.{node}cd.c{c}", scenarios.create_delete(d.client, f"{tag}-{d.name}-cd{c}", max(a.cd_pairs, c), c))
                for c in a.publish_concurrency:
                    for d in each(r):
                        run = scenarios.publish_unpublish(
                            d.client, d.volumes, self.pods, f"{tag}-{d.name}-pub{c}", max(a.publish_pairs, c), c
                        )
                        keep(f"{d.name}.{node}pub.c{c}", run)
                if node:
                    self.busy.down()
                    continue
                for d in each(r):
                    burst, results = scenarios.burst(d.client, f"bench-r{r}-{d.name}-burst", a.burst)
                    bursts[d.name].append({**burst.summary(), "results": results})
        return runs, bursts

    def busy_node(self, d: Driven) -> dict[str, Any]:
        """On the busy node: NodeGetVolumeStats with many volumes published, then RSS after exactly `ops` calls."""
        a = self.args
        seconds = self.busy.up()
        present = mounts_in_namespace()
        self.log(f"busy node ({d.name}): {a.busy_mounts:,} tmpfs mounts in {seconds:.2f} s ({present:,} in the table); "
                 f"NodeGetVolumeStats with {a.stats_volumes:,} volumes published")
        client = d.client
        began = client.calls
        at_scale = scenarios.stats_at_scale(
            client, d.volumes, self.pods, f"bench-stats-{d.name}", a.stats_volumes, a.stats_rounds, a.stats_concurrency
        )
        self.log(f"busy node ({d.name}): {a.ops:,} calls, then RSS")
        scenarios.operations(client, d.volumes, self.pods, f"bench-busy-ops-{d.name}", max(0, a.ops - (client.calls - began)), 16)
        calls = client.calls - began
        rss = d.rss()
        self.busy.down()
        return {
            "mounts": a.busy_mounts,
            "mounts_in_table": present,
            "stats": {"volumes": a.stats_volumes, "rounds": a.stats_rounds, "concurrency": a.stats_concurrency, **at_scale.summary()},
            "calls_for_rss": calls,
            "rss_after_calls_mib": rss,
        }

    def mount_floor(self, count: int) -> tuple[Run, Run, Run]:
        source = f"{self.args.server}:{self.args.share}"
        targets = str(self.workdir / "floor-targets")
        return floors.mount_umount(str(STANDIN), source, targets, count, str(self.export_root))

    def isolation(self) -> dict[str, Any]:
        a = self.args
        hang = scenarios.HangControl(self.workdir / "hang", a.hang_max)
        if self.own:
            self.log("isolation: a driver whose --mount-command hangs for " + a.hang_server)
            driver = self.start_driver("hang", mount_command=HANG_WRAPPER, env=hang.env(a.hang_server))
            endpoint = driver.endpoint
        else:
            self.log(f"isolation: on {a.endpoint}, whose mounts from {a.hang_server} must hang")
            endpoint = a.endpoint
        client = Client(endpoint, self.parameters)
        try:
            volumes = scenarios.create_volumes(client, "bench-iso", 4)
            _, made = client.create("bench-iso-hung")
            if made is None:
                raise RuntimeError("CreateVolume bench-iso-hung failed")
            hung = scenarios.hung_volume(made, a.server, a.hang_server)
            scenarios.publish_unpublish(client, volumes, self.pods, "bench-iso-warm", max(a.warmup // 2, 2), 1)
            rounds = [
                scenarios.isolation_round(
                    client, volumes, hung, self.pods, f"bench-iso-r{r}", a.isolation_publishes, hang if self.own else None
                )
                for r in range(a.repeat)
            ]
        finally:
            client.close()
            if self.own:
                self.stop(driver)
        base = median(r.baseline.summary()["p50_ms"] for r in rounds)
        with_hung = median(r.hung.summary()["p50_ms"] for r in rounds)
        return {
            "hang_server": a.hang_server,
            "hung_volume_id": hung.volume_id,
            "baseline_p50_ms": base,
            "hung_p50_ms": with_hung,
            "ratio": round(with_hung / base, 3) if base and with_hung else None,
            "hung_publish_stayed_hung": all(r.stayed_hung for r in rounds),
            "hung_publish_codes": [r.hung_code for r in rounds],
            "errors": sum(r.baseline.summary()["errors"] + r.hung.summary()["errors"] for r in rounds),
            "runs": [r.summary() for r in rounds],
        }


def burst_figures(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    codes: dict[str, int] = {}
    for run in runs:
        for result in run["results"]:
            codes[result["code"]] = codes.get(result["code"], 0) + 1
    merged = median_summary([{k: v for k, v in run.items() if k != "results"} for run in runs])
    return {
        "size": size,
        "calls": sum(codes.values()),
        "results": codes,
        "failures": sum(n for code, n in codes.items() if code != "OK"),
        "all_ok": set(codes) == {"OK"},
        **{k: merged[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "seconds")},
        "runs": runs,
    }


def floor_figures(runs: dict[str, list[dict[str, Any]]], levels: list[int], empty_rss: float | None) -> dict[str, Any]:
    rtt = median_summary(runs["floor.rtt"])
    mkdir = median_summary(runs["floor.mkdir"])
    mount = median_summary(runs["floor.mount"])
    return {
        "grpc_empty_round_trip": rtt,
        "grpc_empty_pairs": {f"c{c}": median_summary(runs[f"floor.pairs.c{c}"]) for c in levels},
        "mkdir_rmdir": mkdir,
        "mount_umount": mount,
        "mount_alone": median_summary(runs["floor.mount.alone"]),
        "umount_alone": median_summary(runs["floor.umount.alone"]),
        "grpc_empty_server_rss_idle_mib": empty_rss,
        "create_delete_pair_ms": _sum(2 * (rtt["p50_ms"] or 0), mkdir["p50_ms"]),
        "publish_unpublish_pair_ms": _sum(2 * (rtt["p50_ms"] or 0), mount["p50_ms"]),
    }


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 4)


def main(argv: Sequence[str] | None = None) -> int:
    args = settings(argv)
    if not in_private_namespace():
        print("bench: run me through bench/run: the mount.nfs stand-in needs a private mount namespace", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(f"/tmp/nfs-csi-bench.{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, workdir)
    status = 0
    with procs.Watchdog(args.deadline):
        try:
            doc = bench.run()
        except (StartFailed, RuntimeError, grpc.RpcError) as err:
            print(f"bench: failed: {err}", file=sys.stderr)
            return 1
        finally:
            for running in list(bench.running):
                bench.stop(running)
            procs.kill_all()
            leaked = mounts_under(workdir)
            for point in reversed(leaked):
                subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
            if leaked:
                print(f"bench: mounts were left under {workdir} and are now unmounted: {leaked}", file=sys.stderr)
                status = 1
    doc["leaked_mounts"] = leaked
    print(report.table(doc))
    report.write_json(doc, args.json)
    print(f"\nJSON: {args.json}")
    return status
