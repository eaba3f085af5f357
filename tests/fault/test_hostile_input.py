"""Hostile input over the real socket: a clear INVALID_ARGUMENT for each bad field (the fuzz is tests/fault/test_fuzz.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2 as csi
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
