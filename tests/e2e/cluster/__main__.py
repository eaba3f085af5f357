"""scripts/cluster: build, start, use and tear down the single-node Kubernetes the e2e tests run on.

  up                 build what is missing (cached outside the clone), start the cluster, deploy the driver
  down               tear everything down, and prove nothing the cluster made is left on the machine
  status             what runs
  exec -- CMD ...    run CMD inside the cluster's namespaces (KUBECONFIG set, kubectl on PATH)
  e2e [--full]       Kubernetes' external-storage e2e: the CI subset, or every non-disruptive spec
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.cluster import node
from tests.e2e.cluster.build import KUBERNETES, SNAPSHOTTER, SNAPSHOTTER_CLIENT, build_all, module_dir
from tests.e2e.cluster.common import CACHE, ROOT, WORK, CommandFailed, log, run
from tests.e2e.cluster.images import build_images, sidecar_name

APT_PACKAGES = {
    "etcd": "etcd-server", "containerd": "containerd", "runc": "runc", "ctr": "containerd",
    "/usr/lib/cni/bridge": "containernetworking-plugins", "mmdebstrap": "mmdebstrap", "/bin/busybox": "busybox-static",
    "openssl": "openssl", "ip": "iproute2", "curl": "curl", "nsenter": "util-linux", "gcc": "gcc",
    "ganesha.nfsd": "nfs-ganesha", "nfs-ls": "libnfs-utils",
}
EXPORT = "/exports"


def install_packages() -> None:
    if not shutil.which("go"):
        raise CommandFailed("Go is missing: install Go 1.26 or newer (https://go.dev/dl/); the cluster is built with it")
    missing = sorted({pkg for tool, pkg in APT_PACKAGES.items()
                      if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool))})
    if not missing and Path("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists():
        return
    missing = sorted({*missing, "nfs-ganesha-vfs"})
    log(f"apt-get install {' '.join(missing)}")
    run(["apt-get", "update", "-qq"], timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=1200,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def export_dir() -> Path:
    """The directory nfs-ganesha exports as NODE_IP:/exports, and the mount.nfs stand-in serves under the same name."""
    return WORK / "srv" / "standin-root" / node.NODE_IP / EXPORT.strip("/")


def prepare_standin() -> None:
    """/srv/nfs-csi-e2e in the cluster: the stand-in (read from the clone) and a wrapper naming its export root."""
    srv = WORK / "srv"
    export_dir().mkdir(parents=True, exist_ok=True)
    (srv / "standin").mkdir(exist_ok=True)
    (srv / "bin").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "tests" / "standin" / "mount.nfs", srv / "standin" / "mount.nfs")
    wrapper = srv / "bin" / "mount.nfs"
    wrapper.write_text(
        "#!/bin/bash\n"
        "# The e2e node's mount.nfs: tests/standin/mount.nfs, serving SERVER:/PATH from the export tree below.\n"
        f"export NFS_STANDIN_HOST_NS='{node.host_mount_namespace()}' NFS_STANDIN_ROOT={node.SRV}/standin-root\n"
        f"exec {node.SRV}/standin/mount.nfs \"$@\"\n"
    )
    wrapper.chmod(0o755)


def start_ganesha(state: node.State) -> None:
    from tests.integration.ganesha import CONFIG, _plugins_dir

    plugins = _plugins_dir()
    if plugins is None:
        raise CommandFailed("nfs-ganesha's VFS plugin is missing: apt-get install nfs-ganesha-vfs")
    base = WORK / "ganesha"
    (base / "state").mkdir(parents=True, exist_ok=True)
    config = base / "ganesha.conf"
    config.write_text(CONFIG.format(port=2049, server=node.NODE_IP, plugins=plugins, state=base / "state",
                                    export=export_dir(), pseudo=EXPORT))
    node.start_daemon(state, "ganesha", ["ganesha.nfsd", "-F", "-f", str(config), "-L", str(WORK / "logs" / "ganesha.log"),
                                         "-p", str(base / "ganesha.pid"), "-N", "NIV_EVENT"])
    node.wait_for("nfs-ganesha", lambda: node.succeeds(state, ["nfs-ls", f"nfs://{node.NODE_IP}{EXPORT}?version=4"]),
                  timeout=60, logfile="ganesha")


def install_snapshot_controller(state: node.State) -> None:
    client, _ = module_dir(SNAPSHOTTER_CLIENT, SNAPSHOTTER[1])
    node.kubectl(state, ["apply", "--server-side", "-k", str(client / "config" / "crd")], timeout=120)
    src, _ = module_dir(*SNAPSHOTTER)
    addon = WORK / "addons" / "snapshot-controller"
    addon.mkdir(parents=True, exist_ok=True)
    for name in ("rbac-snapshot-controller.yaml", "setup-snapshot-controller.yaml"):
        shutil.copy(src / "deploy" / "kubernetes" / "snapshot-controller" / name, addon / name)
    (addon / "kustomization.yaml").write_text(f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [rbac-snapshot-controller.yaml, setup-snapshot-controller.yaml]
replicas: [{{name: snapshot-controller, count: 1}}]
images:
  - name: registry.k8s.io/sig-storage/snapshot-controller
    newName: {sidecar_name('snapshot-controller', SNAPSHOTTER[1]).rpartition(':')[0]}
    newTag: {SNAPSHOTTER[1]}
""")
    node.kubectl(state, ["apply", "-k", str(addon)], timeout=120)


