"""Fuzz every CSI RPC over the real socket, in direct and in stage mode, on a share and a node shaped like real ones.

Before mutating, the run plants regular files, symbolic links (inside and off the share), FIFOs and deep trees on the
share, inside volumes and on the targets' and staging paths' parents (tests/fault/terrain.py); volumes whose directory
was replaced by a link, a file or a FIFO; a kubelet directory behind a symbolic link. The mutations
(tests/fault/mutate.py) include values far over every size limit and control characters at both ends of strings.

One run per mode serves every test below; each test checks one property, so a failure names the class it found:
  - no INTERNAL, UNKNOWN, hang or other code a valid or hostile request must not cause;
  - no control character accepted in a field the driver interprets, no oversized field accepted;
  - the driver alive, no error logged, a clean stop;
  - nothing changed outside volume directories and the driver's bookkeeping (snapshots of the share, the node
    and a directory off both, before and after);
  - no mount left once everything valid is undone;
  - threads, memory and log volume bounded, every share mount let go once idle (printed before and after).

The seed is printed; NFS_CSI_FUZZ_SEED=<seed> sends each caller the same requests again (a finding names its caller
and request number), though the callers' interleaving may differ; NFS_CSI_FUZZ_CALLERS=1 makes a run fully
repeatable. NFS_CSI_FUZZ_REQUESTS sets how many requests are sent in all (half in each mode).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import re
import threading
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2 as csi
from adapters.grpc.redact import redacted
from domain.model import METADATA_DIR, VolumeId
from tests.fault.conftest import (
    SERVER,
    SHARE,
    FaultDriver,
    Lab,
    create_request,
    laboratory,
    mount_capability,
    mounts_under,
    volume_id_for,
)
from tests.fault.mutate import edge_one, mutate_bytes, mutate_message, oversize_one
from tests.fault.terrain import Entry, Terrain, plant, plant_in_volume, snapshot

pytestmark = pytest.mark.integration

FUZZ_REQUESTS = int(os.environ.get("NFS_CSI_FUZZ_REQUESTS", "10000"))
FUZZ_SEED = int(os.environ.get("NFS_CSI_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
CALLERS = int(os.environ.get("NFS_CSI_FUZZ_CALLERS", "4"))
MODES = ("direct", "stage")
CALL_TIMEOUT = 30

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
OVERSIZED = 16 * 1024
"""A string or a map above this is over every limit the CSI spec sets or a driver could defend; accepting one is a
finding. (Between the spec's 128 bytes / 4 KiB and this, a driver may document larger limits: not judged here.)"""
# Bounds, with a margin for what a steady driver may still start lazily (a pool's last threads), never exact counts.
THREADS_MARGIN = 16
RSS_MARGIN_BYTES = 64 << 20
SHARE_IDLE_SECONDS = 1  # --share-idle-timeout: the fuzz names 13 shares (the export and 12 of its directories)
SHARE_RELEASE_WAIT = 30.0  # how long the run waits, once undone, for every idle share to be let go
LOG_LINE_BYTES = 16 * 1024
LOG_BYTES_PER_REQUEST = 2048

# --- What is sent --------------------------------------------------------------------------------------------------

SEED_VOLUMES = ("seed-0", "seed-1", "seed-2")  # made before the fuzz, with a pod's files in them
SWAPPED = {"swapped-link": "link", "swapped-file": "file", "swapped-fifo": "fifo"}  # made, then replaced


def snapshot_id_for(leaf: str, share: str = SHARE) -> str:
    return f"nfs1snap#{SERVER}#{share}#{leaf}"


@dataclass(frozen=True)
class Rpc:
    method: str  # /csi.v1.Service/Method
    response: type[Message]
    streaming: bool


def all_rpcs() -> dict[str, Rpc]:
    found = {}
    for service in csi.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            found[method.name] = Rpc(
                f"/{service.full_name}/{method.name}", getattr(csi, method.output_type.name), method.server_streaming
            )
    return found


RPCS = all_rpcs()


class Seeds:
    """Valid requests, varied, that reach the planted terrain; each is built only when drawn."""

    def __init__(self, terrain: Terrain, stage: bool) -> None:
        self.t = terrain
        self.stage = stage
        self.shares: tuple[str, ...] = (SHARE,)  # the warm-up keeps to one share; the fuzz adds the extra ones
        caps = csi.VolumeCapability.AccessMode
        self.modes = [caps.MULTI_NODE_MULTI_WRITER, caps.SINGLE_NODE_WRITER, caps.MULTI_NODE_READER_ONLY]
        self.table: list[tuple[str, Callable[[random.Random, int], Message]]] = [
            # Controller: create, in every shape
            ("CreateVolume", lambda g, n: create_request(f"fuzz-{n % 40}", subDir=f"team-{n % 4}/fuzz-{n % 40}", onDelete=("delete", "archive", "retain")[n % 3], mountPermissions="0770")),
            ("CreateVolume", lambda g, n: create_request(f"fuzz-{n % 40}")),
            ("CreateVolume", lambda g, n: create_request(f"spot-{n % 16}", subDir=g.choice(self.t.share_spots))),
            ("CreateVolume", lambda g, n: create_request(f"xs-{n % 10}", share=g.choice(self.shares))),
            ("CreateVolume", self.clone),
            ("CreateVolume", lambda g, n: self.with_flags(create_request(f"fuzz-{n % 40}", mountPermissions="0770"), mutable={"mountPermissions": "0775"})),
            ("DeleteVolume", lambda g, n: csi.DeleteVolumeRequest(volume_id=self.volume(g, n), secrets={"password": "s3cret"})),
            ("DeleteVolume", lambda g, n: csi.DeleteVolumeRequest(volume_id=self.volume(g, n))),
            ("ValidateVolumeCapabilities", self.validate),
            ("ValidateVolumeCapabilities", lambda g, n: csi.ValidateVolumeCapabilitiesRequest(volume_id=f"static-{n % 7}", volume_capabilities=[self.capability(g)], volume_context=self.static_context(g))),
            ("ListVolumes", lambda g, n: csi.ListVolumesRequest(max_entries=n % 5, starting_token=g.choice(["", "0.1.abc", f"0.{n}.{'a' * 64}"]))),
            ("GetCapacity", lambda g, n: csi.GetCapacityRequest(volume_capabilities=[self.capability(g)], parameters={"server": SERVER, "share": g.choice(self.shares)})),
            ("ControllerGetVolume", lambda g, n: csi.ControllerGetVolumeRequest(volume_id=self.volume(g, n))),
            ("ControllerExpandVolume", lambda g, n: csi.ControllerExpandVolumeRequest(volume_id=self.volume(g, n), capacity_range=csi.CapacityRange(required_bytes=(n % 4 + 1) << 30), volume_capability=self.capability(g))),
            ("ControllerModifyVolume", lambda g, n: csi.ControllerModifyVolumeRequest(volume_id=self.volume(g, n), mutable_parameters={"mountPermissions": g.choice(["0775", "0770"])})),
            ("CreateSnapshot", lambda g, n: csi.CreateSnapshotRequest(name=f"snap-{n % 10}", source_volume_id=self.volume(g, n), parameters=g.choice([{}, {"format": "tar"}]))),
            ("DeleteSnapshot", lambda g, n: csi.DeleteSnapshotRequest(snapshot_id=snapshot_id_for(f"snap-{n % 10}"))),
            ("ListSnapshots", lambda g, n: csi.ListSnapshotsRequest(max_entries=n % 4, source_volume_id=g.choice(["", self.volume(g, n)]))),
            ("GetSnapshot", lambda g, n: csi.GetSnapshotRequest(snapshot_id=snapshot_id_for(g.choice(["seed-snap", f"snap-{n % 10}"])))),
            # Node
            ("NodePublishVolume", self.publish),
            ("NodePublishVolume", self.publish),
            ("NodePublishVolume", lambda g, n: self.publish(g, n, static=True)),
            ("NodePublishVolume", lambda g, n: self.publish(g, n, static=True)),
            ("NodeUnpublishVolume", lambda g, n: csi.NodeUnpublishVolumeRequest(volume_id=self.volume(g, n), target_path=self.target(g, n))),
            ("NodeUnpublishVolume", lambda g, n: csi.NodeUnpublishVolumeRequest(volume_id=self.volume(g, n), target_path=self.target(g, n))),
            ("NodeGetVolumeStats", lambda g, n: csi.NodeGetVolumeStatsRequest(volume_id=self.volume(g, n), volume_path=g.choice([self.target(g, n), self.staging(g, n)]))),
            ("NodeExpandVolume", lambda g, n: csi.NodeExpandVolumeRequest(volume_id=self.volume(g, n), volume_path=g.choice([self.target(g, n), self.staging(g, n)]), capacity_range=csi.CapacityRange(required_bytes=(n % 4 + 1) << 30), volume_capability=self.capability(g))),
            ("NodeStageVolume", self.stage_request),
            ("NodeUnstageVolume", self.unstage_request),
            ("NodeGetInfo", lambda g, n: csi.NodeGetInfoRequest()),
            ("NodeGetCapabilities", lambda g, n: csi.NodeGetCapabilitiesRequest()),
            # Identity
            ("Probe", lambda g, n: csi.ProbeRequest()),
            ("GetPluginInfo", lambda g, n: csi.GetPluginInfoRequest()),
            ("GetPluginCapabilities", lambda g, n: csi.GetPluginCapabilitiesRequest()),
            ("ControllerGetCapabilities", lambda g, n: csi.ControllerGetCapabilitiesRequest()),
            # Not offered (UNIMPLEMENTED): each drawn rarely, by the line below, so they stay a small share of the run
            ("unoffered", self.unoffered),
        ]  # fmt: skip
        if self.stage:  # stage mode stages before it publishes: more of both
            self.table += [("NodeStageVolume", self.stage_request), ("NodeUnstageVolume", self.unstage_request)]

    def unoffered(self, g: random.Random, n: int) -> Message:
        volume = self.volume(g, n)
        offered_in_stage = [] if self.stage else [csi.NodeStageVolumeRequest(volume_id=volume, staging_target_path=self.staging(g, n))]
        return g.choice([
            csi.ControllerPublishVolumeRequest(volume_id=volume, node_id="node-1", volume_capability=self.capability(g)),
            csi.ControllerUnpublishVolumeRequest(volume_id=volume, node_id="node-1"),
            csi.GroupControllerGetCapabilitiesRequest(),
            csi.CreateVolumeGroupSnapshotRequest(name=f"group-{n % 3}", source_volume_ids=[volume]),
            csi.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=f"group-{n % 3}", snapshot_ids=[snapshot_id_for("seed-snap")]),
            csi.GetVolumeGroupSnapshotRequest(group_snapshot_id=f"group-{n % 3}"),
            csi.GetMetadataAllocatedRequest(snapshot_id=snapshot_id_for("seed-snap"), max_results=10),
            csi.GetMetadataDeltaRequest(base_snapshot_id=snapshot_id_for("seed-snap"), target_snapshot_id=snapshot_id_for("snap-1")),
            *offered_in_stage,
        ])  # fmt: skip

    def draw(self, g: random.Random, n: int) -> tuple[str, Message]:
        _, build = g.choice(self.table)
        request = build(g, n)
        return type(request).__name__.removesuffix("Request"), request

    # the pieces
    def capability(self, g: random.Random) -> csi.VolumeCapability:
        return mount_capability(g.choice(self.modes), *g.choice([(), ("hard", "nfsvers=4.1"), ("nfsvers=4.1",)]))

    def volume(self, g: random.Random, n: int) -> str:
        roll = g.random()
        if roll < 0.45:
            return volume_id_for(SEED_VOLUMES[n % 3])
        if roll < 0.6:
            return volume_id_for(f"team-{n % 4}/fuzz-{n % 40}", ("delete", "archive", "retain")[n % 3])
        if roll < 0.7:
            return volume_id_for(f"fuzz-{n % 40}")
        if roll < 0.8:
            return volume_id_for(g.choice(list(SWAPPED)))
        if roll < 0.9:
            return volume_id_for(g.choice(self.t.share_spots))
        return volume_id_for(f"xs-{n % 10}", share=g.choice(self.shares))

    def static_context(self, g: random.Random) -> dict[str, str]:
        spot = SEED_VOLUMES[0] if g.random() < 0.5 else g.choice(self.t.share_spots)  # half of them can be mounted
        context = {"server": SERVER, "share": SHARE, "subDir": spot}
        if g.random() < 0.3:
            context["mountOptions"] = "hard,nfsvers=4.1"
        return context

    def target(self, g: random.Random, n: int) -> str:
        roll = g.random()
        if roll < 0.7:
            return str(self.t.targets / f"t-{n % 40}")
        if roll < 0.85:
            return str(self.t.targets / "linked" / f"t-{n % 5}")
        return g.choice(self.t.target_spots)

    def staging(self, g: random.Random, n: int) -> str:
        roll = g.random()
        if roll < 0.8:
            return str(self.t.stagings / f"s-{n % 10}")
        if roll < 0.9:
            return str(self.t.stagings / "linked" / f"s-{n % 10}")
        return g.choice(self.t.staging_spots)

    @staticmethod
    def with_flags(request: csi.CreateVolumeRequest, mutable: dict[str, str]) -> csi.CreateVolumeRequest:
        request.volume_capabilities[0].mount.mount_flags.extend(["hard", "nfsvers=4.1"])
        request.mutable_parameters.update(mutable)
        return request

    def clone(self, g: random.Random, n: int) -> csi.CreateVolumeRequest:
        request = create_request(f"clone-{n % 6}")
        if g.random() < 0.5:
            request.volume_content_source.volume.volume_id = self.volume(g, n)
        else:
            request.volume_content_source.snapshot.snapshot_id = snapshot_id_for(g.choice(["seed-snap", f"snap-{n % 10}"]))
        return request

    def validate(self, g: random.Random, n: int) -> csi.ValidateVolumeCapabilitiesRequest:
        name = SEED_VOLUMES[n % 3]
        return csi.ValidateVolumeCapabilitiesRequest(
            volume_id=volume_id_for(name),
            volume_capabilities=[self.capability(g)],
            volume_context={"server": SERVER, "share": SHARE, "subDir": name},
            parameters=g.choice([{}, {"server": SERVER, "share": SHARE}]),
        )

    def publish(self, g: random.Random, n: int, static: bool = False) -> csi.NodePublishVolumeRequest:
        request = csi.NodePublishVolumeRequest(
            volume_id=f"static-{n % 7}" if static else self.volume(g, n),
            target_path=self.target(g, n),
            volume_capability=self.capability(g),
            readonly=g.random() < 0.2,
            secrets={"password": "s3cret"},
        )
        if static:
            request.volume_context.update(self.static_context(g))
        if self.stage:
            request.staging_target_path = self.staging(g, n)
        return request

    def unstage_request(self, g: random.Random, n: int) -> csi.NodeUnstageVolumeRequest:
        return csi.NodeUnstageVolumeRequest(volume_id=self.volume(g, n), staging_target_path=self.staging(g, n))

    def stage_request(self, g: random.Random, n: int) -> csi.NodeStageVolumeRequest:
        static = g.random() < 0.2
        request = csi.NodeStageVolumeRequest(
            volume_id=f"static-{n % 7}" if static else self.volume(g, n),
            staging_target_path=self.staging(g, n),
            volume_capability=self.capability(g),
        )
        if static:
            request.volume_context.update(self.static_context(g))
        return request


