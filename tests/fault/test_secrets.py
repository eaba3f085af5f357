"""Secrets: a canary in every csi_secret field of every RPC never reaches the driver's log, even at debug."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import Lab, create_request, mount_capability, publish_request, volume_id_for

pytestmark = pytest.mark.integration

CANARY = "canary-7f3c9e1d-never-log-me"


def secret_fields(message: Message) -> list[str]:
    return [f.name for f in message.DESCRIPTOR.fields if f.GetOptions().Extensions[csi.csi_secret]]


def methods_with_secrets() -> list[MethodDescriptor]:
    found = []
    for service in csi.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            if any(f.GetOptions().Extensions[csi.csi_secret] for f in method.input_type.fields):
                found.append(method)
    return found


def variants(method: MethodDescriptor, tmp: Path) -> list[Message]:
    """The request with only its secrets set, and one that goes as deep into the driver as it can."""
    request_type = getattr(csi, method.input_type.name)
    bare = request_type()
    deep = request_type()
    if method.name == "CreateVolume":
        deep = create_request("pvc-canary")
        failing = create_request("pvc-canary-2", server="down.unreachable.invalid")
        return [bare, deep, failing]
    if method.name == "NodePublishVolume":
        (tmp / "exports-root").mkdir(exist_ok=True)
        deep = publish_request(volume_id_for("pvc-canary"), tmp / "target", volume_capability=mount_capability())
        wrong = publish_request(volume_id_for("no-such-volume"), tmp / "target-2")
        return [bare, deep, wrong]
    for name, value in (("volume_id", volume_id_for("pvc-canary")), ("source_volume_id", volume_id_for("pvc-canary"))):
        if name in request_type.DESCRIPTOR.fields_by_name:
            setattr(deep, name, value)
    return [bare, deep]


def with_canary(message: Message) -> Message:
    for name in secret_fields(message):
        secrets = getattr(message, name)
        secrets["password"] = CANARY
        secrets["token"] = f"Bearer {CANARY}"
    return message


class TestSecretCanary:
    def test_a_canary_in_every_secrets_field_never_appears_in_the_debug_log(self, lab: Lab) -> None:
        driver = lab.start("--log-level", "debug", "--mount-attempts", "2")
        sent: list[str] = []
        for method in methods_with_secrets():
            path = f"/{method.containing_service.full_name}/{method.name}"
            response_type = getattr(csi, method.output_type.name)
            for request in variants(method, lab.tmp):
                request = with_canary(request)
                raw = request.SerializeToString()
                try:
                    if method.server_streaming:
                        call = driver.channel.unary_stream(path, response_deserializer=response_type.FromString)
                        list(call(raw, timeout=30))
                    else:
                        call = driver.channel.unary_unary(path, response_deserializer=response_type.FromString)
                        call(raw, timeout=30)
                except grpc.RpcError:
                    pass  # the answer does not matter; only what was logged
                sent.append(method.name)
        assert driver.stop() == 0
        log = lab.drivers[0].log_text()
        # The calls were logged, at debug, with their requests...
        for name in ("CreateVolume", "DeleteVolume", "NodePublishVolume", "ValidateVolumeCapabilities", "NodeStageVolume"):
            assert f'"{name} request"' in log, f"no debug request line for {name}"
        assert "secrets" in log
        # ...and the canary is nowhere in them
        assert CANARY not in log
        assert len(sent) >= 2 * len(methods_with_secrets())