def deploy_driver(state: node.State) -> None:
    node.kubectl(state, ["apply", "-k", str(ROOT / "deploy" / "overlays" / "e2e")], timeout=180)
    node.kubectl(state, ["-n", "nfs-csi", "rollout", "status", "daemonset/nfs-csi-node", "--timeout=300s"], timeout=330)
    node.kubectl(state, ["-n", "nfs-csi", "rollout", "status", "deployment/nfs-csi-controller", "--timeout=300s"],
                 timeout=330)
    node.wait_for("the driver registered with kubelet", lambda: "nfs.csi.ownedstorage.dev" in node.kubectl(
        state, ["get", "csinode", node.NODE, "-o", "jsonpath={.spec.drivers[*].name}"], check=False), timeout=120,
        logfile="kubelet")


def up() -> int:
    if (state := node.State.load()) is not None and node.alive(state):
        log("a cluster is already up: scripts/cluster down first")
        return 1
    if WORK.exists():
        problems = node.down(quiet=True)  # what a killed earlier run left
        if problems:
            log("an earlier cluster left things behind:\n" + "\n".join(problems))
            return 1
        shutil.rmtree(WORK)  # its logs and reports too: this run's are the ones to read
    started = time.monotonic()
    install_packages()
    binaries = build_all()
    images = build_images(binaries)
    built = time.monotonic()
    log(f"build: done in {built - started:.0f} s (binaries and images under {CACHE})")
    WORK.mkdir(parents=True, exist_ok=True)
    node.record_tunables()
    prepare_standin()
    state = node.start_namespaces()
    node.make_certificates()
    node.start_etcd(state)
    node.start_control_plane(state, binaries)
    node.start_containerd(state)
    node.import_images(state, [image.archive for image in images])
    node.start_kubelet(state, binaries)
    control_plane = time.monotonic()
    log(f"cluster: Kubernetes {KUBERNETES} node {node.NODE} Ready in {control_plane - built:.0f} s")
    start_ganesha(state)
    install_snapshot_controller(state)
    deploy_driver(state)
    done = time.monotonic()
    timings = {"build_seconds": round(built - started, 1), "start_seconds": round(done - built, 1),
               "total_seconds": round(done - started, 1)}
    (WORK / "up-timings.json").write_text(json.dumps(timings))
    log(f"up: build {timings['build_seconds']:.0f} s + start {timings['start_seconds']:.0f} s = "
        f"{timings['total_seconds']:.0f} s (the driver deployed with kubectl apply -k deploy/overlays/e2e)")
    return 0


def status() -> int:
    state = node.State.load()
    if state is None or not node.alive(state):
        print("cluster: down")
        return 1
    print(f"cluster: up (namespace holder pid {state.holder_pid}, work directory {WORK})")
    print(node.kubectl(state, ["get", "nodes,pods", "-A", "-o", "wide"], check=False))
    return 0


def exec_(argv: list[str]) -> int:
    state = node.State.load()
    if state is None or not node.alive(state):
        log("the cluster is down: scripts/cluster up first")
        return 1
    env = {**os.environ, **node.cluster_env(), "PATH": node.cluster_env()["PATH"] + ":" + os.environ.get("PATH", "")}
    return subprocess.run([*node.nsenter(state), f"--wd={os.getcwd()}", "--", *argv], env=env).returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("build")
    ex = sub.add_parser("exec")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    e2e = sub.add_parser("e2e")
    e2e.add_argument("--full", action="store_true")
    e2e.add_argument("--focus", default="")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        log("scripts/cluster needs root (namespaces, mounts, containerd)")
        return 1
    try:
        if args.command == "up":
            return up()
        if args.command == "build":
            install_packages()
            build_images(build_all())
            return 0
        if args.command == "down":
            problems = node.down()
            for p in problems:
                log(f"down: {p}")
            return 1 if problems else 0
        if args.command == "status":
            return status()
        if args.command == "exec":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return exec_(command)
        if args.command == "e2e":
            from tests.e2e.cluster.storage_e2e import run_suite

            return run_suite(full=args.full, focus=args.focus)
    except CommandFailed as err:
        log(f"{args.command} failed: {err}")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