# --- What is judged ------------------------------------------------------------------------------------------------


def has_control(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)


_CONTEXT_KEYS = {"server", "share", "subdir", "mountoptions", "mountpermissions", "ondelete"}


def accepted_control(request: Message, response: Message | None, stage: bool) -> str:
    """The field the driver interprets that carries a control character although the request was accepted ('' if
    none): mount flags, parameters, mutable parameters, a static volume's context, names, paths, tokens. (A field
    the driver ignores may carry anything: NodeGetVolumeStats' staging path, or NodePublish's without stage mode.)"""
    fields: list[tuple[str, str]] = []
    capabilities = list(getattr(request, "volume_capabilities", []))
    if isinstance(request, csi.GetCapacityRequest) and response is not None and not response.available_capacity:  # type: ignore[attr-defined]
        capabilities = []  # 0 bytes for capabilities no volume can have: the spec's answer, not an acceptance
    if request.DESCRIPTOR.fields_by_name.get("volume_capability") and request.HasField("volume_capability"):
        capabilities.append(request.volume_capability)  # type: ignore[attr-defined]
    for capability in capabilities:
        fields += [("mount_flags", flag) for flag in capability.mount.mount_flags]
    for name in ("parameters", "mutable_parameters"):
        for key, value in dict(getattr(request, name, {})).items():
            if not key.startswith("csi.storage.k8s.io/"):
                fields += [(f"{name} key", key), (f"{name}[{key!r}]", value)]
    context = dict(getattr(request, "volume_context", {}))
    if context and VolumeId.parse(getattr(request, "volume_id", "")) is None:
        fields += [(f"volume_context[{k!r}]", v) for k, v in context.items() if k.lower() in _CONTEXT_KEYS]
    interpreted = ["name", "starting_token", "target_path", "volume_path"]
    if isinstance(request, (csi.NodeStageVolumeRequest, csi.NodeUnstageVolumeRequest)) or (
        stage and isinstance(request, csi.NodePublishVolumeRequest)
    ):
        interpreted.append("staging_target_path")
    for name in interpreted:
        if name in request.DESCRIPTOR.fields_by_name:
            fields.append((name, getattr(request, name)))
    if isinstance(request, csi.ValidateVolumeCapabilitiesRequest) and not (response and response.HasField("confirmed")):  # type: ignore[attr-defined]
        return ""  # not confirmed: an answer, not an acceptance
    return next((name for name, value in fields if has_control(value)), "")


