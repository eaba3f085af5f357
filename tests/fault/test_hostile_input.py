"""Hostile input over the real socket: clear INVALID_ARGUMENT for bad fields, and a fuzz run that breaks nothing."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import pytest
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2 as csi
from domain.model import METADATA_DIR
from tests.fault.conftest import (
    SERVER,
    SHARE,
    FaultDriver,
    Lab,
    create_request,
    error_of,
    laboratory,
    mount_capability,
    mounts_under,
    publish_request,
    volume_id_for,
)
from tests.fault.mutate import mutate_bytes, mutate_message

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def invalid(call: Callable[[], object], says: str) -> None:
    error = error_of(call)
    assert (error.code(), says in error.details()) == (INVALID, True), (error.code(), error.details())


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One driver for all the refusals: a refusal changes nothing, so the cases cannot disturb one another."""
    with laboratory(tmp_path_factory.mktemp("hostile")) as running:
        running.start("--allowed-mount-options", "hard,nfsvers,rsize,ro")
        yield running
        assert running.drivers[0].stop() == 0


@pytest.fixture
def driver(shared: Lab) -> FaultDriver:
    return shared.drivers[0]


class TestInvalidArgument:
    @pytest.fixture
    def lab(self, shared: Lab) -> Lab:
        return shared

    @pytest.mark.parametrize(
        ("changes", "says"),
        [
            ({"name": ""}, "name is required"),
            ({"name": "a\x00b"}, "control or invisible character"),
            ({"name": "x" * 129}, "name is longer than 128 bytes (129 bytes): the CSI spec's limit for a string"),
            ({"name": "a/b"}, "must not contain '/'"),
            ({"name": ".hidden"}, "must not start with '.'"),
            ({"subDir": "x" * 220}, "longer than 200 bytes"),
            ({"subDir": "../victim"}, "'.' or '..' components"),
            ({"subDir": "/etc"}, "must be relative"),
            ({"subDir": "a\\..\\b"}, "a backslash"),
            ({"subDir": "a\u202eb"}, "invisible character"),
            ({"subDir": "${pvc.metadata.name}"}, "--extra-create-metadata"),
            ({"subDir": "${secret.data}"}, "placeholder ${secret.data} is unknown"),
            ({"subDir": "ns/${pvc.metadata.name"}, "without its closing"),
            ({"server": "a,b"}, "must be a host name"),
            ({"server": "-oexec"}, "must be a host name"),
            ({"share": "/exports/../../etc"}, "must not contain '..'"),
            ({"share": "exports"}, "must be an absolute path"),
            ({"onDelete": "shred"}, "onDelete 'shred' is not one of"),
            ({"mountPermissions": "u+rwx"}, "must be an octal mode"),
            ({"nfsvers": "4.1"}, "unknown parameter 'nfsvers'"),
            # a trailing newline (or another control character) is refused, not trimmed into validity
            ({"server": "127.0.0.1\n"}, "must be a host name"),
            ({"mountPermissions": "0770\n"}, "must be an octal mode"),
            ({"onDelete": "retain\n"}, "onDelete 'retain\\n' is not one of"),
        ],
    )
    def test_create_volume_names_what_is_wrong(self, driver: FaultDriver, lab: Lab, changes: dict[str, str], says: str) -> None:
        name = changes.pop("name", "pvc-1")
        before = lab.volume_dirs()
        invalid(lambda: driver.controller.CreateVolume(create_request(name, **changes), timeout=10), says)
        assert lab.volume_dirs() == before

    @pytest.mark.parametrize(
        ("flags", "says"),
        [
            (("noexec",), "'noexec' is not on this driver's allowlist (--allowed-mount-options)"),
            (("hard,exec",), "one option per flag"),
            (("rsize=1 -o bind",), "malformed"),
            (("nfsvers=4.1\n",), "malformed"),
            (("nfsvers=4.1",), ""),
        ],
    )
    def test_mount_options_come_from_the_configured_allowlist(
        self, driver: FaultDriver, lab: Lab, flags: tuple[str, ...], says: str
    ) -> None:
        request = create_request("pvc-1")
        request.volume_capabilities[0].mount.mount_flags.extend(flags)
        if says:
            invalid(lambda: driver.controller.CreateVolume(request, timeout=10), says)
            publish = publish_request(volume_id_for("pvc-1"), lab.tmp / "t", volume_capability=request.volume_capabilities[0])
            invalid(lambda: driver.node.NodePublishVolume(publish, timeout=10), says)
        else:
            driver.controller.CreateVolume(request, timeout=10)

    def test_a_mount_flag_with_a_trailing_newline_is_never_confirmed(self, driver: FaultDriver) -> None:
        volume = driver.controller.CreateVolume(create_request("pvc-newline"), timeout=10).volume
        answer = driver.controller.ValidateVolumeCapabilities(
            csi.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id, volume_capabilities=[mount_capability(5, "nfsvers=4.1\n")]),
            timeout=10,
        )
        assert not answer.HasField("confirmed") and "malformed" in answer.message

    @pytest.mark.parametrize(
        ("target", "says"),
        [
            ("", "target_path is required"),
            ("relative/target", "must be an absolute path"),
            ("/", "must not be '/'"),
            ("/var/lib/../../etc", "must not contain '..'"),
            ("/tmp/a\x00b", "control or invisible character"),
            ("/tmp/" + "x" * 300, "longer than 255 bytes"),
            ("/tmp/" + "x/" * 2100, "longer than 4095 bytes"),
        ],
    )
    def test_target_paths_are_checked(self, driver: FaultDriver, target: str, says: str) -> None:
        request = publish_request(volume_id_for("pvc-1"), Path("/x"))
        request.target_path = target
        invalid(lambda: driver.node.NodePublishVolume(request, timeout=10), says)
        unpublish = csi.NodeUnpublishVolumeRequest(volume_id=volume_id_for("pvc-1"), target_path=target)
        invalid(lambda: driver.node.NodeUnpublishVolume(unpublish, timeout=10), says)

    def test_publishing_over_data_or_through_a_link_is_refused(self, driver: FaultDriver, lab: Lab) -> None:
        (lab.export / "pvc-1").mkdir(exist_ok=True)
        full = lab.tmp / "full"
        full.mkdir()
        (full / "data").write_text("keep")
        link = lab.tmp / "link"
        link.symlink_to(full)
        for target, says in ((full, "not an empty directory"), (link, "symbolic link")):
            error = error_of(lambda: driver.node.NodePublishVolume(publish_request(volume_id_for("pvc-1"), target), timeout=10))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and says in error.details()
        assert (full / "data").read_text() == "keep" and mounts_under(full) == mounts_under(link) == []

    def test_a_megabyte_volume_id_with_a_static_context_is_refused_before_anything_is_written(self, driver: FaultDriver, lab: Lab) -> None:
        target = lab.tmp / "big-id-target"
        records = driver.workdir / "state" / "publications"
        before = sorted(os.listdir(records)) if records.exists() else []
        request = publish_request("v" * (1 << 20), target, volume_context={"server": SERVER, "share": SHARE})
        invalid(lambda: driver.node.NodePublishVolume(request, timeout=10), "volume_id is longer than 16384 bytes (1048576 bytes)")
        assert not target.exists() and mounts_under(target) == []
        assert (sorted(os.listdir(records)) if records.exists() else []) == before

    @pytest.mark.parametrize(
        ("rpc", "request_message", "says"),
        [
            ("CreateVolume", create_request("pvc-big", subDir="s" * 5000), "parameters is longer than 4096 bytes"),
            ("CreateVolume", csi.CreateVolumeRequest(name="pvc-1", secrets={"k": "s" * 5000}), "secrets is longer than 4096 bytes"),
            ("DeleteVolume", csi.DeleteVolumeRequest(volume_id="v" * 20000), "volume_id is longer than 16384 bytes"),
            ("ListVolumes", csi.ListVolumesRequest(starting_token="t" * 20000), "starting_token is longer than 16384 bytes"),
            ("ValidateVolumeCapabilities", csi.ValidateVolumeCapabilitiesRequest(volume_id="v", volume_context={"k": "c" * 20000}), "volume_context is longer than 16384 bytes"),
            ("NodeUnpublishVolume", csi.NodeUnpublishVolumeRequest(volume_id="v", target_path="/t" * 3000), "target_path is longer than 4095 bytes"),
            ("NodeGetVolumeStats", csi.NodeGetVolumeStatsRequest(volume_id="v", volume_path="/t", staging_target_path="/s" * 3000), "staging_target_path is longer than 4095 bytes"),
            ("NodePublishVolume", publish_request("v", Path("/t"), volume_capability=mount_capability(5, *(["hard"] * 1250))), "volume_capability.mount.mount_flags is longer than 4096 bytes (5000 bytes)"),
        ],
    )  # fmt: skip
    def test_every_oversized_field_is_invalid_argument_naming_the_field_and_the_limit(
        self, driver: FaultDriver, lab: Lab, rpc: str, request_message: Message, says: str
    ) -> None:
        before = lab.volume_dirs()
        service = driver.node if rpc.startswith("Node") else driver.controller
        invalid(lambda: getattr(service, rpc)(request_message, timeout=10), says)
        assert lab.volume_dirs() == before

    def test_inline_ephemeral_volumes_are_refused(self, driver: FaultDriver, lab: Lab) -> None:
        request = publish_request(
            volume_id_for("pvc-1"), lab.tmp / "t", volume_context={"csi.storage.k8s.io/ephemeral": "true", "server": SERVER}
        )
        invalid(lambda: driver.node.NodePublishVolume(request, timeout=10), "inline ephemeral volumes are disabled")
        assert not (lab.tmp / "t").exists()

    def test_a_request_that_does_not_parse_is_invalid_argument(self, driver: FaultDriver) -> None:
        call = driver.channel.unary_unary("/csi.v1.Controller/CreateVolume")
        invalid(lambda: call(b"\x0a\x02\xff\xfe", timeout=10), "not a valid CreateVolumeRequest message")


