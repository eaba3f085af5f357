"""Every csi_secret field of every CSI message is redacted in what the logs see."""

from __future__ import annotations

import json

import pytest
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2
from adapters.grpc.redact import REDACTED, redacted

CANARY = "canary-7f3a-secret-value"


def messages_with_secrets() -> list[type[Message]]:
    found = []
    for descriptor in csi_pb2.DESCRIPTOR.message_types_by_name.values():
        if any(f.GetOptions().Extensions[csi_pb2.csi_secret] for f in descriptor.fields):
            found.append(getattr(csi_pb2, descriptor.name))
    return found


def test_the_protocol_has_secrets_in_many_messages() -> None:
    assert len(messages_with_secrets()) >= 10


@pytest.mark.parametrize("message_class", messages_with_secrets(), ids=lambda c: c.__name__)
def test_a_canary_in_every_secret_field_never_reaches_the_rendered_message(message_class: type[Message]) -> None:
    message = message_class()
    for field in message.DESCRIPTOR.fields:
        if field.GetOptions().Extensions[csi_pb2.csi_secret]:
            getattr(message, field.name)[CANARY] = CANARY
    rendered = json.dumps(redacted(message))
    assert CANARY not in rendered and REDACTED in rendered


def test_other_fields_are_kept() -> None:
    rendered = redacted(csi_pb2.NodePublishVolumeRequest(volume_id="v", target_path="/t", volume_context={"k": "v"}))
    assert rendered == {"volume_id": "v", "target_path": "/t", "volume_context": {"k": "v"}}
