"""Build the Kustomize overlays and check what they produce: schemas, CRDs, and what a working install needs.

Every check returns a list of problems, each a sentence naming the object and what is wrong; [] means it passed.
"""

from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
WORK = ROOT / ".work"
# The oldest and the newest Kubernetes this deployment is validated for, and one between.
KUBERNETES_VERSIONS = ("1.31.0", "1.34.0", "1.37.0")
DRIVER = "nfs-csi-driver"  # the driver's container name in both pods
KUBELET_DIR = "/var/lib/kubelet"
TIMEOUT = 120

Obj = dict[str, Any]

# Custom resources the deployment uses, and the upstream CRD each is validated against (scripts/install-tools).
CRD_FILES = {
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"): "snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}
CUSTOM_KINDS = {kind for _, kind in CRD_FILES}


def _grant(group: str, resources: Iterable[str], verbs: Iterable[str]) -> list[tuple[str, str, str]]:
    return [(group, r, v) for r in resources for v in verbs]


READ = ("get", "list", "watch")
EVENTS = _grant("", ["events"], ["list", "watch", "create", "update", "patch"])
VOLUME_ATTRIBUTES_CLASSES = _grant("storage.k8s.io", ["volumeattributesclasses"], READ)
# What each controller sidecar needs, and all it may have: its upstream RBAC (csi-provisioner v6, csi-snapshotter
# v8, csi-resizer v2) less what these manifests do without (Secrets: no class uses secrets; group snapshots; the
# provisioner's capacity tracking). What depends on a flag is in conditional_permissions.
REQUIRED_PERMISSIONS: dict[str, list[tuple[str, str, str]]] = {
    "csi-provisioner": [
        *_grant("", ["persistentvolumes"], [*READ, "create", "patch", "delete"]),
        *_grant("", ["persistentvolumeclaims"], [*READ, "update"]),
        *_grant("storage.k8s.io", ["storageclasses", "csinodes"], READ),
        *_grant("", ["nodes"], READ),
        *EVENTS,
        *_grant("snapshot.storage.k8s.io", ["volumesnapshots", "volumesnapshotcontents"], ["get", "list"]),
    ],
    "csi-snapshotter": [
        *EVENTS,
        *_grant("snapshot.storage.k8s.io", ["volumesnapshotclasses"], READ),
        *_grant("snapshot.storage.k8s.io", ["volumesnapshotcontents"], [*READ, "update", "patch"]),
        *_grant("snapshot.storage.k8s.io", ["volumesnapshotcontents/status"], ["update", "patch"]),
    ],
    "csi-resizer": [
        *_grant("", ["persistentvolumes"], [*READ, "patch"]),
        *_grant("", ["persistentvolumeclaims"], READ),
        *_grant("", ["persistentvolumeclaims/status"], ["patch"]),
        *EVENTS,
    ],
}
# Sidecars that read VolumeAttributesClasses unless their VolumeAttributesClass feature gate is off.
VAC_SIDECARS = ("csi-provisioner", "csi-resizer")


def feature_gates(c: Obj) -> dict[str, bool]:
    """--feature-gates=A=true,B=false of a container."""
    gates = {}
    for item in flags(c).get("feature-gates", "").split(","):
        name, sep, value = item.strip().partition("=")
        if name and sep:
            gates[name] = value.strip().lower() == "true"
    return gates


def conditional_permissions(c: Obj) -> list[tuple[str, str, str]]:
    """What a sidecar needs because of (or unless) a flag: VolumeAttributesClasses, and Pods for the resizer's
    --handle-volume-inuse-error (default true)."""
    out = []
    if c["name"] in VAC_SIDECARS and feature_gates(c).get("VolumeAttributesClass", True):
        out += VOLUME_ATTRIBUTES_CLASSES
    if c["name"] == "csi-resizer" and flags(c).get("handle-volume-inuse-error", "true") != "false":
        out += _grant("", ["pods"], READ)
    return out


LEADER_ELECTION_PERMISSIONS = _grant("coordination.k8s.io", ["leases"], [*READ, "create", "update", "delete"])
SIDECARS = {
    "Deployment": {"csi-provisioner", "csi-snapshotter", "csi-resizer", "liveness-probe"},
    "DaemonSet": {"node-driver-registrar", "liveness-probe"},
}
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.+-]+)?$")


