"""Peak memory of the driver in controller and in node mode under load: what deploy/overlays/prod's limits rest on.

Run: tests/standin/isolated .venv/bin/python -m tests.deploy.measure_memory [--calls N] [--concurrency C]
Each mode runs as its own process (as in the pods), with /metrics on, the mount.nfs stand-in and a real socket;
the process tree's RSS (driver plus mount.nfs/umount children) is sampled every 20 ms, and VmHWM read at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "tests" / "standin" / "mount.nfs"
SHARES = 4
CAPABILITY = csi.VolumeCapability(
    mount=csi.VolumeCapability.MountVolume(),
    access_mode=csi.VolumeCapability.AccessMode(mode=csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER),
)


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    total = status_kib(pid, "VmRSS")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return total
    return total + sum(tree_rss_kib(int(child)) for child in children)


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mode(mode: str, work: Path, calls: int, concurrency: int, volume: str = "") -> tuple[dict[str, float], str]:
    sock, port = work / f"{mode}.sock", free_port()
    argv = [
        sys.executable, "-m", "app", f"--mode={mode}", f"--endpoint=unix://{sock}", "--nodeid=measure",
        f"--working-mount-dir={work / 'shares'}", f"--state-dir={work / 'state'}", f"--mount-command={STANDIN}",
        f"--metrics-address=127.0.0.1:{port}", "--log-level=warning",
    ]  # fmt: skip
    with open(work / f"{mode}.log", "wb") as log:
        driver = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        channel = grpc.insecure_channel(f"unix:{sock}")
        grpc.channel_ready_future(channel).result(timeout=30)
        idle_kib = tree_rss_kib(driver.pid)
        sampler = Sampler(driver.pid)
        sampler.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            if mode == "controller":
                controller = csi_grpc.ControllerStub(channel)
                names = [f"pvc-{i}" for i in range(calls)]

                def create(i: int) -> str:
                    request = csi.CreateVolumeRequest(
                        name=names[i], volume_capabilities=[CAPABILITY],
                        parameters={"server": "127.0.0.1", "share": f"/share{i % SHARES}"},
                    )  # fmt: skip
                    return str(controller.CreateVolume(request, timeout=60).volume.volume_id)

                ids = list(pool.map(create, range(calls)))
                scrape(port)
                volume = ids.pop()  # kept for the node run
                list(pool.map(lambda v: controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=v), timeout=60), ids))
            else:
                node = csi_grpc.NodeStub(channel)
                targets = [work / "pods" / f"pod-{i}" / "mount" for i in range(calls)]
                for target in targets:
                    target.parent.mkdir(parents=True, exist_ok=True)

                def publish(target: Path) -> None:
                    node.NodePublishVolume(
                        csi.NodePublishVolumeRequest(
                            volume_id=volume, target_path=str(target), volume_capability=CAPABILITY
                        ),
                        timeout=60,
                    )

                list(pool.map(publish, targets))
                scrape(port)
                list(
                    pool.map(
                        lambda t: node.NodeUnpublishVolume(
                            csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(t)), timeout=60
                        ),
                        targets,
                    )
                )
        elapsed = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        return {
            "idle_mib": idle_kib / 1024,
            "peak_tree_rss_mib": sampler.peak_kib / 1024,
            "driver_vmhwm_mib": status_kib(driver.pid, "VmHWM") / 1024,
            "calls_per_s": 2 * calls / elapsed,
        }, volume
    finally:
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def scrape(port: int) -> None:
    for _ in range(5):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--calls", type=int, default=2000, help="CreateVolume (or NodePublishVolume) calls, then as many deletes"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="calls in flight at once (the driver has 16 workers)"
    )
    args = parser.parse_args()
    if not os.environ.get("NFS_STANDIN_HOST_NS"):
        parser.error("run it through tests/standin/isolated (it mounts)")
    with tempfile.TemporaryDirectory(prefix="nfs-csi-measure-") as tmp:
        work = Path(tmp)
        for i in range(SHARES):
            (work / "exports" / "127.0.0.1" / f"share{i}").mkdir(parents=True)
        os.environ["NFS_STANDIN_ROOT"] = str(work / "exports")
        volume = ""
        for mode in ("controller", "node"):
            result, volume = run_mode(mode, work, args.calls, args.concurrency, volume)
            print(f"{mode:<10} " + "  ".join(f"{k}={v:.1f}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
