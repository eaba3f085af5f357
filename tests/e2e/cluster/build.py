"""Build the cluster's binaries from their Go modules, once: Kubernetes 1.34, the CSI sidecars, e2e.test, agnhost, pause.

Everything is cached outside the clone (CI runs in a fresh one), under the cache directory: a throwaway main module
per source in go/, binaries in bin/, each with a stamp naming what it was built from. A binary whose stamp matches is
not rebuilt; Go's own module and build caches make a rebuild after a change take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cluster.common import CACHE, log, run

KUBERNETES = "v1.34.4"
# The sidecars the base manifests pin, built from the module proxy at those tags. csi-resizer v2.2.1 (the base's)
# is not served there; v2.3.0 is the nearest, and the e2e overlay names it.
PROVISIONER = ("github.com/kubernetes-csi/external-provisioner/v6", "v6.3.0")
SNAPSHOTTER = ("github.com/kubernetes-csi/external-snapshotter/v8", "v8.6.0")
SNAPSHOTTER_CLIENT = "github.com/kubernetes-csi/external-snapshotter/client/v8"
RESIZER = ("github.com/kubernetes-csi/external-resizer/v2", "v2.3.0")
PAUSE_VERSION = "3.10.1"
BUILD_TIMEOUT = 3600  # a cold kube-apiserver alone is about 7 minutes on 2 cores; e2e.test is as big

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")

E2E_TEST = """\
// Package e2e runs Kubernetes' external-storage suite (test/e2e/storage/external) against the driver that
// -storage.testdriver describes: the storage specs only, with the framework's own init packages.
package e2e

import (
	"flag"
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/test/e2e/framework"
	"k8s.io/kubernetes/test/e2e/framework/config"
	"k8s.io/kubernetes/test/e2e/framework/testfiles"
	e2etestingmanifests "k8s.io/kubernetes/test/e2e/testing-manifests"
	testfixtures "k8s.io/kubernetes/test/fixtures"

	_ "k8s.io/kubernetes/test/e2e/feature"
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/e2e/storage/external"
	_ "k8s.io/kubernetes/test/utils/format"
)

func TestMain(m *testing.M) {
	config.CopyFlags(config.Flags, flag.CommandLine)
	framework.RegisterCommonFlags(flag.CommandLine)
	framework.RegisterClusterFlags(flag.CommandLine)
	flag.Parse()
	testfiles.AddFileSource(e2etestingmanifests.GetE2ETestingManifestsFS())
	testfiles.AddFileSource(testfixtures.GetTestFixturesFS())
	framework.AfterReadingAllFlags(&framework.TestContext)
	if framework.TestContext.RepoRoot != "" {
		// Where the testdriver file's FromFile names (a VolumeAttributesClass) are found.
		testfiles.AddFileSource(testfiles.RootFileSource{Root: framework.TestContext.RepoRoot})
	}
	os.Exit(m.Run())
}

func TestE2E(t *testing.T) {
	logs.InitLogs()
	defer logs.FlushLogs()
	klog.EnableContextualLogging(true)
	gomega.RegisterFailHandler(framework.Fail)
	suiteConfig, reporterConfig := framework.CreateGinkgoConfig()
	ginkgo.RunSpecs(t, "external storage", suiteConfig, reporterConfig)
}
"""


@dataclass(frozen=True)
class Binaries:
    """Where each built program is."""

    bin: Path

    def __truediv__(self, name: str) -> Path:
        return self.bin / name


def go_env() -> dict[str, str]:
    return {**os.environ, "GOFLAGS": "-modcacherw", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}


def go(args: list[str], cwd: Path, timeout: float = BUILD_TIMEOUT, env: dict[str, str] | None = None) -> str:
    return run(["go", *args], cwd=cwd, timeout=timeout, env=env or go_env())


def module_dir(module: str, version: str) -> tuple[Path, Path]:
    """(source directory, go.mod file) of MODULE@VERSION in Go's module cache, downloading it if needed."""
    out = go(["mod", "download", "-json", f"{module}@{version}"], cwd=CACHE, timeout=900)
    info = json.loads(out)
    if "Error" in info:
        raise RuntimeError(f"go mod download {module}@{version}: {info['Error']}")
    return Path(info["Dir"]), Path(info["GoMod"])


def replaces(gomod: Path, local: dict[str, str] | None = None) -> list[str]:
    """The replace directives of a go.mod, a relative one (./client) turned into the module@version it stands for."""
    out = []
    text = gomod.read_text()
    block = re.search(r"^replace \($(.*?)^\)", text, re.M | re.S)
    lines = re.findall(r"^replace (.+)$", text, re.M) + (block.group(1).splitlines() if block else [])
    for line in lines:
        line = line.split("//")[0].strip()
        if "=>" not in line:
            continue
        old, new = (part.strip() for part in line.split("=>"))
        if new.startswith("./") or new.startswith("../"):
            target = (local or {}).get(new)
            if target is None:
                continue  # k8s.io/kubernetes's ./staging/src/...: the caller names those itself
            new = target
        out.append(f"{old} => {new}")
    return out


def stamp_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def up_to_date(outputs: list[Path], stamp: str) -> bool:
    return all(p.exists() and Path(f"{p}.stamp").exists() and Path(f"{p}.stamp").read_text() == stamp for p in outputs)


def mark(outputs: list[Path], stamp: str) -> None:
    for p in outputs:
        Path(f"{p}.stamp").write_text(stamp)


