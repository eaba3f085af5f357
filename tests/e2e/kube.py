"""The scenarios' view of the cluster: kubectl, as a user would drive it, plus the node's export directory."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.e2e.cluster.common import WORK

Obj = dict[str, Any]
DRIVER = "nfs.csi.ownedstorage.dev"
SERVER = "10.250.0.1"
SHARE = "/exports"
BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
WAIT = 300.0


class KubectlFailed(AssertionError):
    """kubectl exited non-zero; the message carries its arguments and stderr."""


def export_dir() -> Path:
    """The directory the StorageClass's server:share names, as the node and nfs-ganesha serve it."""
    return WORK / "srv" / "standin-root" / SERVER / SHARE.strip("/")


@dataclass
class Kube:
    namespace: str

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120, namespaced: bool = True) -> str:
        argv = ["kubectl", *(["-n", self.namespace] if namespaced else []), *args]
        try:
            result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise KubectlFailed(f"{' '.join(argv)} did not finish in {timeout} s") from err
        if result.returncode != 0:
            raise KubectlFailed(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def apply(self, *objs: Obj) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def get(self, kind: str, name: str, namespaced: bool = True) -> Obj:
        return json.loads(self.kubectl("get", kind, name, "-o", "json", namespaced=namespaced))  # type: ignore[no-any-return]

    def items(self, kind: str, *selector: str, namespaced: bool = True) -> list[Obj]:
        return json.loads(self.kubectl("get", kind, *selector, "-o", "json", namespaced=namespaced))["items"]  # type: ignore[no-any-return]

    def exists(self, kind: str, name: str, namespaced: bool = True) -> bool:
        out = self.kubectl("get", kind, name, "--ignore-not-found", "-o", "name", namespaced=namespaced)
        return bool(out.strip())

    def delete(self, kind: str, name: str, namespaced: bool = True, timeout: float = WAIT) -> None:
        self.kubectl("delete", kind, name, "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s",
                     namespaced=namespaced, timeout=timeout + 30)

    def exec(self, pod: str, *command: str, timeout: float = 60) -> str:
        return self.kubectl("exec", pod, "--", *command, timeout=timeout)

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Poll check until it returns a true value, which is returned; fail naming what never happened."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
                last = value
            except KubectlFailed as err:
                last = err
            time.sleep(1)
        raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")

    # Volumes and pods, as a user writes them

    def pvc(self, name: str, size: str = "1Gi", modes: tuple[str, ...] = ("ReadWriteOnce",),
            storage_class: str = "nfs", **spec: Any) -> Obj:
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                "spec": {"accessModes": list(modes), "storageClassName": storage_class,
                         "resources": {"requests": {"storage": size}}, **spec}}

    def pod(self, name: str, claim: str, command: str = "sleep 3600", read_only: bool = False) -> Obj:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                         "containers": [{"name": "app", "image": BUSYBOX, "command": ["sh", "-c", command],
                                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                         "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim,
                                                                                "readOnly": read_only}}]}}

    def bound(self, claim: str, timeout: float = WAIT) -> Obj:
        return self.wait_until(f"PVC {claim} Bound", lambda: (p := self.get("pvc", claim))["status"].get("phase") == "Bound" and p,
                               timeout)  # type: ignore[no-any-return]

    def running(self, pod: str, timeout: float = WAIT) -> Obj:
        def check() -> Obj | None:
            p = self.get("pod", pod)
            if p["status"].get("phase") in ("Failed", "Succeeded"):
                raise AssertionError(f"pod {pod} ended: {p['status']}")
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            return p if ready else None

        return self.wait_until(f"pod {pod} Running and Ready", check, timeout)  # type: ignore[no-any-return]

    def volume_dir(self, claim: str) -> Path:
        """The volume's directory on the export: the StorageClass's subDir, ${namespace}/${pvc name}."""
        return export_dir() / self.namespace / claim


def mounts_under(path: str) -> list[str]:
    """Mount points at or below path in this (the cluster's) mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == path or point.startswith(path.rstrip("/") + "/"):
            out.append(point)
    return out


def in_cluster() -> bool:
    return bool(os.environ.get("KUBECONFIG")) and Path(os.environ["KUBECONFIG"]).is_file()