def oversized_fields(message: Message, prefix: str = "") -> list[str]:
    """Every string or string map of message above OVERSIZED bytes, by field path."""
    found = []
    for descriptor, value in message.ListFields():
        where = prefix + descriptor.name
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            if descriptor.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING:
                if sum(len(k.encode()) + len(v.encode()) for k, v in value.items()) > OVERSIZED:
                    found.append(where)
        elif descriptor.message_type is not None:
            for item in value if descriptor.is_repeated else [value]:
                found += oversized_fields(item, where + ".")
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            for item in value if descriptor.is_repeated else [value]:
                if len(item.encode("utf-8", "surrogatepass")) > OVERSIZED:
                    found.append(where)
    return found


def shorten(value: Any, limit: int = 100) -> Any:
    """value for a report: strings cut to limit characters, maps and lists to 8 entries, at any depth."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]!r}...({len(value)} chars)"
    if isinstance(value, dict):
        entries = list(value.items())
        shown = {shorten(k, 40): shorten(v, limit) for k, v in entries[:8]}
        if len(entries) > 8:
            shown["..."] = f"{len(entries)} entries"
        return shown
    if isinstance(value, list):
        return [shorten(v, limit) for v in value[:8]]
    return value


def describe(request: Message) -> str:
    return repr(shorten(redacted(request)))


def signature(text: str, tmp: str) -> str:
    """A failure's details with the particulars taken out, so the failures of one class group together."""
    text = text.replace(tmp, "<tmp>")
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", text)
    text = re.sub(r"<tmp>\S*", "<path>", text)
    return re.sub(r"\d+", "N", text)[:160]


