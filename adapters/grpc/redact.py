"""Render a CSI message for a log line with every csi_secret field redacted, at any depth."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2

REDACTED = "***redacted***"


def _is_secret(field: Any) -> bool:
    return bool(field.GetOptions().Extensions[csi_pb2.csi_secret])


def redacted(message: Message) -> dict[str, Any]:
    """A dict of the set fields of message; a secret field shows neither its keys nor its values."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if _is_secret(field):
            out[field.name] = REDACTED
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            out[field.name] = {
                key: redacted(item) if entry_value.message_type is not None else item for key, item in value.items()
            }
        elif field.message_type is not None:
            if field.is_repeated:
                out[field.name] = [redacted(item) for item in value]
            else:
                out[field.name] = redacted(value)
        elif field.is_repeated:
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out