# --- Fuzzing ----------------------------------------------------------------------------------------------------

FUZZ_REQUESTS = int(os.environ.get("NFS_CSI_FUZZ_REQUESTS", "10000"))
FUZZ_SEED = int(os.environ.get("NFS_CSI_FUZZ_SEED", "20261124"))
CALLERS = 4
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


@dataclass
class Ledger:
    """What the valid (OK) requests did, to tell afterwards what may exist."""

    created: dict[str, csi.Volume] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)  # target -> volume id
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def seeds(lab: Lab, n: int) -> list[tuple[str, Message]]:
    """Valid requests, varied, for the mutations to start from."""
    volume = volume_id_for(f"seed-{n % 3}")
    target = lab.tmp / "targets" / f"t-{n % 50}"
    capability = mount_capability(5, "hard", "nfsvers=4.1")
    secrets = {"password": "s3cret"}
    return [
        ("Controller/CreateVolume", create_request(f"fuzz-{n % 40}", subDir=f"team-{n % 4}/fuzz-{n % 40}", onDelete=("delete", "archive", "retain")[n % 3], mountPermissions="0770")),
        ("Controller/CreateVolume", create_request(f"fuzz-{n % 40}")),
        ("Controller/DeleteVolume", csi.DeleteVolumeRequest(volume_id=volume_id_for(f"fuzz-{n % 40}"), secrets=secrets)),
        ("Controller/ValidateVolumeCapabilities", csi.ValidateVolumeCapabilitiesRequest(volume_id=volume, volume_capabilities=[capability], parameters={"server": SERVER, "share": SHARE})),
        ("Node/NodePublishVolume", publish_request(volume, target, volume_capability=capability, secrets=secrets)),
        ("Node/NodeUnpublishVolume", csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target))),
        ("Identity/Probe", csi.ProbeRequest()),
        ("Identity/GetPluginInfo", csi.GetPluginInfoRequest()),
        ("Node/NodeGetInfo", csi.NodeGetInfoRequest()),
        # RPCs this driver does not serve: one, so UNIMPLEMENTED stays a small share of the run
        ("Node/NodeStageVolume", csi.NodeStageVolumeRequest(volume_id=volume, staging_target_path=str(target), secrets=secrets)),
    ]  # fmt: skip