@dataclass(frozen=True)
class Finding:
    oracle: str  # which property failed
    method: str
    code: str
    signature: str
    example: str
    where: str  # caller and request number, for a replay with the seed


@dataclass
class Ledger:
    """What the valid (OK) requests made, to undo it afterwards and to explain what changed on disk."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    created: dict[str, csi.Volume] = field(default_factory=dict)  # every volume ever created (id -> volume)
    live_volumes: set[str] = field(default_factory=set)
    live_snapshots: set[str] = field(default_factory=set)
    snapshots: set[str] = field(default_factory=set)  # every snapshot ever created
    published: dict[str, str] = field(default_factory=dict)  # target as sent -> volume id
    staged: dict[str, str] = field(default_factory=dict)
    node_paths: set[str] = field(default_factory=set)  # every target or staging path an OK call named
    named: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # path -> calls naming it
    codes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    findings: list[Finding] = field(default_factory=list)

    def record(self, method: str, code: grpc.StatusCode, request: Message, response: Message | None) -> None:
        with self.lock:
            self.codes[method][code.name] += 1
            for name in ("target_path", "staging_target_path", "volume_path"):
                path = getattr(request, name, "")
                if path.startswith("/") and "\x00" not in path and len(path) < 4096:
                    self.named[os.path.realpath(path)][f"{method} {code.name}"] += 1
            if code is not grpc.StatusCode.OK:
                return
            r: Any = request
            if method == "CreateVolume" and response is not None:
                volume = response.volume  # type: ignore[attr-defined]
                self.created[volume.volume_id] = volume
                self.live_volumes.add(volume.volume_id)
            elif method == "DeleteVolume":
                self.live_volumes.discard(r.volume_id)
            elif method == "CreateSnapshot" and response is not None:
                self.live_snapshots.add(response.snapshot.snapshot_id)  # type: ignore[attr-defined]
                self.snapshots.add(response.snapshot.snapshot_id)  # type: ignore[attr-defined]
            elif method == "DeleteSnapshot":
                self.live_snapshots.discard(r.snapshot_id)
            elif method == "NodePublishVolume":
                self.published[r.target_path] = r.volume_id
                self.node_paths.add(r.target_path)
            elif method == "NodeUnpublishVolume":
                self.published.pop(r.target_path, None)
                self.node_paths.add(r.target_path)
            elif method == "NodeStageVolume":
                self.staged[r.staging_target_path] = r.volume_id
                self.node_paths.add(r.staging_target_path)
            elif method == "NodeUnstageVolume":
                self.staged.pop(r.staging_target_path, None)

    def find(self, finding: Finding) -> None:
        with self.lock:
            self.findings.append(finding)


@dataclass(frozen=True)
class Resources:
    threads: int
    rss_bytes: int
    fds: int
    share_mounts: int

    @classmethod
    def of(cls, driver: FaultDriver) -> Resources:
        time.sleep(0.5)  # let the last calls' workers go idle
        with open(f"/proc/{driver.pid}/status") as status:
            rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        return cls(driver.threads(), rss, driver.fds(), len(mounts_under(driver.workdir / "shares")))

    def __str__(self) -> str:
        return f"threads {self.threads}, RSS {self.rss_bytes / (1 << 20):.1f} MiB, fds {self.fds}, share mounts {self.share_mounts}"


@dataclass(repr=False)
class Run:
    """One mode's fuzz, undone, with what each test judges."""

    mode: str
    seed: int
    requests: int
    seconds: float
    ledger: Ledger
    terrain: Terrain
    before: dict[str, Entry]
    after: dict[str, Entry]
    leaked_mounts: list[str]
    cleanup_failures: list[str]
    resources_before: Resources
    resources_after: Resources
    alive: bool
    probe_ready: bool
    exit_code: int | None
    log_bytes: int
    log_lines: int
    longest_log_line: int
    error_lines: list[str]
    tmp: str

    def __repr__(self) -> str:  # pytest prints it beside every failure: the seed, not the whole ledger
        return f"Run({self.mode} mode, seed {self.seed}, {self.requests} requests)"

    def findings(self, oracle: str) -> list[Finding]:
        return [f for f in self.ledger.findings if f.oracle == oracle]

    def report(self, oracle: str) -> str:
        """The findings of one oracle grouped by class, with one example request each, and how to replay."""
        groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
        for finding in self.findings(oracle):
            groups[(finding.method, finding.code, finding.signature)].append(finding)
        lines = [f"{self.mode} mode, seed {self.seed} (replay: NFS_CSI_FUZZ_SEED={self.seed}): {len(groups)} classes"]
        for (method, code, sig), found in sorted(groups.items(), key=lambda item: -len(item[1])):
            lines.append(f"- {len(found)} x {method} {code}: {sig}\n    e.g. ({found[0].where}) {found[0].example[:600]}")
        return "\n".join(lines)


