"""What measuring a volume's own usage costs: one walk of a tree of N files, and an answer from what was kept.

    .venv/bin/python -m bench.walk                      # 100,000 files in 100 directories, under $TMPDIR
    .venv/bin/python -m bench.walk --files 2000 --json out.json

Prints, for the tree: the walk's time and entries a second, unpaced and at the default pace; the walker's answer
to a first ask (which waits for the walk) and to later asks (from what it kept), p50 and p99; and the RSS the
walker added. The tree is local (what a node sees through an NFS mount is slower: each entry's attributes come
from the server, mostly from its READDIRPLUS answers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from adapters.usage.walker import TreeWalker, WalkLimits, walk_tree


def make_tree(root: Path, files: int, per_directory: int = 1000) -> None:
    for i in range(files):
        directory = root / f"d{i // per_directory}"
        if i % per_directory == 0:
            directory.mkdir(parents=True)
        (directory / f"f{i}").write_bytes(b"x" * 100)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(files: int) -> dict[str, float]:
    top = Path(tempfile.mkdtemp(prefix="walk-"))
    try:
        root = top / "volume"
        make_tree(root, files)
        unpaced = WalkLimits(rate=1e12, timeout=3600, max_entries=10 * files + 10)
        started = time.perf_counter()
        walked = walk_tree(str(root), unpaced, threading.Event())
        walk_s = time.perf_counter() - started
        started = time.perf_counter()
        paced = walk_tree(str(root), WalkLimits(timeout=3600, max_entries=10 * files + 10), threading.Event())
        paced_s = time.perf_counter() - started
        before = rss_kib()
        walker = TreeWalker(WalkLimits(first_wait=3600, timeout=3600, max_entries=10 * files + 10, rate=1e12))
        try:
            started = time.perf_counter()
            walker.usage("volume", str(root), "local", 1 << 30)
            first_ms = (time.perf_counter() - started) * 1000
            asks = []
            for _ in range(10_000):
                started = time.perf_counter()
                walker.usage("volume", str(root), "local", 1 << 30)
                asks.append((time.perf_counter() - started) * 1e6)
        finally:
            walker.close()
        return {
            "files": files,
            "entries": walked.entries,  # below the top
            "complete": float(walked.complete and paced.complete),
            "walk_s": walk_s,
            "entries_per_s": walked.entries / walk_s,
            "paced_walk_s": paced_s,
            "first_ask_ms": first_ms,
            "kept_ask_p50_us": statistics.median(asks),
            "kept_ask_p99_us": sorted(asks)[int(len(asks) * 0.99)],
            "rss_added_kib": rss_kib() - before,
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
    finally:
        shutil.rmtree(top)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.walk", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    figures = measure(args.files)
    print(f"tree of {figures['files']:,} files ({figures['entries']:,.0f} entries), load {os.getloadavg()[0]:.1f}")
    print(f"  walk, unpaced:      {figures['walk_s']:.2f} s, {figures['entries_per_s']:,.0f} entries/s")
    print(f"  walk, default pace: {figures['paced_walk_s']:.2f} s (--volume-usage-rate 10000)")
    print(f"  first ask (waits for its walk): {figures['first_ask_ms']:.1f} ms")
    print(f"  later asks (kept): p50 {figures['kept_ask_p50_us']:.1f} us, p99 {figures['kept_ask_p99_us']:.1f} us")
    print(f"  RSS the walker added: {figures['rss_added_kib']:,} KiB (max RSS {figures['max_rss_kib']:,} KiB)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
