"""Every kustomization under deploy/ builds, to the same objects, with the kustomize of each kubectl in skew.

Users run `kubectl apply -k` with whatever kustomize their kubectl embeds: v5.5.0 in kubectl 1.32, v5.6.0 in 1.33,
v5.7.1 and v5.8.x after them. The manifests need Kubernetes 1.34, whose kubectl skew reaches back to 1.33, and a
1.32 kubectl is still common. The deploy tests' own checks run on what the pinned kustomize (scripts/install-tools)
builds; this proves every other version builds the same thing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.deploy.manifests import DEPLOY, ROOT, ToolFailed, build, load, run

KUSTOMIZE_VERSIONS = ("v5.5.0", "v5.6.0", "v5.7.1", "v5.8.1")
INSTALL_TIMEOUT = 1800  # four cold go installs on a shared 2-core machine
CACHE = Path(os.environ.get("NFS_CSI_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nfs-csi-e2e")


def kustomizations() -> list[Path]:
    """Every directory with a kustomization: each must build on its own, as `kubectl apply -k` would take it."""
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


@pytest.fixture(scope="module")
def kustomize_binaries() -> dict[str, Path]:
    wanted = [f"kustomize@{v}" for v in KUSTOMIZE_VERSIONS]
    try:
        result = run([str(ROOT / "scripts" / "install-tools"), "kustomize", *wanted], timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/install-tools {' '.join(wanted)} did not finish in {INSTALL_TIMEOUT} s")
    if result.returncode != 0:
        pytest.fail(f"scripts/install-tools failed:\n{result.stderr}")
    return {v: CACHE / "kustomize" / v / "kustomize" for v in KUSTOMIZE_VERSIONS}


def test_the_matrix_covers_every_kustomization_under_deploy() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in kustomizations()}
    assert {"base", "overlays/node-only", "overlays/e2e", "overlays/e2e/node-only", "overlays/e2e/controller", "examples/static"} <= names


@pytest.mark.parametrize("version", KUSTOMIZE_VERSIONS)
def test_every_kustomization_builds_the_same_objects(
    version: str, kustomize_binaries: dict[str, Path], record_property: Callable[[str, object], None]
) -> None:
    pinned = ROOT / ".work" / "bin" / "kustomize"
    failures = []
    for directory in kustomizations():
        where = directory.relative_to(ROOT)
        try:
            objs = load(build(kustomize_binaries[version], directory))
        except (ToolFailed, subprocess.TimeoutExpired) as err:
            failures.append(f"{where}: kustomize {version} failed: {str(err)[:2000]}")
            continue
        if objs != load(build(pinned, directory)):
            failures.append(f"{where}: kustomize {version} builds other objects than the pinned kustomize")
    assert failures == []
    record_property("kustomize_version", version)  # the summary at the end names the versions that passed