# --- The run -------------------------------------------------------------------------------------------------------


_CALLABLES: dict[tuple[int, str], Callable[..., Any]] = {}


def send(driver: FaultDriver, name: str, raw: bytes) -> tuple[grpc.StatusCode, Message | None, str]:
    rpc = RPCS[name]
    key = (id(driver), name)
    if key not in _CALLABLES:
        make = driver.channel.unary_stream if rpc.streaming else driver.channel.unary_unary
        _CALLABLES[key] = make(rpc.method, response_deserializer=rpc.response.FromString)
    try:
        response = _CALLABLES[key](raw, timeout=CALL_TIMEOUT)
        if rpc.streaming:
            list(response)
            response = None
        return grpc.StatusCode.OK, response, ""
    except grpc.RpcError as err:
        return err.code(), None, err.details() or ""


def fuzz_one(driver: FaultDriver, seeds: Seeds, g: random.Random, n: int, where: str, ledger: Ledger, tmp: str) -> None:
    method, request = seeds.draw(g, n)
    roll = g.random()
    if roll < 0.06:
        oversize_one(g, request)
    elif roll < 0.10:
        edge_one(g, request)
    else:
        for _ in range(g.randint(1, 3)):
            mutate_message(g, request)
    try:
        raw = request.SerializeToString()
    except Exception:  # noqa: BLE001 - protobuf cannot encode it: nothing to send
        return
    if g.random() < 0.05:
        raw = mutate_bytes(g, raw)
        try:
            request = type(request).FromString(raw)
        except Exception:  # noqa: BLE001 - garbage: only the code is judged
            request = type(request)()
    code, response, details = send(driver, method, raw)
    ledger.record(method, code, request, response)
    if code not in ALLOWED:
        ledger.find(Finding("code", method, code.name, signature(details, tmp), describe(request), where))
    if code is grpc.StatusCode.OK:
        control = accepted_control(request, response, seeds.stage)
        if control:
            ledger.find(Finding("control", method, "OK", f"a control character in {control} was accepted", describe(request), where))
        for path in oversized_fields(request):
            ledger.find(Finding("oversized", method, "OK", f"{re.sub(r'[0-9]+', 'N', path)} over {OVERSIZED} bytes was accepted", describe(request), where))


