"""Every string and map of every CSI request has a size limit, and this driver's own values fit theirs."""

from __future__ import annotations

from typing import Iterator

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from adapters.csi.v1 import csi_pb2 as csi
from adapters.grpc.limits import MAX_ID_BYTES, SPEC_MAP, SPEC_STRING, STRING_LIMITS, MAP_LIMITS, oversized
from domain.model import VolumeId
from domain.parameters import PVC_NAME, ProvisionDefaults, VolumeParameters
from domain.paths import MAX_COMPONENT_BYTES, MAX_NAME_BYTES, MAX_SUBPATH_BYTES
from domain.snapshot_model import SnapshotId, snapshot_leaf
from domain.usecases.controller import volume_context


def requests() -> list[type[Message]]:
    found = []
    for service in csi.DESCRIPTOR.services_by_name.values():
        found += [getattr(csi, method.input_type.name) for method in service.methods]
    return found


def is_string_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry and entry.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING


def text_fields(descriptor: Descriptor, path: tuple[FieldDescriptor, ...] = ()) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Every string or string-map field reachable in a request, as the chain of fields that leads to it."""
    for field in descriptor.fields:
        chain = (*path, field)
        if is_string_map(field) or field.type == FieldDescriptor.TYPE_STRING:
            yield chain
        elif field.message_type is not None and field.message_type not in [f.message_type for f in path]:
            yield from text_fields(field.message_type, chain)


def cases() -> list[tuple[type[Message], tuple[FieldDescriptor, ...]]]:
    return [(kind, chain) for kind in requests() for chain in text_fields(kind.DESCRIPTOR)]


def build(kind: type[Message], chain: tuple[FieldDescriptor, ...], size: int) -> tuple[Message, str]:
    """A request whose field at chain holds ``size`` bytes, and that field's name as the refusal names it."""
    message = kind()
    at: Message = message
    where = ""
    for field in chain[:-1]:
        if field.is_repeated:
            at = getattr(at, field.name).add()
            where += f"{field.name}[0]."
        else:
            at = getattr(at, field.name)
            where += f"{field.name}."
    last = chain[-1]
    if is_string_map(last):
        getattr(at, last.name)["k"] = "v" * (size - 1)
    elif last.is_repeated:
        getattr(at, last.name).extend(["f" * (size - size // 2), "f" * (size // 2)])
    else:
        setattr(at, last.name, "é" * (size // 2) + "x" * (size % 2))
    return message, where + last.name


def limit_of(field: FieldDescriptor) -> int:
    if is_string_map(field):
        return MAP_LIMITS.get(field.name, SPEC_MAP).bytes
    return STRING_LIMITS.get(field.name, SPEC_STRING).bytes


class TestEveryFieldHasALimit:
    def test_every_rpc_and_its_text_fields_are_covered(self) -> None:
        assert len(requests()) == 32 and len(cases()) > 100

    @pytest.mark.parametrize(("kind", "chain"), cases(), ids=lambda v: v.__name__ if isinstance(v, type) else ".".join(f.name for f in v))
    def test_at_the_limit_it_passes_and_one_byte_over_it_is_refused_by_name(
        self, kind: type[Message], chain: tuple[FieldDescriptor, ...]
    ) -> None:
        limit = limit_of(chain[-1])
        at_limit, _ = build(kind, chain, limit)
        assert oversized(at_limit) is None
        over, where = build(kind, chain, limit + 1)
        assert oversized(over) == f"{where} is longer than {limit} bytes ({limit + 1} bytes): " + (
            (MAP_LIMITS if is_string_map(chain[-1]) else STRING_LIMITS).get(chain[-1].name, SPEC_MAP if is_string_map(chain[-1]) else SPEC_STRING).rule
        )

    def test_the_spec_overrides_and_this_drivers_larger_limits(self) -> None:
        assert (SPEC_STRING.bytes, SPEC_MAP.bytes) == (128, 4096)
        assert STRING_LIMITS["target_path"].bytes == 4095 and STRING_LIMITS["node_id"].bytes == 256
        assert STRING_LIMITS["mount_flags"].bytes == 4096 and STRING_LIMITS["volume_id"].bytes == MAX_ID_BYTES
        assert oversized(csi.CreateVolumeRequest(name="n" * 128)) is None
        assert "name is longer than 128 bytes" in (oversized(csi.CreateVolumeRequest(name="n" * 129)) or "")

    def test_a_megabyte_anywhere_is_refused(self) -> None:
        huge = "x" * (1 << 20)
        refused = csi.NodePublishVolumeRequest(volume_id=huge, target_path="/t", volume_context={"server": "h", "share": "/e"})
        assert oversized(refused) == f"volume_id is longer than {MAX_ID_BYTES} bytes ({1 << 20} bytes): this driver's limit for an id or a list token"


def worst_case_parameters() -> dict[str, str]:
    """StorageClass parameters within the 4 KiB map limit that make the longest volume id: every byte of share and
    subDir one that percent-encoding triples ('#'), the subDir at its own limit through a template that costs the
    map little, and the share taking all the rest of the map."""
    component = "#" * MAX_COMPONENT_BYTES
    repeats = MAX_SUBPATH_BYTES // (MAX_COMPONENT_BYTES + 1)
    params = {"server": "h", PVC_NAME: component, "subDir": "/".join(["${pvc.metadata.name}"] * repeats), "onDelete": "archive"}
    room = SPEC_MAP.bytes - sum(len(k) + len(v) for k, v in params.items()) - len("share")
    names, left = [], room - 1
    while left > 1:
        names.append("#" * min(MAX_NAME_BYTES, left - 1))
        left -= len(names[-1]) + 1
    params["share"] = "/" + "/".join(names)
    return params


class TestThisDriversValuesFitItsLimits:
    def test_the_longest_volume_id_it_can_make_fits_the_id_limit(self) -> None:
        raw = worst_case_parameters()
        request = csi.CreateVolumeRequest(name="pvc-1", parameters=raw)
        assert oversized(request) is None and sum(len(k) + len(v) for k, v in raw.items()) <= SPEC_MAP.bytes
        params = VolumeParameters.parse(raw, ProvisionDefaults())
        subdir = params.resolve_subdir("pvc-1", raw)
        volume_id = str(VolumeId(params.share, subdir, params.on_delete))
        print(f"longest volume id: {len(volume_id)} bytes (share {len(params.share.share)}, subDir {len(subdir)})")
        assert len(volume_id) > 12 * 1024  # the construction is near the worst, or this proves little
        assert len(volume_id) <= MAX_ID_BYTES
        # and what a node is then handed back fits: the id, and the context with kubelet's keys
        context = {**volume_context(params.share, subdir, 0o777), "csi.storage.k8s.io/pod.name": "p" * 253}
        publish = csi.NodePublishVolumeRequest(volume_id=volume_id, target_path="/t", volume_context=context)
        assert oversized(publish) is None

    def test_the_longest_snapshot_id_and_list_token_fit_too(self) -> None:
        params = VolumeParameters.parse(worst_case_parameters(), ProvisionDefaults())
        snapshot_id = str(SnapshotId(params.share, snapshot_leaf("s" * 128)))
        assert len(snapshot_id) <= MAX_ID_BYTES
        assert oversized(csi.ListSnapshotsRequest(starting_token=snapshot_id, snapshot_id=snapshot_id)) is None
