"""Kubernetes' external-storage e2e suite (test/e2e/storage/external) against the deployed driver.

The testdriver file claims exactly what the driver does (README "The CSI surface"). `scripts/cluster e2e` runs the
CI subset, named spec by spec below; `--full` runs every non-disruptive spec once. Both print ran / passed /
failed / skipped, with the reason for each skip, and write the ginkgo JSON report to .work/cluster/e2e/.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import time
from pathlib import Path

from tests.e2e.cluster import node
from tests.e2e.cluster.common import CACHE, WORK, log

DRIVER = "nfs.csi.ownedstorage.dev"
SUITE_TIMEOUT = {"ci": 1800, "full": 3 * 3600, "focus": 3 * 3600}  # ginkgo stops the run there, failing

# What the driver does, and only that (README "The CSI surface"):
CAPABILITIES = {
    "persistence": True,  # a volume is a directory on the share: data outlives pods
    "exec": True,  # files on the volume can be executed (no noexec)
    "multipods": True,  # several pods of a node use one volume at once
    "RWX": True,  # every file access mode, MULTI_NODE_MULTI_WRITER included
    "capReadOnlyMany": True,  # MULTI_NODE_READER_ONLY too
    "readWriteOncePod": True,  # SINGLE_NODE_SINGLE_WRITER
    "fsGroup": True,  # CSIDriver fsGroupPolicy: File, so kubelet applies fsGroup
    "snapshotDataSource": True,  # CREATE_DELETE_SNAPSHOT, and CreateVolume from a snapshot
    "pvcDataSource": True,  # CLONE_VOLUME
    "controllerExpansion": True,  # EXPAND_VOLUME
    "onlineExpansion": True,  # VolumeExpansion ONLINE
    "offlineExpansion": True,  # expansion only records the size: a pod or none makes no difference
    "multiplePVsSameID": True,  # the driver never reads PersistentVolumes: two PVs of one handle are two publishes
    "nodeExpansion": True,  # node EXPAND_VOLUME: nothing grows, the node learns the capacity its usage counts against
    # Every volume of a share reports the share's size (no quota), so a restore or clone "to a larger size" shows no
    # larger filesystem; the specs that check that must not run.
    "FSResizeFromSourceNotSupported": True,
    "block": False,  # file volumes only
    "volumeMountGroup": False,  # no VOLUME_MOUNT_GROUP
    "topology": False,  # any node reaches the share
    "volumeLimits": False,  # --max-volumes-per-node is 0 (no limit) in the manifests
    "singleNodeVolume": False,
    "capacity": False,  # GET_CAPACITY is served, but the provisioner does not publish CSIStorageCapacity
    "groupSnapshot": False,  # no GroupController
}

TESTDRIVER = {
    "StorageClass": {"FromExistingClassName": "nfs"},
    "SnapshotClass": {"FromExistingClassName": "nfs"},
    "VolumeAttributesClass": {"FromFile": "volumeattributesclass.yaml"},
    "DriverInfo": {
        "Name": DRIVER,
        "SupportedSizeRange": {"Min": "1Mi", "Max": "64Ti"},
        "SupportedFsType": {"": {}},
        "SupportedMountOption": {"nfsvers=4.1": {}, "hard": {}},
        "Capabilities": CAPABILITIES,
    },
}

# A class the volume-modify specs move a volume to (mutable parameters: mountPermissions, uid, gid).
VOLUME_ATTRIBUTES_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttributesClass",
    "metadata": {"name": "nfs-e2e-modify"}, "driverName": DRIVER, "parameters": {"mountPermissions": "0775"},
}

# The CI subset: one or more specs of every test suite the driver's capabilities open, chosen so that the whole runs
# in under 20 minutes on the 2-core machine (each spec takes 6 to 30 s here). Named by spec, not by tag: a
# [Slow] / [Feature:] filter alone would drop every snapshot, multi-volume and volume-IO spec. A tag such as
# [Feature:X] is matched with .* (ginkgo's focus does not see it where the report prints it).
CI_SUBSET = (
    r"\[Testpattern: Dynamic PV \(default fs\)\] provisioning should provision storage with pvc data source$",
    r"\[Testpattern: Dynamic PV \(default fs\)\] provisioning should provision storage with snapshot data source \[",
    r"\[Testpattern: Dynamic PV \(default fs\)\] provisioning should mount multiple PV pointing to the same storage",
    r"\[Testpattern: Dynamic PV \(default fs\)\] volumes should store data",
    r"\[Testpattern: Dynamic PV \(default fs\)\] volumes should allow exec of files on the volume",
    r"\[Testpattern: Dynamic PV \(default fs\)\] subPath should support existing directory$",
    r"\[Testpattern: Dynamic PV \(default fs\)\] subPath should support readOnly file specified in the volumeMount",
    r"\[Testpattern: Dynamic PV \(filesystem volmode\)\] multiVolume .*should concurrently access the single volume from pods on the same node$",
    r"\[Testpattern: Dynamic PV \(filesystem volmode\)\] multiVolume .*should concurrently access the volume and its clone from pods on the same node",
    r"\[Testpattern: Dynamic PV \(default fs\)\] volumeIO should write files of various sizes, verify size, validate content",
    r"\[Testpattern: Dynamic PV \(default fs\)\(allowExpansion\)\] volume-expand should resize volume when PVC is edited while pod is using it",
    r"\[Testpattern: Dynamic PV \(default fs\)\(allowExpansion\)\] volume-expand Verify if offline PVC expansion works",
    r"\[Testpattern: Dynamic Snapshot \(delete policy\)\] snapshottable .*should check snapshot fields, check restore correctly works after modifying source data, check deletion \(persistent\)",
    r"\[Testpattern: Generic Ephemeral-volume \(default fs\) \(late-binding\)\] ephemeral should create read/write inline ephemeral volume$",
    r"\[Testpattern: Dynamic PV \(default fs\)\] fsgroupchangepolicy \(OnRootMismatch\)\[LinuxOnly\], pod created with an initial fsgroup, new pod fsgroup applied to volume contents",
    r"\[Testpattern: Dynamic PV \(default fs\)\] read-write-once-pod .*should block a second pod from using an in-use ReadWriteOncePod volume on the same node",
    r"\[Testpattern: Dynamic PV \(default fs\)\] volume-modify .*should modify volume with no VAC",
)
# Specs that cannot run on these machines, and why; the full set leaves them out, and says so.
CANNOT_RUN_HERE = {
    r"should provision storage with any volume data source":
        "needs the images hello-populator and volume-data-source-validator, which no registry or module proxy here serves",
    r"provisioning should provision storage with mount options":
        "reads the NFS options back from the pod's mount table; the node's mount.nfs stand-in bind-mounts, so none "
        "are there (the driver passes them to mount.nfs: tests/integration/test_adapters.py checks it)",
}
FULL_SKIP = r"\[Disruptive\]|" + "|".join(CANNOT_RUN_HERE)


def write_config(directory: Path) -> Path:
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "volumeattributesclass.yaml").write_text(yaml.safe_dump(VOLUME_ATTRIBUTES_CLASS, sort_keys=False))
    testdriver = directory / "testdriver.yaml"
    testdriver.write_text(yaml.safe_dump(TESTDRIVER, sort_keys=False))
    return testdriver


def e2e_command(testdriver: Path, report: Path, focus: str, skip: str, timeout: int) -> list[str]:
    argv = [
        str(CACHE / "bin" / "e2e.test"), f"-kubeconfig={WORK / 'pki' / 'admin.kubeconfig'}", "-provider=skeleton",
        f"-storage.testdriver={testdriver}", f"-report-dir={report.parent}", f"-ginkgo.json-report={report}",
        f"-ginkgo.focus={focus}", f"-ginkgo.timeout={timeout}s", "-ginkgo.no-color",
        f"-repo-root={report.parent}", "-kubectl-path=" + str(CACHE / "bin" / "kubectl"),
    ]
    if skip:
        argv.append(f"-ginkgo.skip={skip}")
    return argv


def spec_name(spec: dict[str, object]) -> str:
    texts = [*spec.get("ContainerHierarchyTexts", []), spec.get("LeafNodeText", "")]  # type: ignore[misc]
    return " ".join(str(t) for t in texts if t)


def summarize(report: Path) -> dict[str, object]:
    """ran / passed / failed / skipped (with each skip's reason) of the specs the focus selected."""
    data = json.loads(report.read_text())
    specs = [s for r in data for s in r.get("SpecReports", []) if s.get("LeafNodeType") == "It"]
    selected = [s for s in specs if not (s["State"] == "skipped" and not s.get("Failure"))]
    counts = collections.Counter(s["State"] for s in selected)
    skipped = collections.Counter()
    for s in selected:
        if s["State"] == "skipped":
            message = (s.get("Failure") or {}).get("Message", "").strip().splitlines()
            skipped[message[0] if message else "(no reason given)"] += 1
    failed = [(spec_name(s), ((s.get("Failure") or {}).get("Message") or "").strip()[:600]) for s in selected
              if s["State"] in ("failed", "panicked", "timedout", "aborted", "interrupted")]
    return {
        "ran": len(selected) - counts.get("skipped", 0), "passed": counts.get("passed", 0), "failed": len(failed),
        "skipped": counts.get("skipped", 0), "skip_reasons": dict(skipped), "failures": failed,
        "seconds": round(sum(s.get("RunTime", 0) for s in selected) / 1e9, 1),
        "passed_specs": sorted(spec_name(s) for s in selected if s["State"] == "passed"),
        "ran_specs": sorted(spec_name(s) for s in selected if s["State"] != "skipped"),
    }


def run_suite(full: bool = False, focus: str = "") -> int:
    state = node.State.load()
    if state is None or not node.alive(state):
        log("the cluster is down: scripts/cluster up first")
        return 1
    name = "full" if full else "ci" if not focus else "focus"
    directory = WORK / "e2e" / name
    testdriver = write_config(directory)
    report = directory / "report.json"
    report.unlink(missing_ok=True)
    if focus:
        regex, skip = focus, FULL_SKIP
    elif full:
        regex, skip = r"External.Storage", FULL_SKIP
    else:
        regex, skip = r"External.Storage.*(" + "|".join(CI_SUBSET) + ")", FULL_SKIP
    argv = e2e_command(testdriver, report, regex, skip, SUITE_TIMEOUT[name])
    logfile = directory / "e2e.log"
    log(f"e2e: Kubernetes external-storage suite, {name} set; log {logfile}")
    started = time.monotonic()
    with open(logfile, "w") as out:
        process = subprocess.run([*node.nsenter(state), f"--wd={directory}", "--", *argv], stdout=out,
                                 stderr=subprocess.STDOUT, env={**node.cluster_env(), "PWD": str(directory)},
                                 timeout=SUITE_TIMEOUT[name] + 600)
    elapsed = time.monotonic() - started
    if not report.exists():
        log(f"e2e: no report (e2e.test exited {process.returncode}); the log's tail:\n" +
            "\n".join(logfile.read_text(errors="replace").splitlines()[-40:]))
        return 1
    summary = summarize(report)
    summary["wall_seconds"] = round(elapsed, 1)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"external-storage e2e ({name}): ran {summary['ran']}, passed {summary['passed']}, "
          f"failed {summary['failed']}, skipped {summary['skipped']} in {elapsed / 60:.1f} min", flush=True)
    for reason, count in sorted(summary["skip_reasons"].items(), key=lambda kv: -kv[1]):  # type: ignore[union-attr]
        print(f"  skipped {count}: {reason}", flush=True)
    print("  left out: every [Disruptive] spec (they stop kubelet or the node)", flush=True)
    for regex, reason in CANNOT_RUN_HERE.items():
        print(f"  left out: {regex}: {reason}", flush=True)
    for spec, message in summary["failures"]:  # type: ignore[union-attr]
        print(f"  FAILED: {spec}\n    {message.splitlines()[0] if message else ''}", flush=True)
    print(f"e2e: {summary['passed']} passed, {summary['failed']} failed", flush=True)
    ok = process.returncode == 0 and summary["failed"] == 0 and summary["ran"] > 0
    if name == "ci":
        # Every spec of the subset must have run: a renamed or newly skipped spec would shrink it unseen.
        missing = [r for r in CI_SUBSET if not any(re.search(r, s) for s in summary["ran_specs"])]  # type: ignore[union-attr]
        for regex in missing:
            print(f"  NOT RUN (the CI subset names it): {regex}", flush=True)
        ok = ok and not missing
    return 0 if ok else 1