def prepare(driver: FaultDriver, lab: Lab, terrain: Terrain, ledger: Ledger) -> None:
    """Volumes with a pod's files in them, a snapshot, and volumes whose directory was replaced afterwards."""
    for name in (*SEED_VOLUMES, *SWAPPED):
        volume = driver.controller.CreateVolume(create_request(name), timeout=30).volume
        ledger.record("CreateVolume", grpc.StatusCode.OK, create_request(name), csi.CreateVolumeResponse(volume=volume))
    for name in SEED_VOLUMES:
        plant_in_volume(lab.export / name, terrain.outside if name == SEED_VOLUMES[2] else None)
    snap = driver.controller.CreateSnapshot(csi.CreateSnapshotRequest(name="seed-snap", source_volume_id=volume_id_for("seed-0")), timeout=60)
    ledger.record("CreateSnapshot", grpc.StatusCode.OK, csi.CreateSnapshotRequest(name="seed-snap"), snap)
    for name, kind in SWAPPED.items():
        path = lab.export / name
        path.rmdir()
        if kind == "link":
            path.symlink_to(terrain.outside)
        elif kind == "file":
            path.write_text("a file where the volume's directory was\n")
        else:
            os.mkfifo(path)


WARM_UP_CALLERS = 8  # as many as the driver's --workers: gRPC starts its worker threads lazily, up to that many


def warm_up(driver: FaultDriver, seeds: Seeds, ledger: Ledger) -> None:
    """Valid requests, unmutated, from more callers at once than the fuzz has: the threads a steady driver keeps
    (gRPC's workers, the share's and the targets' bounded pools) are all started before they are counted."""

    def calls(caller: int) -> None:
        g = random.Random(f"warm-up {caller}")
        for n in range(40):
            method, request = seeds.draw(g, 1000 + caller * 40 + n)
            code, response, _ = send(driver, method, request.SerializeToString())
            ledger.record(method, code, request, response)

    with concurrent.futures.ThreadPoolExecutor(max_workers=WARM_UP_CALLERS) as pool:
        list(pool.map(calls, range(WARM_UP_CALLERS)))


def undo(driver: FaultDriver, ledger: Ledger, tmp: str) -> list[str]:
    """Unpublish, unstage, delete every snapshot and volume the run made; what failed to undo, listed."""
    failures = []

    def attempt(what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except grpc.RpcError as err:
            failures.append(f"{what}: {err.code().name} {signature(err.details() or '', tmp)}")

    node = driver.node
    for target, volume_id in list(ledger.published.items()):
        attempt(f"NodeUnpublishVolume {target.replace(tmp, '<tmp>')}", lambda: node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target), timeout=CALL_TIMEOUT))
    for staging, volume_id in list(ledger.staged.items()):
        attempt(f"NodeUnstageVolume {staging.replace(tmp, '<tmp>')}", lambda: node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=volume_id, staging_target_path=staging), timeout=CALL_TIMEOUT))
    for snapshot_id in sorted(ledger.live_snapshots):
        attempt(f"DeleteSnapshot {snapshot_id[:100]}", lambda: driver.controller.DeleteSnapshot(csi.DeleteSnapshotRequest(snapshot_id=snapshot_id), timeout=CALL_TIMEOUT))
    for volume_id in sorted(ledger.live_volumes):
        attempt(f"DeleteVolume {volume_id[:100]}", lambda: driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=CALL_TIMEOUT))
    return failures