_CALLABLES: dict[tuple[int, str], Callable[..., Any]] = {}


def _callable(driver: FaultDriver, method: str, response_type: type[Message]) -> Callable[..., Any]:
    key = (id(driver), method)
    if key not in _CALLABLES:
        _CALLABLES[key] = driver.channel.unary_unary(f"/csi.v1.{method}", response_deserializer=response_type.FromString)
    return _CALLABLES[key]


def fuzz_once(driver: FaultDriver, lab: Lab, rng: random.Random, n: int, ledger: Ledger) -> None:
    method, request = rng.choice(seeds(lab, n))
    response_type = type(getattr(csi, method.split("/")[1] + "Response")())
    for _ in range(rng.randint(1, 3)):
        mutate_message(rng, request)
    try:
        raw = request.SerializeToString()
    except Exception:  # noqa: BLE001 - protobuf cannot encode it: nothing to send
        return
    if rng.random() < 0.05:
        raw = mutate_bytes(rng, raw)
    call = _callable(driver, method, response_type)
    try:
        response = call(raw, timeout=30)
        code = grpc.StatusCode.OK
    except grpc.RpcError as err:
        code, response = err.code(), None
        if code not in ALLOWED:
            ledger.failures.append(f"{method} {code.name}: {err.details()!r} for {request!r:.400}")
    ledger.codes[code.name] += 1
    if code is grpc.StatusCode.OK and method == "Controller/CreateVolume":
        ledger.created[response.volume.volume_id] = response.volume  # type: ignore[union-attr]
    elif code is grpc.StatusCode.OK and method == "Node/NodePublishVolume":
        ledger.published[os.path.normpath(request.target_path)] = request.volume_id  # type: ignore[attr-defined]
    elif code is grpc.StatusCode.OK and method == "Node/NodeUnpublishVolume":
        ledger.published.pop(os.path.normpath(request.target_path), None)  # type: ignore[attr-defined]


