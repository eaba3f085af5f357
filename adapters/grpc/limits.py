"""Size limits on every string and map of a CSI request, checked before any use case runs.

The CSI spec ("Size Limits") bounds a string to 128 bytes and a map<string, string> to 4 KiB, unless a field's own
description says otherwise; it does for paths (as long as the operating system allows), for ``node_id`` (256 bytes)
and for ``mount_flags`` (4 KiB all together). Where this driver's own ids or Kubernetes need more, the limit is
larger, on purpose and documented here and in the README. A request over any limit is INVALID_ARGUMENT naming the
field and the limit, before anything is read, written or logged whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from domain.model import CSI_STRING_BYTES
from domain.paths import MAX_PATH_BYTES


@dataclass(frozen=True)
class Limit:
    bytes: int
    rule: str


SPEC_STRING = Limit(CSI_STRING_BYTES, "the CSI spec's limit for a string")
SPEC_MAP = Limit(4 * 1024, "the CSI spec's limit for a map, keys and values together")

MAX_ID_BYTES = 16 * 1024
"""Volume and snapshot ids, and list tokens (a ListSnapshots token is a snapshot id).

This driver's ids carry the server, the share and the subDir, percent-encoded (up to 3 bytes a byte): from
parameters within their 4 KiB and a subDir of at most 1 KiB, the longest id it can make is under 16 KiB
(tests/unit/test_limits.py proves it). Handles of other NFS drivers (csi-driver-nfs's server#share#subdir#uuid#
onDelete) pass 128 bytes too, and a static volume's handle is whatever an administrator wrote.
"""

MAX_CONTEXT_BYTES = 16 * 1024
"""A volume context: what CreateVolume returned (server, share and subDir: up to about 5 KiB) plus the keys
kubelet adds for a pod (csi.storage.k8s.io/pod.name, .namespace, .uid, serviceAccount.name, ephemeral)."""

_PATH = Limit(MAX_PATH_BYTES, "the limit for a path (the spec lets a path be as long as the system allows)")
_ID = Limit(MAX_ID_BYTES, "this driver's limit for an id or a list token")

STRING_LIMITS: dict[str, Limit] = {
    "target_path": _PATH,
    "staging_target_path": _PATH,
    "volume_path": _PATH,
    **dict.fromkeys(
        (
            "volume_id", "source_volume_id", "snapshot_id", "starting_token", "source_volume_ids", "snapshot_ids",
            "group_snapshot_id", "base_snapshot_id", "target_snapshot_id",
        ),
        _ID,
    ),
    "node_id": Limit(256, "the CSI spec's limit for node_id"),
    "mount_flags": Limit(4 * 1024, "the CSI spec's limit for mount_flags, all of them together"),
}  # fmt: skip
"""By field name, wherever the field occurs; a repeated string's limit holds for all its items together."""

MAP_LIMITS: dict[str, Limit] = {
    "volume_context": Limit(MAX_CONTEXT_BYTES, "this driver's limit for a volume context, keys and values together"),
}


def _size(value: str) -> int:
    return len(value.encode("utf-8", errors="surrogatepass"))


def _is_string_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry and entry.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING


def oversized(message: Message, prefix: str = "") -> str | None:
    """Why message has a field over its limit, naming the field and the limit; None when every field is within."""
    for field, value in message.ListFields():
        where = prefix + field.name
        if _is_string_map(field):
            limit = MAP_LIMITS.get(field.name, SPEC_MAP)
            size = sum(_size(key) + _size(item) for key, item in value.items())
        elif field.message_type is not None:
            for index, item in enumerate(value if field.is_repeated else (value,)):
                found = oversized(item, f"{where}[{index}]." if field.is_repeated else f"{where}.")
                if found:
                    return found
            continue
        elif field.type == FieldDescriptor.TYPE_STRING:
            limit = STRING_LIMITS.get(field.name, SPEC_STRING)
            size = sum(_size(item) for item in value) if field.is_repeated else _size(value)
        else:
            continue
        if size > limit.bytes:
            return f"{where} is longer than {limit.bytes} bytes ({size} bytes): {limit.rule}"
    return None


class FieldLimits(grpc.ServerInterceptor):
    """Refuse a request with a field over its limit (INVALID_ARGUMENT) before its handler runs.

    Put it after the observing interceptor: the refusal is counted and logged like any other answer.
    """

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Message):
                problem = oversized(request)
                if problem:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            limited, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )
