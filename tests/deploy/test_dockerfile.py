"""The Dockerfile, read statically (no Docker engine here): stages, a pinned base, the packages, labels, context."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.manifests import ROOT

PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)$")
BUILD_TOOLS = {"gcc", "g++", "make", "build-essential", "python3-dev", "libc6-dev", "cmake", "clang", "git"}
OCI_LABELS = {"title", "description", "version", "revision", "created", "base.name"}


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


@pytest.fixture(scope="module")
def stages(parser: DockerfileParser) -> list[Stage]:
    out: list[Stage] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            image, _, name = item["value"].partition(" AS ")
            out.append(Stage(image.strip(), name.strip()))
        elif item["instruction"] != "COMMENT":
            assert out, f"{item['instruction']} before the first FROM"
            out[-1].instructions.append((item["instruction"], item["value"]))
    return out


def apt_packages(run: str) -> set[str]:
    packages: set[str] = set()
    for command in re.split(r"&&|;", run):
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages |= {w for w in words[2:] if not w.startswith("-")}
    return packages


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def test_it_builds_in_one_stage_and_runs_from_another(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["build", "runtime"]


def test_every_stage_starts_from_the_same_exactly_pinned_slim_debian_python_3_11(stages: list[Stage]) -> None:
    for stage in stages:
        assert PINNED_BASE.match(stage.image), (
            f"stage {stage.name}: base {stage.image!r} is not an exact python:3.11.N-slim-<debian> tag"
        )
    assert len({s.image for s in stages}) == 1


def test_the_runtime_installs_mount_nfs_and_umount_without_recommends(stages: list[Stage]) -> None:
    runtime = stages[-1]
    runs = runtime.values("RUN")
    installed = set().union(*(apt_packages(r) for r in runs))
    assert {"nfs-common", "util-linux", "mount"} <= installed
    for run in runs:
        if "apt-get install" in run:
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run


def test_the_runtime_has_no_build_tools_and_builds_nothing(stages: list[Stage]) -> None:
    runtime = stages[-1]
    installed = set().union(*(apt_packages(r) for r in runtime.values("RUN")))
    assert installed & BUILD_TOOLS == set()
    assert not any("pip install" in r or "pip wheel" in r for r in runtime.values("RUN"))
    assert runtime.values("COPY") == ["--from=build /opt/nfs-csi-driver /opt/nfs-csi-driver"]


def test_the_build_stage_takes_only_wheels_and_copies_every_package_of_the_project(stages: list[Stage]) -> None:
    build = stages[0]
    assert any("--only-binary=:all:" in r for r in build.values("RUN"))
    copied = {src for value in build.values("COPY") for src in value.split()[:-1]}
    packages = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    assert {p.rstrip("*") for p in packages} | {"pyproject.toml", "README.md"} <= copied


def test_the_entrypoint_is_the_driver_in_exec_form(stages: list[Stage]) -> None:
    (entrypoint,) = stages[-1].values("ENTRYPOINT")
    assert json.loads(entrypoint) == ["nfs-csi-driver"]
    assert "nfs-csi-driver" in project()["scripts"]  # type: ignore[operator]


def test_oci_labels_name_the_image_its_version_and_its_base(parser: DockerfileParser, stages: list[Stage]) -> None:
    labels = parser.labels
    assert {f"org.opencontainers.image.{k}" for k in OCI_LABELS} <= set(labels)
    assert labels["org.opencontainers.image.version"] == project()["version"]
    assert labels["org.opencontainers.image.base.name"] == f"docker.io/library/{stages[-1].image}"


# .dockerignore, with Docker's rules: a path is excluded when it or a parent matches; the last matching pattern wins.
def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
                        for part in re.split(r"(\*\*|\*|\?)", glob))  # fmt: skip
        patterns.append((negate, re.compile(regex.replace(".*/", "(.*/)?") + "$")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, pattern in patterns:
        if any(pattern.match(c) for c in candidates):
            result = not negate
    return result


@pytest.mark.parametrize(
    "path",
    ["pyproject.toml", "README.md", "domain/model.py", "ports/mounter.py", "adapters/csi/v1/csi.proto", "app/main.py"],
)
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".venv/bin/python", ".work/bin/kustomize", "tests/conftest.py", "deploy/base/kustomization.yaml",
     "bench/run", "app/__pycache__/main.cpython-311.pyc", "domain/x.pyc", "Dockerfile"],
)  # fmt: skip
def test_dockerignore_leaves_everything_else_out_of_the_context(path: str) -> None:
    assert ignored(path, dockerignore_patterns())


def test_every_file_the_build_copies_exists(stages: list[Stage]) -> None:
    for value in stages[0].values("COPY"):
        for source in value.split()[:-1]:
            assert (ROOT / source).exists(), source