def write_module(directory: Path, name: str, require: list[str], replace: list[str], files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    gomod = [f"module {name}", "", "go 1.24.0", "", "require ("]
    gomod += [f"\t{r}" for r in require]
    gomod += [")", "", "replace ("]
    gomod += [f"\t{r}" for r in replace]
    gomod += [")", ""]
    wanted = {"go.mod": "\n".join(gomod), **files}
    for rel, text in wanted.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def build_kubernetes(bin_dir: Path) -> None:
    """kube-apiserver, -controller-manager, -scheduler, kubelet, kubectl, agnhost and e2e.test at KUBERNETES."""
    commands = [bin_dir / c for c in (*KUBERNETES_COMMANDS, "agnhost")]
    e2e = bin_dir / "e2e.test"
    commands_stamp, e2e_stamp = stamp_of(KUBERNETES, "v1"), stamp_of(KUBERNETES, E2E_TEST, "v1")
    if up_to_date(commands, commands_stamp) and up_to_date([e2e], e2e_stamp):
        return
    started = time.monotonic()
    log(f"build: Kubernetes {KUBERNETES} from the k8s.io/kubernetes module (cold: about 15 minutes on 2 cores)")
    _, gomod = module_dir("k8s.io/kubernetes", KUBERNETES)
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/", gomod.read_text(), re.M)
    staging_version = "v0." + KUBERNETES.split(".", 1)[1]
    replace = [f"{m} => {m} {staging_version}" for m in staging] + replaces(gomod)
    tools = "//go:build tools\n\npackage tools\n\nimport (\n" + "".join(
        f'\t_ "k8s.io/kubernetes/cmd/{c}"\n' for c in KUBERNETES_COMMANDS
    ) + '\t_ "k8s.io/kubernetes/test/images/agnhost"\n)\n'
    src = CACHE / "go" / f"kubernetes-{KUBERNETES}"
    write_module(src, "nfs-csi-e2e/kubernetes", [f"k8s.io/kubernetes {KUBERNETES}"], replace,
                 {"tools.go": tools, "e2e/e2e_test.go": E2E_TEST})
    go(["mod", "tidy", "-e"], cwd=src, timeout=1800)
    bin_dir.mkdir(parents=True, exist_ok=True)
    ldflags = version_ldflags(KUBERNETES)
    if not up_to_date(commands, commands_stamp):
        packages = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS] + ["k8s.io/kubernetes/test/images/agnhost"]
        go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(bin_dir) + "/", *packages], cwd=src)
        mark(commands, commands_stamp)
    if not up_to_date([e2e], e2e_stamp):
        go(["test", "-c", "-trimpath", "-ldflags", ldflags, "-o", str(e2e), "./e2e"], cwd=src)
        mark([e2e], e2e_stamp)
    log(f"build: Kubernetes binaries in {time.monotonic() - started:.0f} s")


def build_sidecar(bin_dir: Path, name: str, module: str, version: str, commands: list[str],
                  local: dict[str, str] | None = None) -> None:
    outputs = [bin_dir / c for c in commands]
    stamp = stamp_of(module, version, *commands, "v1")
    if up_to_date(outputs, stamp):
        return
    started = time.monotonic()
    log(f"build: {', '.join(commands)} from {module}@{version}")
    _, gomod = module_dir(module, version)
    require = [f"{module} {version}"]
    replace = replaces(gomod, local)
    tools = "//go:build tools\n\npackage tools\n\nimport (\n" + "".join(f'\t_ "{module}/cmd/{c}"\n' for c in commands) + ")\n"
    src = CACHE / "go" / f"{name}-{version}"
    write_module(src, f"nfs-csi-e2e/{name}", require, replace, {"tools.go": tools})
    go(["mod", "tidy", "-e"], cwd=src, timeout=1800)
    bin_dir.mkdir(parents=True, exist_ok=True)
    ldflags = f"-s -w -X main.version={version}"
    go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(bin_dir) + "/", *[f"{module}/cmd/{c}" for c in commands]],
       cwd=src)
    mark(outputs, stamp)
    log(f"build: {', '.join(commands)} in {time.monotonic() - started:.0f} s")


def build_pause(bin_dir: Path) -> None:
    """pause, from build/pause/linux/pause.c in the kubernetes module, static."""
    out = bin_dir / "pause"
    src_dir, _ = module_dir("k8s.io/kubernetes", KUBERNETES)
    source = src_dir / "build" / "pause" / "linux" / "pause.c"
    stamp = stamp_of(source.read_text(), PAUSE_VERSION)
    if up_to_date([out], stamp):
        return
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler for pause.c: apt-get install gcc")
    bin_dir.mkdir(parents=True, exist_ok=True)
    run([cc, "-Os", "-Wall", "-Werror", "-static", f'-DVERSION=v{PAUSE_VERSION}', "-o", str(out), str(source)],
        cwd=bin_dir, timeout=300)
    mark([out], stamp)


def build_all() -> Binaries:
    bin_dir = CACHE / "bin"
    CACHE.mkdir(parents=True, exist_ok=True)
    build_kubernetes(bin_dir)
    build_sidecar(bin_dir, "csi-provisioner", *PROVISIONER, ["csi-provisioner"])
    snapshotter_module, snapshotter_version = SNAPSHOTTER
    build_sidecar(bin_dir, "csi-snapshotter", snapshotter_module, snapshotter_version,
                  ["csi-snapshotter", "snapshot-controller"],
                  local={"./client": f"{SNAPSHOTTER_CLIENT} {snapshotter_version}"})
    build_sidecar(bin_dir, "csi-resizer", *RESIZER, ["csi-resizer"])
    build_pause(bin_dir)
    return Binaries(bin_dir)


def snapshot_manifests() -> Path:
    """external-snapshotter's module at the csi-snapshotter's version: its CRDs and snapshot-controller manifests."""
    src, _ = module_dir(*SNAPSHOTTER)
    return src
