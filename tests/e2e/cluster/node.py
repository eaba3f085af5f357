"""The single-node cluster: its namespaces, certificates, daemons and teardown.

Everything runs inside one private mount, network, PID, UTS and IPC namespace set made by `unshare`, held by a small
reaper that is PID 1 there. Killing it kills every process of the cluster (pods included), and the mounts, the
veth pair, the bridge and the pods' network namespaces go with the last of them. Inside:
- /run, /var/lib, /var/log and /opt are overlays whose upper layers are in the work directory, so kubelet,
  containerd and CNI find their default paths without one file written to the machine's own; /var/lib/kubelet
  and /var/lib/containerd are plain directories of the work directory (mounts are made under the first, and
  containerd's overlayfs snapshots cannot live on an overlay), and /srv/nfs-csi-e2e the stand-in export's tree;
- a veth pair whose two ends both stay in the namespace carries the node's address (10.250.0.1) and the default
  route kubelet needs; pods are on a CNI bridge (10.244.0.0/24); the `kubernetes` Service's ClusterIP (10.96.0.1) is
  an address of the namespace where kube-apiserver listens on 443, which is what kube-proxy would have made of it;
- the kernel tunables kubelet insists on are shown to it through files bound over /proc/sys, so it never writes
  the machine's own; its cgroups live under CGROUP_ROOT in each hierarchy, removed on teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.e2e.cluster.build import Binaries
from tests.e2e.cluster.common import CACHE, WORK, CommandFailed, log, run
from tests.e2e.cluster.images import PAUSE_IMAGE

NODE = "nfs-csi-e2e"
NODE_IP = "10.250.0.1"
PEER_IP = "10.250.0.2"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
API = "https://127.0.0.1:443"
OVERLAID = ("/run", "/var/lib", "/var/log", "/opt")
SRV = "/srv/nfs-csi-e2e"
# One per work directory, so that clusters of two clones never share one.
CGROUP_ROOT = f"nfs-csi-e2e-{hashlib.sha256(str(WORK).encode()).hexdigest()[:8]}"
# What kubelet sets unless it already reads these values (pkg/kubelet/cm: setupKernelTunables).
KUBELET_TUNABLES = {
    "vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}
START_TIMEOUT = 300
STATE = WORK / "state.json"

REAPER = """\
import os, signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
while True:
    try:
        os.wait()
    except ChildProcessError:
        signal.pause()
