"""The official csi-sanity suite, in both topologies, with nothing skipped but what our capabilities rule out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc
from tests.conformance.junit_summary import Report, read_report, summary_line

ROOT = Path(__file__).resolve().parents[2]
RUN_SANITY = ROOT / "tests" / "conformance" / "run-sanity"
REPORTS = ROOT / ".work" / "conformance"

Capability = tuple[str, str]  # (service, CSI enum name): ("plugin" | "controller" | "node" | "group", name)

# csi-sanity's own Skip() messages (its "skipped - " prefix removed), each with the capability whose absence makes
# csi-sanity skip the spec. Read from pkg/sanity/*.go of the pinned csi-test. A skip is accepted only when that
# capability is indeed not advertised. Skips for any other reason (e.g. "capacity of the volume is unknown",
# "Required bytes not supported", a test flag not set) are not in this table, so they fail the test.
SKIP_REASONS: dict[str, Capability] = {
    "Controller Service not provided: CreateVolume not supported": ("plugin", "CONTROLLER_SERVICE"),
    "GroupControllerService not supported": ("plugin", "GROUP_CONTROLLER_SERVICE"),
    "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported": ("plugin", "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS"),
    "VolumeGroupSnapshots not supported": ("group", "CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT"),
    "CreateVolume not supported": ("controller", "CREATE_DELETE_VOLUME"),
    "DeleteVolume not supported": ("controller", "CREATE_DELETE_VOLUME"),
    "GetCapacity not supported": ("controller", "GET_CAPACITY"),
    "ListVolumes not supported": ("controller", "LIST_VOLUMES"),
    "Snapshot not supported": ("controller", "CREATE_DELETE_SNAPSHOT"),
    "CreateSnapshot not supported": ("controller", "CREATE_DELETE_SNAPSHOT"),
    "DeleteSnapshot not supported": ("controller", "CREATE_DELETE_SNAPSHOT"),
    "ListSnapshots not supported": ("controller", "LIST_SNAPSHOTS"),
    "GetSnapshot not supported": ("controller", "GET_SNAPSHOT"),
    "Volume Cloning not supported": ("controller", "CLONE_VOLUME"),
    "Modify volume not supported": ("controller", "MODIFY_VOLUME"),
    "Modify Volume not supported": ("controller", "MODIFY_VOLUME"),
    "ControllerModifyVolume not supported": ("controller", "MODIFY_VOLUME"),
    "ControllerPublishVolume not supported": ("controller", "PUBLISH_UNPUBLISH_VOLUME"),
    "ControllerUnpublishVolume not supported": ("controller", "PUBLISH_UNPUBLISH_VOLUME"),
    "Controller Publish, UnpublishVolume not supported": ("controller", "PUBLISH_UNPUBLISH_VOLUME"),
    "ControllerPublishVolume.readonly field not supported": ("controller", "PUBLISH_READONLY"),
    "ControllerExpandVolume not supported": ("controller", "EXPAND_VOLUME"),
    # GET_VOLUME_HEALTH, LIST_VOLUME_HEALTH and GET_STORAGE_HEALTH come from CSI 1.13, newer than our CSI 1.12
    # protocol: the driver cannot advertise them, so their specs are rightly skipped.
    "ControllerGetVolumeHealth not supported": ("controller", "GET_VOLUME_HEALTH"),
    "ControllerListVolumeHealth not supported": ("controller", "LIST_VOLUME_HEALTH"),
    "NodeStageVolume not supported": ("node", "STAGE_UNSTAGE_VOLUME"),
    "NodeUnstageVolume not supported": ("node", "STAGE_UNSTAGE_VOLUME"),
    "NodeGetVolume not supported": ("node", "GET_VOLUME_STATS"),
    "NodeExpandVolume not supported": ("node", "EXPAND_VOLUME"),
    "Service does not have single node multi writer capability": ("node", "SINGLE_NODE_MULTI_WRITER"),
    "NodeGetVolumeHealth not supported": ("node", "GET_VOLUME_HEALTH"),
    "NodeGetStorageHealth not supported": ("node", "GET_STORAGE_HEALTH"),
}

# Specs csi-sanity itself disables (XIt) for every driver; reported as pending, never run.
PENDING_UPSTREAM = {
    # "Disabling this below case as it is fragile and results are inconsistent" (controller.go, csi-test#223).
    "Controller Service [Controller Server] ListVolumes pagination should detect volumes added between pages "
    "and accept tokens when the last volume from a page is deleted",
}

# The only capabilities the driver may advertise, each with the spec names that prove it: at least one must have
# run and passed, and none failed. Advertising anything else fails this test until its specs are listed here.
PROVEN_BY: dict[Capability, tuple[str, ...]] = {
    ("plugin", "CONTROLLER_SERVICE"): (
        "Controller Service [Controller Server] ControllerGetCapabilities",
        "Controller Service [Controller Server] ValidateVolumeCapabilities",
        "Node Service should work",
        "Node Service should be idempotent",
    ),
    ("controller", "CREATE_DELETE_VOLUME"): (
        "Controller Service [Controller Server] CreateVolume",
        "Controller Service [Controller Server] DeleteVolume",
    ),
    # csi-sanity checks no condition itself; the stats specs (and the lifecycle that asks for stats) carry it.
    ("node", "GET_VOLUME_STATS"): ("Node Service NodeGetVolumeStats", "Node Service should work"),
    ("node", "VOLUME_CONDITION"): ("Node Service NodeGetVolumeStats", "Node Service should work"),
    ("node", "STAGE_UNSTAGE_VOLUME"): (
        "Node Service NodeStageVolume",
        "Node Service NodeUnstageVolume",
        "Node Service should work",
        "Node Service should be idempotent",
    ),
    ("controller", "CREATE_DELETE_SNAPSHOT"): (
        "CreateSnapshot [Controller Server]",
        "DeleteSnapshot [Controller Server]",
        "Controller Service [Controller Server] CreateVolume should create volume from an existing source snapshot",
        "Controller Service [Controller Server] CreateVolume should fail when the volume source snapshot is not found",
    ),
    ("controller", "LIST_SNAPSHOTS"): ("ListSnapshots [Controller Server]",),
    ("controller", "GET_SNAPSHOT"): ("GetSnapshot [Controller Server]",),
    ("controller", "CLONE_VOLUME"): (
        "Controller Service [Controller Server] CreateVolume should create volume from an existing source volume",
        "Controller Service [Controller Server] CreateVolume should fail when the volume source volume is not found",
    ),
    ("controller", "LIST_VOLUMES"): ("Controller Service [Controller Server] ListVolumes",),
    ("controller", "GET_CAPACITY"): ("Controller Service [Controller Server] GetCapacity",),
    ("controller", "EXPAND_VOLUME"): ("ExpandVolume [Controller Server]",),
    ("plugin", "VolumeExpansion.ONLINE"): ("ExpandVolume [Controller Server]",),
    ("controller", "MODIFY_VOLUME"): (
        "ModifyVolume [Controller Server]",
        "Controller Service [Controller Server] CreateVolume should create volume with a volume attribute class",
        "Controller Service [Controller Server] CreateVolume should not create volume with an invalid volume attribute",
    ),
    # The one spec: a volume created SINGLE_NODE_SINGLE_WRITER (by the controller), published at one target, is
    # refused FAILED_PRECONDITION at a second (by the node), in stage mode from the same staging path.
    ("controller", "SINGLE_NODE_MULTI_WRITER"): (
        "Node Service NodePublishVolume with single node multi writer capability",
    ),
    ("node", "SINGLE_NODE_MULTI_WRITER"): ("Node Service NodePublishVolume with single node multi writer capability",),
    # NodeExpandVolume grows nothing on NFS: it tells the node the capacity its per-volume usage counts against.
    ("node", "EXPAND_VOLUME"): ("Node Service NodeExpandVolume",),
    # csi-sanity v5.6.0 has no spec that calls ControllerGetVolume or reads a VolumeCondition: its only check is that
    # ControllerGetCapabilities knows the names. PROVEN_ELSEWHERE names our own tests that prove them as well.
    ("controller", "GET_VOLUME"): ("Controller Service [Controller Server] ControllerGetCapabilities",),
    ("controller", "VOLUME_CONDITION"): ("Controller Service [Controller Server] ControllerGetCapabilities",),
}


# Stricter, for these: every listed spec group must have run and passed (not just one of them).
EVERY_GROUP_PASSES = {("node", "GET_VOLUME_STATS"), ("node", "STAGE_UNSTAGE_VOLUME")}

# Extra flags per mode, per topology (run-sanity starts the drivers the same way).
TOPOLOGY_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {"stage": {"node": ("--node-stage",)}}

# Capabilities with no csi-sanity spec of their own: the tests (file::Class::test) that prove them over the socket.
PROVEN_ELSEWHERE: dict[Capability, tuple[str, ...]] = {
    ("controller", "GET_VOLUME"): (
        "tests/integration/test_volume_surface.py::TestControllerGetVolume::"
        "test_a_volume_is_returned_normal_then_abnormal_once_its_directory_is_gone",
        "tests/integration/test_volume_surface.py::TestControllerGetVolume::test_a_missing_volume_is_not_found",
    ),
    ("controller", "VOLUME_CONDITION"): (
        "tests/integration/test_volume_surface.py::TestControllerGetVolume::"
        "test_a_volume_is_returned_normal_then_abnormal_once_its_directory_is_gone",
        "tests/integration/test_volume_surface.py::TestListVolumes::"
        "test_a_volume_whose_directory_was_deleted_is_listed_abnormal",
    ),
    # csi-sanity's stats specs only ever see a healthy volume: the abnormal answers are ours to prove.
    ("node", "VOLUME_CONDITION"): (
        "tests/fault/test_volume_stats.py::TestStatsOfAHungMount::"
        "test_is_abnormal_at_the_bound_then_at_once_while_the_first_stat_is_stuck",
        "tests/fault/test_volume_stats.py::TestStatsOfAStaleMount::test_is_abnormal_with_a_message_naming_the_stale_handle",
    ),
}


def _test_exists(node_id: str) -> bool:
    path, cls, function = node_id.split("::")
    source = (ROOT / path).read_text() if (ROOT / path).is_file() else ""
    return f"class {cls}" in source and f"def {function}(" in source


def _wait_for_socket(path: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"the driver exited with {process.returncode} before it listened on {path}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the driver did not listen on {path} in time")
        time.sleep(0.05)


def _capabilities_of(socket_path: str, mode: str) -> set[Capability]:
    found: set[Capability] = set()
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        grpc.channel_ready_future(channel).result(timeout=15)  # the socket file can precede listen()
        plugin = csi_grpc.IdentityStub(channel).GetPluginCapabilities(csi.GetPluginCapabilitiesRequest(), timeout=10)
        for capability in plugin.capabilities:
            if capability.HasField("service"):
                found.add(("plugin", csi.PluginCapability.Service.Type.Name(capability.service.type)))
            else:
                kind = csi.PluginCapability.VolumeExpansion.Type.Name(capability.volume_expansion.type)
                found.add(("plugin", f"VolumeExpansion.{kind}"))
        if mode in ("controller", "all"):
            controller = csi_grpc.ControllerStub(channel).ControllerGetCapabilities(
                csi.ControllerGetCapabilitiesRequest(), timeout=10
            )
            found |= {
                ("controller", csi.ControllerServiceCapability.RPC.Type.Name(c.rpc.type)) for c in controller.capabilities
            }
        if mode in ("node", "all"):
            node = csi_grpc.NodeStub(channel).NodeGetCapabilities(csi.NodeGetCapabilitiesRequest(), timeout=10)
            found |= {("node", csi.NodeServiceCapability.RPC.Type.Name(c.rpc.type)) for c in node.capabilities}
    return found


def advertised_capabilities(
    modes: tuple[str, ...], flags: dict[str, tuple[str, ...]] | None = None
) -> dict[str, set[Capability]]:
    """Start one driver per mode (capability calls mount nothing) and ask each what it advertises."""
    found: dict[str, set[Capability]] = {}
    with tempfile.TemporaryDirectory(prefix="csi-caps-") as tmp:
        for mode in modes:
            socket_path = os.path.join(tmp, f"{mode}.sock")
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "app",
                    "--endpoint", f"unix://{socket_path}",
                    "--mode", mode,
                    "--nodeid", "capabilities-node",
                    "--working-mount-dir", os.path.join(tmp, f"{mode}-shares"),
                    "--state-dir", os.path.join(tmp, f"{mode}-state"),
                    "--log-level", "error",
                    *(flags or {}).get(mode, ()),
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                _wait_for_socket(socket_path, process, time.monotonic() + 30)
                found[mode] = _capabilities_of(socket_path, mode)
            finally:
                process.send_signal(signal.SIGTERM)
                _, stderr = process.communicate(timeout=30)
            assert process.returncode == 0, f"the {mode} driver exited {process.returncode}: {stderr.decode()[-2000:]}"
    return found


def run_sanity(topology: str) -> tuple[subprocess.CompletedProcess[str], Report]:
    result = subprocess.run(
        [str(RUN_SANITY), topology], cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    xml = REPORTS / f"{topology}.xml"
    assert xml.exists(), f"csi-sanity wrote no report ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result, read_report(str(xml))


@pytest.mark.parametrize(
    ("topology", "modes"),
    [
        ("all", ("all",)),
        ("split", ("controller", "node")),
        ("userspace", ("controller", "node")),
        ("stage", ("controller", "node")),
    ],
)
class TestCsiSanity:
    def test_every_spec_passes_and_only_unadvertised_capabilities_are_skipped(
        self, topology: str, modes: tuple[str, ...], capsys: pytest.CaptureFixture[str]
    ) -> None:
        # given what each process of this topology advertises
        per_process = advertised_capabilities(modes, TOPOLOGY_FLAGS.get(topology))
        plugin_sets = {frozenset(c for c in caps if c[0] == "plugin") for caps in per_process.values()}
        assert len(plugin_sets) == 1, f"processes of one plugin disagree on plugin capabilities: {per_process}"
        advertised = set().union(*per_process.values())
        assert (("node", "STAGE_UNSTAGE_VOLUME") in advertised) == (topology == "stage"), advertised

        # when csi-sanity runs against the topology
        result, report = run_sanity(topology)
        lines = [line for line in result.stdout.splitlines() if line.startswith(f"csi-sanity {topology}:")]
        with capsys.disabled():
            print("\n" + ("\n".join(lines) or summary_line(topology, report)))

        # then nothing failed, the script agrees, and the drivers stopped cleanly
        failures = "\n".join(f"{s.name}: {s.message}" for s in report.failed)
        assert report.failed == [], f"csi-sanity {topology} failures:\n{failures}\n{result.stderr}"
        assert report.run, "csi-sanity ran no spec"
        assert result.returncode == 0, f"run-sanity exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        assert len(lines) == 1 and ", 0 failed," in lines[0], result.stdout

        # and every skip is csi-sanity's own, for a capability we do not advertise
        unexplained = []
        for spec in report.skipped:
            if spec.status == "pending":
                if spec.name not in PENDING_UPSTREAM:
                    unexplained.append(f"{spec.name} (pending)")
                continue
            needs = SKIP_REASONS.get(spec.message)
            if needs is None or needs in advertised:
                unexplained.append(f"{spec.name} ({spec.message!r})")
        assert unexplained == [], "specs skipped for a reason other than an unadvertised capability:\n" + "\n".join(
            unexplained
        )

        # and every advertised capability is one whose specs ran and passed
        unproven = sorted(c for c in advertised if c not in PROVEN_BY)
        assert unproven == [], f"advertised without specs listed in PROVEN_BY: {unproven}"
        for capability in sorted(advertised):
            specs = [s for s in report.specs if s.name.startswith(PROVEN_BY[capability])]
            assert any(s.status == "passed" for s in specs), f"no spec proving {capability} ran and passed"
            assert not any(s.status == "failed" for s in specs), f"a spec proving {capability} failed"
            if capability in EVERY_GROUP_PASSES:
                for group in PROVEN_BY[capability]:
                    assert any(
                        s.status == "passed" for s in report.specs if s.name.startswith(group)
                    ), f"{capability} is advertised but no spec of {group!r} ran and passed"
            missing = [test for test in PROVEN_ELSEWHERE.get(capability, ()) if not _test_exists(test)]
            assert missing == [], f"the tests proving {capability} outside csi-sanity are gone: {missing}"
