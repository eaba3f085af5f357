"""The deploy tests' tools, installed by scripts/install-tools on first use, and every kustomization, built once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, ROOT, WORK, Obj, Tools, build, load, overlays, run

INSTALL_TIMEOUT = 1800  # a cold go install of kustomize, apt-get of promtool and the CRD modules


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    objs: list[Obj]


@pytest.fixture(scope="session")
def tools() -> Tools:
    try:
        result = run([str(ROOT / "scripts" / "install-tools")], timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/install-tools did not finish in {INSTALL_TIMEOUT} s")
    if result.returncode != 0:
        pytest.fail(f"scripts/install-tools failed:\n{result.stderr}")
    validate = Path(sys.executable).parent / "kubernetes-validate"
    if not validate.exists():
        pytest.fail("kubernetes-validate is missing: scripts/setup installs it with the dev extra")
    promtool, jq = shutil.which("promtool"), shutil.which("jq")
    assert promtool and jq, "scripts/install-tools did not provide promtool and jq"
    return Tools(
        kustomize=WORK / "bin" / "kustomize",
        promtool=Path(promtool),
        kubernetes_validate=validate,
        crds=WORK / "crds",
        jq=Path(jq),
    )


def kustomization_dir(name: str) -> Path:
    return DEPLOY / "base" if name == "base" else DEPLOY / "overlays" / name


@pytest.fixture(scope="session")
def built(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    out = tmp_path_factory.mktemp("built")
    result = {}
    for name in ["base", *overlays()]:
        text = build(tools.kustomize, kustomization_dir(name))
        path = out / f"{name}.yaml"
        path.write_text(text)
        result[name] = Built(name, path, load(text))
    return result


@pytest.fixture
def build_broken(tools: Tools, tmp_path: Path) -> Callable[[str, dict[str, Any]], Built]:
    """Build an overlay through a kustomization that adds patches or images to it: a deliberately broken copy."""

    def make(overlay: str, changes: dict[str, Any]) -> Built:
        directory = tmp_path / f"broken-{overlay}"
        directory.mkdir()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(kustomization_dir(overlay), directory)],
            **changes,
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        text = build(tools.kustomize, directory)
        path = directory / "built.yaml"
        path.write_text(text)
        return Built(f"broken {overlay}", path, load(text))

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the kustomize versions that built every kustomization (tests/deploy/test_kustomize_versions.py)."""
    versions = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for key, value in report.user_properties
        if key == "kustomize_version"
    ]
    if versions:
        terminalreporter.write_line(f"kustomize versions that built every kustomization under deploy/: {', '.join(versions)}")