"""


@dataclass
class State:
    """What `down` needs to find and remove everything `up` made."""

    unshare_pid: int
    holder_pid: int
    namespaces: dict[str, str]  # ns kind -> the link of /proc/<holder>/ns/<kind>, e.g. "pid:[4026532123]"
    started: float

    def save(self) -> None:
        STATE.write_text(json.dumps(self.__dict__))

    @staticmethod
    def load() -> State | None:
        try:
            return State(**json.loads(STATE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def host_mount_namespace() -> str:
    """The machine's mount namespace: the one scripts/cluster runs in (PID 1's is not readable in every sandbox)."""
    state = State.load()
    if state is not None and "host-mnt" in state.namespaces:
        return state.namespaces["host-mnt"]
    return os.readlink("/proc/self/ns/mnt")


def alive(state: State) -> bool:
    try:
        return os.readlink(f"/proc/{state.holder_pid}/ns/pid") == state.namespaces["pid"]
    except OSError:
        return False


def nsenter(state: State) -> list[str]:
    return ["nsenter", "--target", str(state.holder_pid), "--mount", "--net", "--pid", "--uts", "--ipc"]


def inside(state: State, argv: list[str], timeout: float, check: bool = True, input: str | None = None,
           env: dict[str, str] | None = None) -> str:
    return run([*nsenter(state), "--", *argv], timeout=timeout, check=check, input=input, env=env or cluster_env())


def succeeds(state: State, argv: list[str], timeout: float = 20) -> bool:
    try:
        return subprocess.run([*nsenter(state), "--", *argv], capture_output=True, timeout=timeout,
                              env=cluster_env()).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def cluster_env() -> dict[str, str]:
    return {
        "PATH": f"{CACHE / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "KUBECONFIG": str(WORK / "pki" / "admin.kubeconfig"),
        "TMPDIR": str(WORK / "tmp"),
        "LANG": "C.UTF-8",
        # The mount.nfs stand-in refuses to work in the machine's own mount namespace; this is it.
        "NFS_STANDIN_HOST_NS": host_mount_namespace(),
    }


def start_daemon(state: State, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Start argv inside the namespaces, detached (its parent becomes the reaper), logging to logs/NAME.log."""
    logfile = WORK / "logs" / f"{name}.log"
    command = " ".join(_quote(a) for a in argv)
    run([*nsenter(state), "--", "setsid", "-f", "sh", "-c", f"exec {command} >>{_quote(str(logfile))} 2>&1 </dev/null"],
        timeout=30, env={**cluster_env(), **(env or {})})


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def wait_for(what: str, check: Callable[[], object], timeout: float = START_TIMEOUT, logfile: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (CommandFailed, OSError) as err:
            last = str(err)[-500:]
        time.sleep(1)
    tail = ""
    if logfile:
        path = WORK / "logs" / f"{logfile}.log"
        tail = "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else "(no log)"
    raise CommandFailed(f"{what} not ready after {timeout:.0f} s. Last error: {last}\n{tail}")


# Namespaces


def start_namespaces() -> State:
    for d in ("logs", "tmp", "pki", "kubelet", "containerd/root", "cni", "etcd", "srv", "overlay"):
        (WORK / d).mkdir(parents=True, exist_ok=True)
    logfile = open(WORK / "logs" / "reaper.log", "ab")
    process = subprocess.Popen(
        ["unshare", "--mount", "--net", "--pid", "--uts", "--ipc", "--fork", "--mount-proc", "--propagation", "private",
         "--", "python3", "-c", REAPER],
        stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True,
    )
    logfile.close()
    holder = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not holder:
        try:
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            if children and os.readlink(f"/proc/{children[0]}/ns/pid") != os.readlink("/proc/self/ns/pid"):
                holder = int(children[0])
        except OSError:
            pass
        time.sleep(0.05)
    if not holder:
        process.kill()
        raise CommandFailed("unshare did not start the namespace holder")
    namespaces = {kind: os.readlink(f"/proc/{holder}/ns/{kind}") for kind in ("pid", "net", "mnt", "uts", "ipc")}
    namespaces["host-mnt"] = os.readlink("/proc/self/ns/mnt")
    state = State(process.pid, holder, namespaces, time.time())
    state.save()
    setup_mounts(state)
    setup_network(state)
    return state


def setup_mounts(state: State) -> None:
    lines = ["set -e", f"hostname {NODE}"]
    for target in OVERLAID:
        name = target.strip("/").replace("/", "-")
        upper, work = WORK / "overlay" / name / "upper", WORK / "overlay" / name / "work"
        lines += [f"mkdir -p {upper} {work}",
                  f"mount -t overlay overlay-{name} -o lowerdir={target},upperdir={upper},workdir={work} {target}"]
    lines += [
        # Plain directories where overlays are not allowed (containerd's overlayfs snapshots) or mounts are made.
        "mkdir -p /var/lib/kubelet /var/lib/containerd /srv",
        f"mount --bind {WORK / 'kubelet'} /var/lib/kubelet",
        f"mount --bind {WORK / 'containerd' / 'root'} /var/lib/containerd",
        "mount -t tmpfs -o mode=0755,size=1m srv /srv",
        f"mkdir -p {SRV}",
        f"mount --bind {WORK / 'srv'} {SRV}",
    ]
    tunables = WORK / "tunables"
    tunables.mkdir(exist_ok=True)
    for key, value in KUBELET_TUNABLES.items():
        (tunables / key.replace("/", ".")).write_text(value + "\n")
        lines.append(f"mount --bind -o ro {tunables / key.replace('/', '.')} /proc/sys/{key}")
    # Mounts made under /var/lib/kubelet (by the node plugin, with Bidirectional propagation) reach kubelet and pods.
    lines.append("mount --make-rshared /")
    inside(state, ["sh", "-c", "\n".join(lines)], timeout=60)


def setup_network(state: State) -> None:
    script = f"""set -e
ip link set lo up
ip addr add {SERVICE_IP}/32 dev lo
ip link add nfse2e0 type veth peer name nfse2e1
ip addr add {NODE_IP}/24 dev nfse2e0
ip addr add {PEER_IP}/24 dev nfse2e1
ip link set nfse2e0 up
ip link set nfse2e1 up
ip route add default via {PEER_IP} dev nfse2e0
sysctl -q -w net.ipv4.ip_forward=1
"""
    inside(state, ["sh", "-c", script], timeout=60)


# Certificates


def openssl(args: list[str]) -> None:
    run(["openssl", *args], timeout=60, cwd=WORK / "pki")


def make_certificates() -> None:
    pki = WORK / "pki"
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"])
    openssl(["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=nfs-csi-e2e-ca",
             "-out", "ca.crt"])
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key"])
    openssl(["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
    certs = {
        "apiserver": ("kube-apiserver", [], ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                                             "DNS:kubernetes.default.svc.cluster.local", "DNS:localhost",
                                             f"IP:{SERVICE_IP}", "IP:127.0.0.1", f"IP:{NODE_IP}"], "serverAuth"),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["system:masters"], [], "clientAuth"),
        "admin": ("nfs-csi-e2e-admin", ["system:masters"], [], "clientAuth"),
        "controller-manager": ("system:kube-controller-manager", [], [], "clientAuth"),
        "scheduler": ("system:kube-scheduler", [], [], "clientAuth"),
        "kubelet": (f"system:node:{NODE}", ["system:nodes"], [], "clientAuth"),
        "kubelet-serving": (NODE, [], [f"DNS:{NODE}", f"IP:{NODE_IP}", "IP:127.0.0.1"], "serverAuth"),
    }
    for name, (cn, orgs, sans, usage) in certs.items():
        subject = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
        openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key"])
        openssl(["req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr"])
        ext = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature,keyEncipherment",
               "basicConstraints=critical,CA:FALSE"]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
        openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt"])
    for name in ("admin", "controller-manager", "scheduler", "kubelet"):
        write_kubeconfig(pki / f"{name}.kubeconfig", pki / f"{name}.crt", pki / f"{name}.key")