def explained(path: str, entry: Entry | None, ledger: Ledger, root: str) -> bool:
    """Whether a change at path (entry: what is there now, None if gone) is the driver's own doing: a volume's
    directory and what is in it, the parents it made for one, its record and index entry, an archived volume, the
    driver's directory on a share with the snapshots made, or a target or staging path an accepted call named."""
    subdirs: set[str] = set()
    for volume in ledger.created.values():
        context = volume.volume_context
        share = os.path.join(root, context["server"], context["share"].lstrip("/"))
        directory = os.path.join(share, context["subDir"])
        parent, leaf = os.path.split(directory)
        subdirs.add(hashlib.sha256(context["subDir"].encode()).hexdigest())
        if path == directory or path.startswith(directory + "/"):
            return True
        if directory.startswith(path + "/") and (entry is None or entry.kind == "dir"):
            return True  # a parent made for the volume's subDir
        if path == os.path.join(parent, f".{leaf}.nfs-csi.json"):
            return True
        if os.path.dirname(path) == parent and os.path.basename(path).startswith(f"archived-{leaf}-"):
            return True
    parts = path.split("/")
    if METADATA_DIR in parts:
        inside = parts[parts.index(METADATA_DIR) + 1 :]
        if len(inside) <= 1:
            return entry is None or entry.kind == "dir"  # the driver's directory, its index and its snapshots directory
        leaves = {snapshot_id.rsplit("#", 1)[-1] for snapshot_id in ledger.snapshots}
        if inside[0] == "volumes":
            return inside[1] in subdirs
        name = inside[1]
        return inside[0] == "snapshots" and any(name.startswith(f"{leaf}.") for leaf in leaves) and not name.endswith(".tmp")
    node_paths = {os.path.normpath(p) for p in ledger.node_paths} | {os.path.realpath(p) for p in ledger.node_paths}
    return path in node_paths and (entry is None or entry.kind == "dir")