def allowed_paths(lab: Lab, ledger: Ledger) -> set[str]:
    """Everything below the stand-in's root that the OK CreateVolumes explain: their directories and parents."""
    allowed = set()
    for volume in ledger.created.values():
        context = volume.volume_context
        share = Path(context["server"]) / context["share"].lstrip("/")
        path = share / context["subDir"]
        for part in [path, *path.parents]:
            allowed.add(str(part))
        index = share / METADATA_DIR / "volumes"
        allowed |= {str(index.parent), str(index), str(index / hashlib.sha256(context["subDir"].encode()).hexdigest())}
    return allowed


class TestFuzzing:
    def test_ten_thousand_mutated_requests_cause_no_internal_error_no_crash_and_nothing_unexplained(self, lab: Lab) -> None:
        driver = lab.start("--workers", "8", "--log-level", "error")
        targets = lab.tmp / "targets"
        targets.mkdir()
        (targets / "keep").write_text("the targets' parent is never an empty directory")
        for n in range(3):
            (lab.export / f"seed-{n}").mkdir()
        before = {str(p.relative_to(lab.root)) for p in lab.root.rglob("*")}
        rng = random.Random(FUZZ_SEED)
        ledger = Ledger()
        started = time.monotonic()
        # Several callers at once, as the sidecars are: also exercises the locks (ABORTED is an allowed answer).
        with concurrent.futures.ThreadPoolExecutor(max_workers=CALLERS) as pool:
            rngs = [random.Random(rng.random()) for _ in range(CALLERS)]
            share = FUZZ_REQUESTS // CALLERS
            list(pool.map(lambda i: [fuzz_once(driver, lab, rngs[i], i * share + n, ledger) for n in range(share)], range(CALLERS)))
        took = time.monotonic() - started
        print(f"fuzz: {sum(ledger.codes.values())} requests in {took:.1f} s, seed {FUZZ_SEED}: {dict(ledger.codes)}")

        # No INTERNAL (or UNKNOWN, or a timeout) caused by input, and the driver is alive and well
        assert ledger.failures == [], "\n".join(ledger.failures[:20])
        assert sum(ledger.codes.values()) == share * CALLERS
        assert driver.process.poll() is None
        assert driver.identity.Probe(csi.ProbeRequest(), timeout=5).ready.value
        errors = [line for line in driver.log_text().splitlines() if '"level": "error"' in line or '"level": "critical"' in line]
        # gRPC logs the NotImplementedError of the RPCs this driver does not serve (they answer UNIMPLEMENTED)
        assert [line for line in errors if "Method not implemented!" not in line] == []

        # Afterwards the export holds only what valid requests created (their directories, records and parents)
        after = {str(p.relative_to(lab.root)) for p in lab.root.rglob("*")}
        explained = allowed_paths(lab, ledger)
        unexplained = sorted(
            p
            for p in after - before
            if p not in explained
            and not (os.path.basename(p).endswith(".nfs-csi.json") and os.path.dirname(p) in explained)
            and not os.path.basename(p).startswith("archived-")
        )
        assert unexplained == [], unexplained[:20]
        lost = sorted(p for p in before - after if not p.startswith(("127.0.0.1/exports/seed-", "127.0.0.1/exports/.seed-")))
        assert lost == [], lost
        assert all(".tmp" not in p for p in after)

        # and everything valid undoes cleanly: unpublish what was published, delete what was created
        for target, volume_id in ledger.published.items():
            driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target), timeout=30)
        for volume_id in ledger.created:
            driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=30)
        assert [m for m in mounts_under(lab.tmp) if "/shares/" not in m] == []
        assert driver.stop() == 0
        assert mounts_under(lab.tmp) == []