def write_kubeconfig(path: Path, cert: Path, key: Path) -> None:
    ca = WORK / "pki" / "ca.crt"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
  - name: {NODE}
    cluster: {{server: "{API}", certificate-authority: "{ca}"}}
users:
  - name: {path.stem}
    user: {{client-certificate: "{cert}", client-key: "{key}"}}
contexts:
  - name: {NODE}
    context: {{cluster: {NODE}, user: {path.stem}}}
current-context: {NODE}
""")


# Daemons


def start_etcd(state: State) -> None:
    start_daemon(state, "etcd", [
        "etcd", "--name", NODE, "--data-dir", str(WORK / "etcd"),
        "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", f"{NODE}=http://127.0.0.1:2380", "--log-level", "warn", "--logger", "zap",
        "--quota-backend-bytes", str(2 * 1024**3),
    ])
    wait_for("etcd", lambda: '"health":"true"' in inside(state, ["curl", "-s", "http://127.0.0.1:2379/health"], timeout=10),
             timeout=60, logfile="etcd")


def start_control_plane(state: State, binaries: Binaries) -> None:
    pki = WORK / "pki"
    start_daemon(state, "kube-apiserver", [
        str(binaries / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
        "--bind-address=0.0.0.0", "--secure-port=443", f"--advertise-address={NODE_IP}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}", "--kubelet-preferred-address-types=InternalIP",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--profiling=false", "--v=1",
    ])
    wait_for("kube-apiserver", lambda: inside(state, ["kubectl", "get", "--raw", "/readyz"], timeout=20).strip() == "ok",
             logfile="kube-apiserver")
    start_daemon(state, "kube-controller-manager", [
        str(binaries / "kube-controller-manager"), f"--kubeconfig={pki / 'controller-manager.kubeconfig'}",
        f"--authentication-kubeconfig={pki / 'controller-manager.kubeconfig'}",
        f"--authorization-kubeconfig={pki / 'controller-manager.kubeconfig'}",
        "--leader-elect=false", "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--bind-address=127.0.0.1", "--v=1",
    ])
    start_daemon(state, "kube-scheduler", [
        str(binaries / "kube-scheduler"), f"--kubeconfig={pki / 'scheduler.kubeconfig'}",
        f"--authentication-kubeconfig={pki / 'scheduler.kubeconfig'}",
        f"--authorization-kubeconfig={pki / 'scheduler.kubeconfig'}",
        "--leader-elect=false", "--bind-address=127.0.0.1", "--v=1",
    ])


def containerd_config() -> Path:
    path = WORK / "containerd" / "config.toml"
    path.write_text(f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: runc fails to lower a container's oom_score_adj below its own without it.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{WORK / 'cni' / 'net.d'}"
""")
    net = WORK / "cni" / "net.d"
    net.mkdir(parents=True, exist_ok=True)
    (net / "10-bridge.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "nfs-csi-e2e",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(WORK / "cni" / "ipam")}},
            {"type": "loopback"},
        ],
    }, indent=2))
    return path


def start_containerd(state: State) -> None:
    start_daemon(state, "containerd", ["containerd", "--config", str(containerd_config())])
    wait_for("containerd", lambda: "Server" in ctr(state, ["version"], timeout=10), timeout=60, logfile="containerd")


def ctr(state: State, args: list[str], timeout: float) -> str:
    return inside(state, ["ctr", "--address", "/run/containerd/containerd.sock", "--namespace", "k8s.io", *args],
                  timeout=timeout)