def changes(before: dict[str, Entry], after: dict[str, Entry]) -> list[tuple[str, Entry | None, Entry | None]]:
    return [(p, before.get(p), after.get(p)) for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def trees(lab: Lab, terrain: Terrain) -> dict[str, Entry]:
    mounted = set(mounts_under(lab.tmp))
    return {**snapshot(lab.root, mounted), **snapshot(terrain.outside, mounted), **snapshot(terrain.node, mounted)}


def fuzz_mode(lab: Lab, mode: str, requests: int, seed: int) -> Run:
    tmp = str(lab.tmp)
    terrain = plant(lab.export, lab.tmp)
    flags = [
        "--workers", str(WARM_UP_CALLERS), "--fs-timeout", "5", "--snapshot-timeout", "20", "--log-level", "info",
        "--shares", f"{SERVER}:{SHARE}", "--share-idle-timeout", str(SHARE_IDLE_SECONDS),
    ]  # fmt: skip
    driver = lab.start(*flags, *(["--node-stage"] if mode == "stage" else []))
    ledger = Ledger()
    prepare(driver, lab, terrain, ledger)
    seeds = Seeds(terrain, stage=mode == "stage")
    warm_up(driver, seeds, ledger)
    before = trees(lab, terrain)
    resources_before = Resources.of(driver)
    log_start = driver.log.stat().st_size

    share = requests // CALLERS
    seeds.shares = (SHARE, *terrain.extra_shares)
    started = time.monotonic()

    def caller(index: int) -> None:
        g = random.Random(f"{seed}:{mode}:{index}")
        for i in range(share):
            fuzz_one(driver, seeds, g, index * share + i, f"caller {index}, request {i}", ledger, tmp)

    with concurrent.futures.ThreadPoolExecutor(max_workers=CALLERS) as pool:
        list(pool.map(caller, range(CALLERS)))  # several callers at once, as the sidecars are
    seconds = time.monotonic() - started

    alive = driver.process.poll() is None
    try:
        probe_ready = alive and driver.identity.Probe(csi.ProbeRequest(), timeout=10).ready.value
    except grpc.RpcError:
        probe_ready = False
    cleanup_failures = undo(driver, ledger, tmp) if alive else ["the driver is dead: nothing undone"]
    if alive:  # left idle: every share is let go, with its threads
        idle_until = time.monotonic() + SHARE_RELEASE_WAIT
        while mounts_under(driver.workdir / "shares") and time.monotonic() < idle_until:
            time.sleep(0.1)
    resources_after = Resources.of(driver) if alive else resources_before
    leaked = [m for m in mounts_under(lab.tmp) if not m.startswith(str(driver.workdir / "shares"))]
    after = trees(lab, terrain)
    exit_code = driver.stop() if alive else driver.process.returncode
    text = driver.log.read_bytes()[log_start:]
    lines = text.splitlines()
    errors = [line.decode(errors="replace")[:2000] for line in lines if b'"level": "error"' in line or b'"level": "critical"' in line]
    return Run(
        mode, seed, share * CALLERS, seconds, ledger, terrain, before, after, leaked, cleanup_failures,
        resources_before, resources_after, alive, bool(probe_ready), exit_code,
        len(text), len(lines), max((len(line) for line in lines), default=0), errors, tmp,
    )  # fmt: skip


@pytest.fixture(scope="module", params=MODES)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    mode = request.param
    with laboratory(tmp_path_factory.mktemp(f"fuzz-{mode}")) as lab:
        result = fuzz_mode(lab, mode, FUZZ_REQUESTS // len(MODES), FUZZ_SEED)
        calls = sum(sum(c.values()) for c in result.ledger.codes.values())
        print(
            f"\nfuzz {mode}: {result.requests} requests in {result.seconds:.1f} s, seed {result.seed}"
            f" (replay: NFS_CSI_FUZZ_SEED={result.seed}); {calls} calls with the warm-up\n"
            f"  codes: {dict(sum(result.ledger.codes.values(), Counter()))}\n"
            f"  before: {result.resources_before}\n  after:  {result.resources_after}\n"
            f"  log: {result.log_bytes} bytes in {result.log_lines} lines ({result.log_bytes / max(1, result.requests):.0f} bytes a request), "
            f"longest line {result.longest_log_line} bytes\n"
            f"  findings: {dict(Counter(f.oracle for f in result.ledger.findings))}"
        )
        yield result


# --- The properties ------------------------------------------------------------------------------------------------


class TestFuzzing:
    def test_every_rpc_is_called(self, run: Run) -> None:
        called = {method for method, codes in run.ledger.codes.items() if sum(codes.values()) >= 5}
        assert set(RPCS) - called == set()
        assert run.requests >= FUZZ_REQUESTS // len(MODES) - CALLERS

    def test_no_internal_unknown_or_timeout(self, run: Run) -> None:
        assert run.findings("code") == [], run.report("code")

    def test_no_control_character_is_accepted(self, run: Run) -> None:
        assert run.findings("control") == [], run.report("control")

    def test_no_oversized_field_is_accepted(self, run: Run) -> None:
        assert run.findings("oversized") == [], run.report("oversized")

    def test_the_driver_lives_logs_no_error_and_stops_cleanly(self, run: Run) -> None:
        assert (run.alive, run.probe_ready) == (True, True)
        assert run.error_lines == [], "\n".join(run.error_lines[:10])
        assert run.exit_code == 0

    def test_nothing_outside_volume_directories_and_bookkeeping_changes(self, run: Run) -> None:
        root = os.path.join(run.tmp, "exports-root")
        unexplained = [
            f"{path.replace(run.tmp, '<tmp>')}: {was} -> {now}" + (f" (named by {dict(run.ledger.named[path])})" if path in run.ledger.named else "")
            for path, was, now in changes(run.before, run.after)
            if not explained(path, now, run.ledger, root)
        ]
        assert unexplained == [], f"seed {run.seed}, {run.mode} mode:\n" + "\n".join(unexplained[:30])

    def test_everything_valid_undoes_and_no_mount_is_left(self, run: Run) -> None:
        assert run.cleanup_failures == [], f"seed {run.seed}, {run.mode} mode:\n" + "\n".join(run.cleanup_failures[:30])
        assert run.leaked_mounts == [], [m.replace(run.tmp, "<tmp>") for m in run.leaked_mounts]

    def test_threads_and_memory_stay_bounded(self, run: Run) -> None:
        before, after = run.resources_before, run.resources_after
        assert after.threads <= before.threads + THREADS_MARGIN, f"seed {run.seed}, {run.mode} mode: {before} -> {after}"
        assert after.rss_bytes <= before.rss_bytes + RSS_MARGIN_BYTES, f"seed {run.seed}, {run.mode} mode: {before} -> {after}"

    def test_share_mounts_are_released_once_idle(self, run: Run) -> None:
        before, after = run.resources_before, run.resources_after
        assert after.share_mounts == 0, f"seed {run.seed}, {run.mode} mode: {before} -> {after}"

    def test_the_log_does_not_amplify_hostile_input(self, run: Run) -> None:
        figures = f"seed {run.seed}, {run.mode} mode: {run.log_bytes} bytes for {run.requests} requests, longest line {run.longest_log_line}"
        assert run.longest_log_line <= LOG_LINE_BYTES, figures
        assert run.log_bytes <= run.requests * LOG_BYTES_PER_REQUEST, figures
