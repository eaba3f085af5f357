"""The servicers' translators: CSI messages into domain values and commands, and results back into messages."""

from __future__ import annotations

import datetime

import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.grpc.servicers import (
    capabilities_from,
    capability_from,
    condition_message,
    controller_capability,
    expansion_from,
    node_capability,
    plugin_capability,
    stats_message,
    volume_message,
)
from adapters.grpc.snapshots import content_source_from, snapshot_message
from domain.errors import InvalidArgument
from domain.model import AccessMode, CapacityRange, FilesystemUsage, OnDelete, ShareRef, VolumeCapability, VolumeId
from domain.snapshot_model import SnapshotId
from domain.usecases.snapshots import ContentSource, Snapshot
from domain.usecases.stats import NodeGetVolumeStatsResult
from domain.usecases.volumes import VolumeCondition, VolumeView

Mode = csi.VolumeCapability.AccessMode
SHARE = ShareRef("nfs.example", "/exports")


def mount(mode: int, fs_type: str = "", flags: tuple[str, ...] = ()) -> csi.VolumeCapability:
    return csi.VolumeCapability(
        mount=csi.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=list(flags)), access_mode=Mode(mode=mode)
    )


class TestCapabilityFrom:
    def test_a_mount_capability_keeps_its_access_mode_fs_type_and_flags_in_order(self) -> None:
        message = mount(Mode.MULTI_NODE_MULTI_WRITER, "nfs4", ("nfsvers=4.1", "hard"))
        assert capability_from(message) == VolumeCapability(
            AccessMode.MULTI_NODE_MULTI_WRITER, block=False, fs_type="nfs4", mount_flags=("nfsvers=4.1", "hard")
        )

    def test_a_block_capability_says_block(self) -> None:
        message = csi.VolumeCapability(block=csi.VolumeCapability.BlockVolume(), access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER))
        assert capability_from(message) == VolumeCapability(AccessMode.SINGLE_NODE_WRITER, block=True)

    def test_no_access_type_is_invalid_argument(self) -> None:
        with pytest.raises(InvalidArgument, match="access type"):
            capability_from(csi.VolumeCapability(access_mode=Mode(mode=Mode.SINGLE_NODE_WRITER)))

    def test_an_access_mode_this_driver_does_not_know_is_unknown_not_an_error(self) -> None:
        assert capability_from(mount(99)).access_mode is AccessMode.UNKNOWN
        assert capability_from(mount(Mode.UNKNOWN)).access_mode is AccessMode.UNKNOWN

    def test_a_list_keeps_its_order(self) -> None:
        messages = [mount(Mode.SINGLE_NODE_READER_ONLY), mount(Mode.MULTI_NODE_READER_ONLY)]
        modes = [c.access_mode for c in capabilities_from(messages)]
        assert modes == [AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY]


class TestExpansionFrom:
    def test_a_node_expansion_carries_its_range_and_capability_when_set(self) -> None:
        request = csi.NodeExpandVolumeRequest(
            volume_id="v", volume_path="/p", capacity_range=csi.CapacityRange(required_bytes=5, limit_bytes=9),
            volume_capability=mount(Mode.SINGLE_NODE_SINGLE_WRITER),
        )  # fmt: skip
        assert expansion_from(request) == (CapacityRange(5, 9), VolumeCapability(AccessMode.SINGLE_NODE_SINGLE_WRITER))

    def test_unset_fields_are_none_not_zero(self) -> None:
        assert expansion_from(csi.ControllerExpandVolumeRequest(volume_id="v")) == (None, None)


class TestContentSourceFrom:
    def test_no_source_is_none(self) -> None:
        assert content_source_from(csi.CreateVolumeRequest(name="v")) is None

    def test_a_snapshot_and_a_volume_keep_their_ids(self) -> None:
        request = csi.CreateVolumeRequest(name="v")
        request.volume_content_source.snapshot.snapshot_id = "nfs1snap#h#/e#s"
        assert content_source_from(request) == ContentSource("snapshot", "nfs1snap#h#/e#s")
        request.volume_content_source.volume.volume_id = "nfs1#h#/e#v#delete"
        assert content_source_from(request) == ContentSource("volume", "nfs1#h#/e#v#delete")

    def test_a_source_naming_neither_is_invalid_argument(self) -> None:
        request = csi.CreateVolumeRequest(name="v")
        request.volume_content_source.SetInParent()
        with pytest.raises(InvalidArgument, match="neither a snapshot nor a volume"):
            content_source_from(request)

    def test_a_source_without_its_id_is_invalid_argument(self) -> None:
        request = csi.CreateVolumeRequest(name="v")
        request.volume_content_source.volume.SetInParent()
        with pytest.raises(InvalidArgument, match="volume id is required"):
            content_source_from(request)