class ToolFailed(Exception):
    """An external tool (kustomize, promtool, kubernetes-validate) failed; the message carries its output."""


@dataclass(frozen=True)
class Tools:
    kustomize: Path
    promtool: Path
    kubernetes_validate: Path
    crds: Path
    jq: Path


def run(argv: list[str], timeout: float = TIMEOUT, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


# Building


def overlays() -> list[str]:
    return sorted(p.name for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def build(kustomize: Path, directory: Path) -> str:
    result = run([str(kustomize), "build", str(directory)])
    if result.returncode != 0:
        raise ToolFailed(f"kustomize build {directory} failed:\n{result.stderr}")
    return result.stdout


def load(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def ident(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(objs: Iterable[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") in kinds]


# Schemas


def kubernetes_validate(tool: Path, manifest: Path, versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """`kubernetes-validate --strict` for each version. A kind it has no schema for must be one we check by CRD."""
    argv = [str(tool), "--strict", "--quiet"]
    for version in versions:
        argv += ["-k", version]
    result = run([*argv, str(manifest)])
    problems = []
    for line in result.stdout.splitlines():
        if line.startswith(("ERROR", "FATAL")):
            problems.append(line.replace(f"{manifest} ", "", 1))
        elif line.startswith("WARN"):
            match = re.search(r"schema for kind (\S+) with api version (\S+)", line)
            if not match or match.group(1) not in CUSTOM_KINDS:
                problems.append(f"{line.replace(f'{manifest} ', '', 1)} (neither built in nor a CRD we validate)")
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {result.returncode}: {result.stdout}{result.stderr}")
    return problems


def strict_schema(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema that, like the API server, refuses unknown fields.

    Objects with properties get additionalProperties: false unless x-kubernetes-preserve-unknown-fields says
    otherwise; nullable becomes a null type. CEL rules (x-kubernetes-validations) are not evaluated.
    """
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def crd_schema(crds: Path, api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.rpartition("/")
    crd = yaml.safe_load((crds / CRD_FILES[(group, kind)]).read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", True):
            return strict_schema(served["schema"]["openAPIV3Schema"])
    raise KeyError(f"the {kind} CRD serves no version {version}")


def validate_custom_resources(objs: Iterable[Obj], crds: Path) -> list[str]:
    problems = []
    for obj in objs:
        group = obj["apiVersion"].rpartition("/")[0]
        if (group, obj["kind"]) not in CRD_FILES:
            continue
        try:
            schema = crd_schema(crds, obj["apiVersion"], obj["kind"])
        except KeyError as err:
            problems.append(f"{ident(obj)}: {err.args[0]}")
            continue
        validator = jsonschema.Draft4Validator(schema)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
            where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
            problems.append(f"{ident(obj)} does not match its CRD: {where}: {error.message}")
    return problems


# Reading pods


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def container(workload: Obj, name: str) -> Obj | None:
    return next((c for c in containers(workload) if c["name"] == name), None)


def workloads(objs: Iterable[Obj]) -> list[Obj]:
    return of_kind(objs, "Deployment", "DaemonSet", "StatefulSet", "Pod")


def driver_workloads(objs: Iterable[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for w in of_kind(objs, "Deployment", "DaemonSet"):
        driver = container(w, DRIVER)
        if driver is not None:
            yield w, driver


def expand(value: str, c: Obj) -> str:
    """$(VAR) as the kubelet expands it from the container's env; a fieldRef becomes <fieldPath>."""
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = f"<{e['valueFrom']['fieldRef']['fieldPath']}>"
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def flags(c: Obj) -> dict[str, str]:
    """--name=value (or -name=value) arguments, expanded; a bare --name is 'true'."""
    out = {}
    for arg in [*c.get("command", []), *c.get("args", [])]:
        if arg.startswith("-"):
            name, sep, value = arg.lstrip("-").partition("=")
            out[name] = expand(value, c) if sep else "true"
    return out


def volume_of(workload: Obj, c: Obj, path: str) -> tuple[str, str] | None:
    """(volume name, path below the volume) for a path in a container, by the longest mountPath holding it."""
    best: tuple[str, str] | None = None
    best_len = -1
    for m in c.get("volumeMounts", []):
        mount = m["mountPath"].rstrip("/") or "/"
        if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > best_len:
            rel = path[len(mount) :].lstrip("/")
            best, best_len = (m["name"], "/".join(p for p in (m.get("subPath", ""), rel) if p)), len(mount)
    return best


def host_path(workload: Obj, volume: str) -> str | None:
    for v in pod_spec(workload).get("volumes", []):
        if v["name"] == volume and "hostPath" in v:
            return str(v["hostPath"]["path"]).rstrip("/")
    return None


def port_number(c: Obj, port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    return next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == port), None)


def pod_port(workload: Obj, port: int | str) -> int | None:
    """A numbered port, or a named one as some container of the pod declares it."""
    if isinstance(port, int) or port.isdigit():
        return int(port)
    return next((n for c in containers(workload) if (n := port_number(c, port)) is not None), None)


def address_port(address: str) -> int | None:
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# Policies


def check_driver_name(objs: list[Obj]) -> list[str]:
    """One name in the CSIDriver, every StorageClass provisioner, VolumeSnapshotClass driver and --drivername."""
    drivers = of_kind(objs, "CSIDriver")
    if len(drivers) != 1:
        return [f"expected exactly one CSIDriver, found {len(drivers)}"]
    name = drivers[0]["metadata"]["name"]
    problems = []
    for sc in of_kind(objs, "StorageClass"):
        if sc.get("provisioner") != name:
            problems.append(
                f"StorageClass {sc['metadata']['name']}: provisioner {sc.get('provisioner')!r} is not the CSIDriver's name {name!r}"
            )
    for vsc in of_kind(objs, "VolumeSnapshotClass"):
        if vsc.get("driver") != name:
            problems.append(
                f"VolumeSnapshotClass {vsc['metadata']['name']}: driver {vsc.get('driver')!r} is not the CSIDriver's name {name!r}"
            )
    found = False
    for w, driver in driver_workloads(objs):
        found = True
        flag = flags(driver).get("drivername")
        if flag != name:
            problems.append(f"{ident(w)}: the driver's --drivername is {flag!r}, not the CSIDriver's name {name!r}")
    if not found:
        problems.append(f"no Deployment or DaemonSet runs a container named {DRIVER}")
    return problems


def check_sockets(objs: list[Obj]) -> list[str]:
    """Every sidecar's --csi-address is the driver's --endpoint, on the same volume; kubelet finds the node's."""
    problems = []
    csi_driver = next((d["metadata"]["name"] for d in of_kind(objs, "CSIDriver")), "?")
    for w, driver in driver_workloads(objs):
        endpoint = flags(driver).get("endpoint", "")
        if not endpoint.startswith("unix:///"):
            problems.append(f"{ident(w)}: the driver's --endpoint {endpoint!r} is not a unix socket path")
            continue
        socket = endpoint.removeprefix("unix://")
        where = volume_of(w, driver, socket)
        if where is None:
            problems.append(f"{ident(w)}: the driver's socket {socket} is on no volume, so no sidecar can reach it")
            continue
        expected = SIDECARS.get(w["kind"], set())
        names = {c["name"] for c in containers(w)} - {DRIVER}
        for missing in sorted(expected - names):
            problems.append(f"{ident(w)}: the sidecar {missing} is missing")
        for c in containers(w):
            if c["name"] == DRIVER:
                continue
            address = flags(c).get("csi-address")
            if address is None:
                problems.append(f"{ident(w)}: container {c['name']} has no --csi-address")
                continue
            theirs = volume_of(w, c, address)
            if theirs != where:
                problems.append(
                    f"{ident(w)}: {c['name']} looks for the CSI socket at {address} (volume:path {theirs}) but the "
                    f"driver listens at {socket} (volume:path {where})"
                )
        if w["kind"] == "DaemonSet":
            registrar = container(w, "node-driver-registrar")
            if registrar is None:
                continue
            host = host_path(w, where[0])
            on_host = f"{host}/{where[1]}" if host else None
            wanted = f"{KUBELET_DIR}/plugins/{csi_driver}/csi.sock"
            registration = flags(registrar).get("kubelet-registration-path")
            if on_host != wanted:
                problems.append(f"{ident(w)}: the driver's socket is at {on_host} on the host, not {wanted}")
            if registration != on_host:
                problems.append(
                    f"{ident(w)}: node-driver-registrar tells kubelet the socket is at {registration}, but on the host "
                    f"it is at {on_host}"
                )
            reg = volume_of(w, registrar, "/registration")
            if reg is None or host_path(w, reg[0]) != f"{KUBELET_DIR}/plugins_registry" or reg[1]:
                problems.append(
                    f"{ident(w)}: node-driver-registrar's /registration is not the host's {KUBELET_DIR}/plugins_registry"
                )
    return problems


def check_node_plugin(objs: list[Obj]) -> list[str]:
    """The node driver: privileged, kubelet's directory at the same path with Bidirectional propagation, state kept."""
    problems = []
    nodes = [(w, d) for w, d in driver_workloads(objs) if flags(d).get("mode") == "node"]
    if [w["kind"] for w, _ in nodes] != ["DaemonSet"]:
        problems.append(
            f"expected one DaemonSet running the driver with --mode=node, found {[ident(w) for w, _ in nodes]}"
        )
    for w, _ in driver_workloads(objs):
        mode = flags(container(w, DRIVER) or {}).get("mode")
        wanted = {"Deployment": "controller", "DaemonSet": "node"}[w["kind"]]
        if mode != wanted:
            problems.append(f"{ident(w)}: the driver runs with --mode={mode}, expected {wanted}")
    for w, driver in nodes:
        spec = pod_spec(w)
        if not driver.get("securityContext", {}).get("privileged"):
            problems.append(
                f"{ident(w)}: the node driver is not privileged (mounting and Bidirectional propagation need it)"
            )
        pods_dir = f"{KUBELET_DIR}/pods"
        where = volume_of(w, driver, pods_dir)
        mount = next((m for m in driver.get("volumeMounts", []) if where and m["name"] == where[0]), None)
        host = host_path(w, where[0]) if where else None
        if where is None or host is None or f"{host}/{where[1]}".rstrip("/") != pods_dir:
            problems.append(f"{ident(w)}: the node driver does not see the host's {pods_dir} at the same path")
        elif mount is None or mount.get("mountPropagation") != "Bidirectional":
            problems.append(
                f"{ident(w)}: the node driver mounts {mount and mount['mountPath']} without mountPropagation: Bidirectional, "
                "so kubelet and the pods would not see its mounts"
            )
        state = flags(driver).get("state-dir", "/var/lib/nfs-csi")
        state_at = volume_of(w, driver, state)
        if state_at is None or host_path(w, state_at[0]) is None:
            problems.append(f"{ident(w)}: --state-dir {state} is not on a hostPath volume, so it is lost with the pod")
        if not spec.get("hostNetwork"):
            problems.append(
                f"{ident(w)}: the node plugin is not on hostNetwork; its NFS mounts would die with the pod's network"
            )
        elif spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
            problems.append(
                f"{ident(w)}: hostNetwork without dnsPolicy ClusterFirstWithHostNet cannot resolve in-cluster servers"
            )
    return problems


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference; a registry's :port is not a tag."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None


def check_images_pinned(objs: list[Obj]) -> list[str]:
    """Every image names an exact version (or a digest); never latest, never none."""
    problems = []
    for w in workloads(objs):
        for c in containers(w):
            image = c.get("image", "")
            _, tag, digest = split_image(image)
            if digest:
                continue
            if tag is None:
                problems.append(f"{ident(w)} container {c['name']}: image {image!r} has no tag, so it means latest")
            elif not EXACT_VERSION.match(tag):
                problems.append(f"{ident(w)} container {c['name']}: image {image!r} is not pinned to an exact version")
    return problems


def check_metrics(objs: list[Obj]) -> list[str]:
    """The port in --metrics-address is the container's 'metrics' port, the Service's and the monitors' too."""
    problems = []
    ports: dict[str, int] = {}
    for w, driver in driver_workloads(objs):
        address = flags(driver).get("metrics-address")
        port = address_port(address or "")
        if port is None:
            problems.append(f"{ident(w)}: the driver has no --metrics-address with a port (got {address!r})")
            continue
        declared = port_number(driver, "metrics")
        if declared != port:
            problems.append(
                f"{ident(w)}: the driver serves metrics on port {port} but declares port 'metrics' as {declared}"
            )
        ports[ident(w)] = port
        probe = driver.get("readinessProbe", {}).get("httpGet")
        if probe and port_number(driver, probe["port"]) != port:
            problems.append(f"{ident(w)}: the readiness probe asks port {probe['port']}, not the metrics port {port}")
    services = of_kind(objs, "Service")
    for monitor in of_kind(objs, "ServiceMonitor"):
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        chosen = [s for s in services if selects(selector, s["metadata"].get("labels", {}))]
        if not chosen:
            problems.append(f"{ident(monitor)} selects no Service (matchLabels {selector})")
        for service in chosen:
            backends = [
                (w, d)
                for w, d in driver_workloads(objs)
                if selects(service["spec"].get("selector", {}), w["spec"]["template"]["metadata"].get("labels", {}))
            ]
            if not backends:
                problems.append(f"{ident(service)} selects no driver pods")
            for endpoint in monitor["spec"].get("endpoints", []):
                sport = next((p for p in service["spec"]["ports"] if p.get("name") == endpoint.get("port")), None)
                if sport is None:
                    problems.append(
                        f"{ident(monitor)} scrapes port {endpoint.get('port')!r}, which {ident(service)} does not have"
                    )
                    continue
                for w, driver in backends:
                    target = port_number(driver, sport.get("targetPort", sport["port"]))
                    if target != ports.get(ident(w)):
                        problems.append(
                            f"{ident(monitor)} scrapes {ident(w)} on port {target}, "
                            f"but its driver serves metrics on {ports.get(ident(w))}"
                        )
    for monitor in of_kind(objs, "PodMonitor"):
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        chosen = [
            (w, d)
            for w, d in driver_workloads(objs)
            if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if not chosen:
            problems.append(f"{ident(monitor)} selects no driver pods (matchLabels {selector})")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            for w, driver in chosen:
                target = port_number(driver, endpoint.get("port", ""))
                if target != ports.get(ident(w)):
                    problems.append(
                        f"{ident(monitor)} scrapes {ident(w)} on port {target}, "
                        f"but its driver serves metrics on {ports.get(ident(w))}"
                    )
    return problems


def check_liveness(objs: list[Obj]) -> list[str]:
    """The driver's liveness probe asks the liveness-probe sidecar, where the sidecar listens."""
    problems = []
    for w, driver in driver_workloads(objs):
        sidecar = container(w, "liveness-probe")
        probe = driver.get("livenessProbe", {}).get("httpGet")
        if sidecar is None or probe is None:
            problems.append(f"{ident(w)}: the driver needs a livenessProbe served by a liveness-probe sidecar")
            continue
        endpoint = flags(sidecar).get("http-endpoint") or f":{flags(sidecar).get('health-port', '9808')}"
        listen_host, _, _ = endpoint.rpartition(":")
        port = pod_port(w, probe["port"])
        if port != address_port(endpoint):
            problems.append(
                f"{ident(w)}: the driver's liveness probe asks port {probe['port']} but liveness-probe listens on {endpoint}"
            )
        if listen_host in ("127.0.0.1", "localhost") and not (
            pod_spec(w).get("hostNetwork") and probe.get("host") == listen_host
        ):
            problems.append(f"{ident(w)}: liveness-probe listens on {endpoint}, which the kubelet's probe cannot reach")
    return problems


def _rules_of(objs: list[Obj], kind: str, name: str) -> list[Obj]:
    return next((o.get("rules", []) for o in of_kind(objs, kind) if o["metadata"]["name"] == name), [])


def allows(rules: list[Obj], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
        for r in rules
    )


def needed_permissions(c: Obj) -> list[tuple[str, str, str]]:
    """Everything a controller sidecar needs as it is configured, leader election included."""
    needed = [*REQUIRED_PERMISSIONS.get(c["name"], []), *conditional_permissions(c)]
    if flags(c).get("leader-election") == "true":
        needed += LEADER_ELECTION_PERMISSIONS
    return needed


def check_rbac(objs: list[Obj]) -> list[str]:
    """Bindings are whole, nothing is a wildcard or reads Secrets, and the controller's ServiceAccount may do exactly
    what its sidecars need: nothing is missing, and no role grants what none of them uses."""
    problems = []
    accounts = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in of_kind(objs, "ServiceAccount")}
    for w in workloads(objs):
        account = pod_spec(w).get("serviceAccountName", "default")
        if (w["metadata"].get("namespace"), account) not in accounts:
            problems.append(f"{ident(w)}: ServiceAccount {account} is not in the build")
    for role in of_kind(objs, "ClusterRole", "Role"):
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    problems.append(f"{ident(role)}: a wildcard in {field}")
            if "secrets" in rule.get("resources", []):
                problems.append(f"{ident(role)}: reads Secrets, which no StorageClass here needs")
    granted: dict[tuple[str | None, str], list[Obj]] = {}
    roles_of: dict[tuple[str | None, str], list[Obj]] = {}
    for binding in of_kind(objs, "ClusterRoleBinding", "RoleBinding"):
        ref = binding["roleRef"]
        bound = next((o for o in of_kind(objs, ref["kind"]) if o["metadata"]["name"] == ref["name"]), None)
        rules = _rules_of(objs, ref["kind"], ref["name"])
        if not rules:
            problems.append(f"{ident(binding)}: binds {ref['kind']} {ref['name']}, which is not in the build")
        for subject in binding.get("subjects", []):
            key = (subject.get("namespace"), subject["name"])
            if subject["kind"] == "ServiceAccount" and key not in accounts:
                problems.append(f"{ident(binding)}: binds ServiceAccount {key[0]}/{key[1]}, which is not in the build")
            if binding["kind"] == "RoleBinding" and subject.get("namespace") != binding["metadata"].get("namespace"):
                continue  # a Role grants only in its own namespace; leases are where the pods are
            granted.setdefault(key, []).extend(rules)
            if bound is not None:
                roles_of.setdefault(key, []).append(bound)
    for w in of_kind(objs, "Deployment"):
        key = (w["metadata"].get("namespace"), pod_spec(w).get("serviceAccountName", "default"))
        rules = granted.get(key, [])
        needed: set[tuple[str, str, str]] = set()
        for c in containers(w):
            for group, resource, verb in needed_permissions(c):
                needed.add((group, resource, verb))
                if not allows(rules, group, resource, verb):
                    if resource == "leases":
                        problems.append(f"{ident(w)}: {c['name']} elects a leader but may not {verb} {resource}")
                    else:
                        problems.append(f"{ident(w)}: {c['name']} may not {verb} {resource}")
        for role in roles_of.get(key, []):
            for rule in role.get("rules", []):
                for group in rule.get("apiGroups", []):
                    for resource in rule.get("resources", []):
                        extra = [v for v in rule.get("verbs", []) if (group, resource, v) not in needed]
                        if extra:
                            problems.append(
                                f"{ident(role)}: grants {', '.join(extra)} on {resource}"
                                f"{f' ({group})' if group else ''}, which no sidecar of {ident(w)} needs"
                            )
    return problems


def check_leader_election(objs: list[Obj]) -> list[str]:
    problems = []
    for w in of_kind(objs, "Deployment"):
        for c in containers(w):
            if c["name"] in REQUIRED_PERMISSIONS and flags(c).get("leader-election") != "true":
                problems.append(f"{ident(w)}: {c['name']} runs without --leader-election")
    return problems


def controller_of(objs: list[Obj]) -> tuple[Obj, Obj] | None:
    """The Deployment that runs the driver in controller mode, and its driver container."""
    return next(((w, d) for w, d in driver_workloads(objs) if flags(d).get("mode") == "controller"), None)


def driver_settings(c: Obj) -> Any:
    """The driver's own parse of a container's arguments (app.settings.parse), or SystemExit with its message."""
    import contextlib
    import io

    from app.settings import parse

    argv = [expand(a, c) for a in c.get("args", [])]  # the image's entrypoint is the driver
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return parse(argv)
        except SystemExit:
            raise SystemExit(stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "refused")


def check_driver_args(objs: list[Obj]) -> list[str]:
    """The driver accepts its arguments, as kubelet expands them from the container's env."""
    problems = []
    for w, driver in driver_workloads(objs):
        try:
            driver_settings(driver)
        except SystemExit as err:
            problems.append(f"{ident(w)}: the driver refuses its arguments: {err}")
    return problems


def _share_of(params: dict[str, str]) -> Any:
    from domain.model import ShareRef

    own = {k.lower(): v for k, v in (params or {}).items()}
    if "server" not in own or "share" not in own:
        return None
    return ShareRef.parse(own["server"], own["share"])


def check_shares(objs: list[Obj]) -> list[str]:
    """The controller's --shares lists every share a StorageClass or VolumeSnapshotClass of this driver names, so
    ListVolumes and ListSnapshots (and the external-snapshotter's and health monitor's views) are complete."""
    found = controller_of(objs)
    if found is None:
        return []
    w, driver = found
    try:
        listed = set(driver_settings(driver).shares)
    except SystemExit as err:
        return [f"{ident(w)}: the driver refuses its arguments: {err}"]
    name = next((d["metadata"]["name"] for d in of_kind(objs, "CSIDriver")), None)
    problems = []
    classes = [(sc, sc.get("parameters")) for sc in of_kind(objs, "StorageClass") if sc.get("provisioner") == name]
    classes += [(c, c.get("parameters")) for c in of_kind(objs, "VolumeSnapshotClass") if c.get("driver") == name]
    for cls, params in classes:
        share = _share_of(params or {})
        if share is not None and share not in listed:
            problems.append(
                f"{ident(cls)} names the share {share.source()}, which the controller's --shares "
                f"({flags(driver).get('shares', '')!r}) does not list"
            )
    return problems


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def go_duration(value: str) -> float | None:
    """Seconds in a Go duration such as 300s, 15m or 1h30m; None if it is not one."""
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


# Sidecars whose calls may pack a snapshot, or restore or clone one (CreateVolume from a data source).
LONG_CALL_SIDECARS = ("csi-provisioner", "csi-snapshotter")


def check_timeouts(objs: list[Obj]) -> list[str]:
    """The provisioner and the snapshotter wait longer than the driver may work on one call: --snapshot-timeout
    after mounting the share (--mount-timeout per attempt, --mount-attempts). A sidecar that gives up first retries
    into ABORTED answers and reports the result only at its next backoff."""
    found = controller_of(objs)
    if found is None:
        return []
    w, driver = found
    try:
        settings = driver_settings(driver)
    except SystemExit as err:
        return [f"{ident(w)}: the driver refuses its arguments: {err}"]
    longest = settings.snapshot_timeout + settings.mount_timeout * settings.mount_attempts
    problems = []
    for name in LONG_CALL_SIDECARS:
        c = container(w, name)
        if c is None:
            continue
        raw = flags(c).get("timeout", "15s")
        seconds = go_duration(raw)
        if seconds is None:
            problems.append(f"{ident(w)}: {name} --timeout={raw} is not a duration")
        elif seconds < longest:
            problems.append(
                f"{ident(w)}: {name} gives up on a call after {raw}, but the driver may take {longest:g} s "
                f"(--snapshot-timeout {settings.snapshot_timeout:g} s after up to {settings.mount_attempts} mounts of "
                f"--mount-timeout {settings.mount_timeout:g} s)"
            )
    return problems


def check_capabilities(objs: list[Obj]) -> list[str]:
    """What the driver's controller advertises (domain.identity) is served: snapshots by the snapshotter, expansion
    by the resizer and StorageClasses that allow it, MODIFY_VOLUME with VolumeAttributesClass on in both sidecars."""
    from domain.identity import CONTROLLER_CAPABILITIES, PLUGIN_CAPABILITIES

    found = controller_of(objs)
    if found is None:
        return []
    w, _ = found
    problems = []
    name = next((d["metadata"]["name"] for d in of_kind(objs, "CSIDriver")), None)
    wanted = {"CREATE_DELETE_SNAPSHOT": ["csi-snapshotter"], "MODIFY_VOLUME": list(VAC_SIDECARS)}
    if "EXPAND_VOLUME" in CONTROLLER_CAPABILITIES:
        wanted["EXPAND_VOLUME"] = ["csi-resizer"]
        for sc in of_kind(objs, "StorageClass"):
            if sc.get("provisioner") == name and sc.get("allowVolumeExpansion") is not True:
                problems.append(
                    f"StorageClass {sc['metadata']['name']}: allowVolumeExpansion is not true, though the driver "
                    f"expands volumes ({', '.join(c for c in PLUGIN_CAPABILITIES if 'Expansion' in c)})"
                )
    for capability, sidecars in wanted.items():
        if capability not in CONTROLLER_CAPABILITIES:
            continue
        for sidecar in sidecars:
            c = container(w, sidecar)
            if c is None:
                problems.append(f"{ident(w)}: the driver serves {capability}, but no {sidecar} calls it")
            elif capability == "MODIFY_VOLUME" and not feature_gates(c).get("VolumeAttributesClass", True):
                problems.append(
                    f"{ident(w)}: the driver serves MODIFY_VOLUME, but {sidecar} turns VolumeAttributesClass off"
                )
    return problems


def check_csidriver(objs: list[Obj]) -> list[str]:
    """The CSIDriver says what the driver does: no attach, no pod info, no republish, Ephemeral volumes exactly
    when the node plugin serves them (--enable-inline-volumes)."""
    drivers = of_kind(objs, "CSIDriver")
    if len(drivers) != 1:
        return [f"expected exactly one CSIDriver, found {len(drivers)}"]
    spec = drivers[0]["spec"]
    problems = []
    for field, reason in (
        ("attachRequired", "the driver has no ControllerPublishVolume"),
        ("podInfoOnMount", "NodePublishVolume uses no pod information"),
        ("requiresRepublish", "nothing in a publication expires"),
    ):
        if spec.get(field, field == "attachRequired"):
            problems.append(f"CSIDriver: {field} should be false: {reason}")
    inline = any(
        flags(d).get("enable-inline-volumes") == "true"
        for w, d in driver_workloads(objs)
        if flags(d).get("mode") == "node"
    )
    modes = spec.get("volumeLifecycleModes", ["Persistent"])
    if ("Ephemeral" in modes) != inline:
        problems.append(
            f"CSIDriver: volumeLifecycleModes {modes} but the node plugin "
            f"{'serves' if inline else 'does not serve'} inline volumes (--enable-inline-volumes)"
        )
    return problems


def alert_jobs(objs: list[Obj]) -> set[str]:
    jobs = set()
    for rule_set in of_kind(objs, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                jobs.update(re.findall(r'job="([^"]+)"', rule["expr"]))
    return jobs


def check_alert_jobs(objs: list[Obj]) -> list[str]:
    """The alerts' job="..." is the metrics Service's name: what a ServiceMonitor sets as job by default."""
    scraped = set()
    for monitor in of_kind(objs, "ServiceMonitor"):
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        scraped |= {
            s["metadata"]["name"]
            for s in of_kind(objs, "Service")
            if selects(selector, s["metadata"].get("labels", {}))
        }
    return [
        f"PrometheusRule: alerts select job={job!r}, which no ServiceMonitor scrapes (jobs: {sorted(scraped)})"
        for job in sorted(alert_jobs(objs) - scraped)
    ]


def rules_file(objs: list[Obj]) -> dict[str, Any]:
    """The PrometheusRules' groups as one Prometheus rule file."""
    return {"groups": [copy.deepcopy(g) for r in of_kind(objs, "PrometheusRule") for g in r["spec"]["groups"]]}


def alert_metrics(objs: list[Obj]) -> set[str]:
    names = set()
    for group in rules_file(objs)["groups"]:
        for rule in group["rules"]:
            names.update(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", rule["expr"]))
    return names


ALL_CHECKS = {
    "driver name": check_driver_name,
    "sockets": check_sockets,
    "node plugin": check_node_plugin,
    "pinned images": check_images_pinned,
    "metrics port": check_metrics,
    "liveness": check_liveness,
    "rbac": check_rbac,
    "leader election": check_leader_election,
    "driver arguments": check_driver_args,
    "shares": check_shares,
    "timeouts": check_timeouts,
    "capabilities": check_capabilities,
    "csidriver": check_csidriver,
    "alert jobs": check_alert_jobs,
}