def import_images(state: State, archives: list[Path]) -> None:
    for archive in archives:
        ctr(state, ["images", "import", str(archive)], timeout=600)


def cgroup_hierarchies() -> list[Path]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            out.append(Path(fields[4]))
    return out


def start_kubelet(state: State, binaries: Binaries) -> None:
    pki = WORK / "pki"
    for hierarchy in cgroup_hierarchies():
        if hierarchy.name != "unified":
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)
    config = WORK / "kubelet-config.yaml"
    config.write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: "{pki / 'ca.crt'}"}}
authorization: {{mode: Webhook}}
tlsCertFile: "{pki / 'kubelet-serving.crt'}"
tlsPrivateKeyFile: "{pki / 'kubelet-serving.key'}"
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
volumePluginDir: /var/lib/kubelet/volumeplugins
# Imported images cannot be pulled again: never collect them, never evict for disk the shared machine uses.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
serializeImagePulls: false
podCIDR: {POD_CIDR}
maxPods: 110
""")
    start_daemon(state, "kubelet", [
        str(binaries / "kubelet"), f"--config={config}", f"--kubeconfig={pki / 'kubelet.kubeconfig'}",
        f"--hostname-override={NODE}", f"--node-ip={NODE_IP}", "--root-dir=/var/lib/kubelet", "--v=1",
    ])
    wait_for("node Ready", lambda: inside(state, [
        "kubectl", "get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"],
        timeout=20).strip() == "True", logfile="kubelet")


def kubectl(state: State, args: list[str], timeout: float = 120, input: str | None = None, check: bool = True) -> str:
    return inside(state, ["kubectl", *args], timeout=timeout, input=input, check=check)


# Teardown


def processes_in(pid_namespace: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == pid_namespace:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def remove_cgroups() -> list[str]:
    """rmdir CGROUP_ROOT in every hierarchy, deepest first; what could not be removed."""
    left = []
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / CGROUP_ROOT
        if not top.exists():
            continue
        deadline = time.monotonic() + 30
        while top.exists() and time.monotonic() < deadline:
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except OSError:
                    pass
            if top.exists():
                time.sleep(0.5)
        if top.exists():
            left.append(str(top))
    return left


def down(quiet: bool = False) -> list[str]:
    """Kill the namespaces' PID 1 (and with it everything in them), remove what stays, and prove nothing is left."""
    state = State.load()
    problems = []
    if state is not None and alive(state):
        os.kill(state.holder_pid, signal.SIGKILL)
    if state is not None:
        deadline = time.monotonic() + 60
        while processes_in(state.namespaces["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            os.waitpid(state.unshare_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        left = processes_in(state.namespaces["pid"])
        if left:
            problems.append(f"processes still running in the cluster's PID namespace: {left}")
        for kind in ("net", "mnt"):
            users = [p for p in _all_pids() if _ns(p, kind) == state.namespaces[kind]]
            if users:
                problems.append(f"processes still in the cluster's {kind} namespace: {users}")
    problems += [f"cgroup not removed: {c}" for c in remove_cgroups()]
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(WORK) in line or " /var/lib/kubelet" in line or f" {SRV}" in line]
    problems += [f"mount left on the machine: {m}" for m in mounts]
    links = run(["ip", "-o", "link", "show"], timeout=30)
    problems += [f"network interface left on the machine: {line}" for line in links.splitlines()
                 if "nfse2e" in line or "cni0" in line]
    tunables = {key: Path(f"/proc/sys/{key}").read_text().strip() for key in KUBELET_TUNABLES}
    if state is not None:
        saved = WORK / "tunables.before.json"
        if saved.exists() and json.loads(saved.read_text()) != tunables:
            problems.append(f"kernel tunables changed: {json.loads(saved.read_text())} -> {tunables}")
    if not problems:
        for d in ("containerd", "kubelet", "overlay", "etcd", "srv", "tmp", "cni", "ganesha", "addons", "tunables"):
            shutil.rmtree(WORK / d, ignore_errors=True)
        STATE.unlink(missing_ok=True)
        if not quiet:
            log("down: no process, mount, network interface, cgroup or kernel tunable of the cluster is left on the "
                "machine (checked: its PID, network and mount namespaces are empty; /proc/self/mountinfo; ip link; "
                f"/sys/fs/cgroup/*/{CGROUP_ROOT}; /proc/sys)")
    return problems


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _ns(pid: int, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return ""


def record_tunables() -> None:
    (WORK / "tunables.before.json").write_text(json.dumps(
        {key: Path(f"/proc/sys/{key}").read_text().strip() for key in KUBELET_TUNABLES}))