class TestStatsMessage:
    def test_usage_is_reported_in_bytes_and_inodes(self) -> None:
        usage = FilesystemUsage(100, 60, 40, 10, 7, 3)
        message = stats_message(NodeGetVolumeStatsResult(usage))
        assert [(u.unit, u.total, u.available, u.used) for u in message.usage] == [
            (csi.VolumeUsage.BYTES, 100, 60, 40),
            (csi.VolumeUsage.INODES, 10, 7, 3),
        ]
        assert (message.volume_condition.abnormal, message.volume_condition.message) == (False, "")

    def test_an_abnormal_volume_never_measured_has_a_condition_and_no_usage(self) -> None:
        message = stats_message(NodeGetVolumeStatsResult(None, abnormal=True, message="stale file handle"))
        assert list(message.usage) == []
        assert message.HasField("volume_condition")
        assert (message.volume_condition.abnormal, message.volume_condition.message) == (True, "stale file handle")


class TestCapabilityMessages:
    def test_plugin_capabilities_are_services_or_volume_expansion(self) -> None:
        assert plugin_capability("CONTROLLER_SERVICE").service.type == csi.PluginCapability.Service.CONTROLLER_SERVICE
        expansion = plugin_capability("VolumeExpansion.ONLINE")
        assert expansion.WhichOneof("type") == "volume_expansion"
        assert expansion.volume_expansion.type == csi.PluginCapability.VolumeExpansion.ONLINE

    def test_controller_and_node_capabilities_name_their_rpc(self) -> None:
        assert controller_capability("CLONE_VOLUME").rpc.type == csi.ControllerServiceCapability.RPC.CLONE_VOLUME
        assert node_capability("GET_VOLUME_STATS").rpc.type == csi.NodeServiceCapability.RPC.GET_VOLUME_STATS

    @pytest.mark.parametrize("translate", [plugin_capability, controller_capability, node_capability])
    def test_a_name_csi_does_not_know_is_refused(self, translate: object) -> None:
        with pytest.raises(ValueError):
            translate("NO_SUCH_CAPABILITY")  # type: ignore[operator]


class TestVolumeAndSnapshotMessages:
    def test_a_volume_view_becomes_a_volume_and_its_condition(self) -> None:
        view = VolumeView(
            VolumeId(SHARE, "ns/v", OnDelete.RETAIN), 5 << 30, {"server": "nfs.example", "subDir": "ns/v"},
            VolumeCondition(True, "the directory 'ns/v' is missing"),
        )
        volume = volume_message(view)
        assert (volume.volume_id, volume.capacity_bytes) == ("nfs1#nfs.example#/exports#ns/v#retain", 5 << 30)
        assert dict(volume.volume_context) == {"server": "nfs.example", "subDir": "ns/v"}
        condition = condition_message(view)
        assert (condition.abnormal, condition.message) == (True, "the directory 'ns/v' is missing")

    def test_a_snapshot_keeps_its_id_source_size_readiness_and_creation_time_to_the_microsecond(self) -> None:
        created = datetime.datetime(2026, 11, 24, 12, 0, 1, 250_000, tzinfo=datetime.timezone.utc)
        snapshot = Snapshot(SnapshotId(SHARE, "snap-1"), "nfs1#nfs.example#/exports#v#delete", 4096, created, True)
        message = snapshot_message(snapshot)
        assert (message.snapshot_id, message.source_volume_id) == (
            "nfs1snap#nfs.example#/exports#snap-1", "nfs1#nfs.example#/exports#v#delete"
        )
        assert (message.size_bytes, message.ready_to_use) == (4096, True)
        assert (message.creation_time.seconds, message.creation_time.nanos) == (int(created.timestamp()), 250_000_000)
