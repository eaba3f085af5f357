"""CSI gRPC servicers: translate a message into a use-case call and the result back; nothing else."""

from __future__ import annotations

from typing import Any, Iterable

import grpc

from adapters.csi.v1 import csi_pb2 as csi
from adapters.csi.v1 import csi_pb2_grpc as csi_grpc
from adapters.grpc.errors import translate_errors
from adapters.grpc.snapshots import SnapshotRpcs, SnapshotUseCases, content_source_from
from domain.errors import InvalidArgument
from domain.identity import PluginInfo
from domain.model import AccessMode, CapacityRange, VolumeCapability
from domain.usecases.controller import (
    CreateVolume,
    CreateVolumeCommand,
    DeleteVolume,
    DeleteVolumeCommand,
    ValidateVolumeCapabilities,
    ValidateVolumeCapabilitiesCommand,
)
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from domain.usecases.probe import Probe
from domain.usecases.stage import NodeStageVolume, NodeStageVolumeCommand, NodeUnstageVolume, NodeUnstageVolumeCommand
from domain.usecases.stats import (
    NodeExpandVolume,
    NodeExpandVolumeCommand,
    NodeGetVolumeStats,
    NodeGetVolumeStatsCommand,
    NodeGetVolumeStatsResult,
)
from domain.usecases.volumes import (
    ControllerExpandVolume,
    ControllerExpandVolumeCommand,
    ControllerGetVolume,
    ControllerGetVolumeCommand,
    ControllerModifyVolume,
    ControllerModifyVolumeCommand,
    GetCapacity,
    GetCapacityCommand,
    ListVolumes,
    ListVolumesCommand,
    VolumeView,
)


def capability_from(message: csi.VolumeCapability) -> VolumeCapability:
    access = message.WhichOneof("access_type")
    if access is None:
        raise InvalidArgument("volume capability must set an access type (mount or block)")
    try:
        mode = AccessMode(message.access_mode.mode)
    except ValueError:
        mode = AccessMode.UNKNOWN
    return VolumeCapability(
        access_mode=mode,
        block=access == "block",
        fs_type=message.mount.fs_type,
        mount_flags=tuple(message.mount.mount_flags),
    )


def capabilities_from(messages: Iterable[csi.VolumeCapability]) -> tuple[VolumeCapability, ...]:
    return tuple(capability_from(m) for m in messages)


def expansion_from(
    request: csi.ControllerExpandVolumeRequest | csi.NodeExpandVolumeRequest,
) -> tuple[CapacityRange | None, VolumeCapability | None]:
    """The optional capacity range and capability an expansion (controller or node) carries."""
    capacity = (
        CapacityRange(request.capacity_range.required_bytes, request.capacity_range.limit_bytes)
        if request.HasField("capacity_range")
        else None
    )
    return capacity, capability_from(request.volume_capability) if request.HasField("volume_capability") else None


def plugin_capability(name: str) -> csi.PluginCapability:
    """A service type such as ``CONTROLLER_SERVICE``, or ``VolumeExpansion.ONLINE``."""
    _, _, mode = name.partition("VolumeExpansion.")
    if mode:
        return csi.PluginCapability(volume_expansion=csi.PluginCapability.VolumeExpansion(type=mode))
    return csi.PluginCapability(service=csi.PluginCapability.Service(type=name))


def controller_capability(name: str) -> csi.ControllerServiceCapability:
    """An RPC capability of the controller by its enum name, such as ``CREATE_DELETE_VOLUME``."""
    return csi.ControllerServiceCapability(rpc=csi.ControllerServiceCapability.RPC(type=name))


def node_capability(name: str) -> csi.NodeServiceCapability:
    """An RPC capability of the node by its enum name, such as ``GET_VOLUME_STATS``."""
    return csi.NodeServiceCapability(rpc=csi.NodeServiceCapability.RPC(type=name))


def volume_message(view: VolumeView) -> csi.Volume:
    return csi.Volume(volume_id=str(view.volume_id), capacity_bytes=view.capacity_bytes, volume_context=dict(view.context))


def condition_message(view: VolumeView) -> csi.VolumeCondition:
    return csi.VolumeCondition(abnormal=view.condition.abnormal, message=view.condition.message)


class IdentityServicer(csi_grpc.IdentityServicer):
    def __init__(self, info: PluginInfo, probe: Probe, capabilities: tuple[str, ...]) -> None:
        self._info = info
        self._probe = probe
        self._capabilities = capabilities

    @translate_errors
    def GetPluginInfo(self, request: csi.GetPluginInfoRequest, context: grpc.ServicerContext) -> Any:
        return csi.GetPluginInfoResponse(name=self._info.name, vendor_version=self._info.version)

    @translate_errors
    def GetPluginCapabilities(self, request: csi.GetPluginCapabilitiesRequest, context: grpc.ServicerContext) -> Any:
        return csi.GetPluginCapabilitiesResponse(capabilities=[plugin_capability(name) for name in self._capabilities])

    @translate_errors
    def Probe(self, request: csi.ProbeRequest, context: grpc.ServicerContext) -> Any:
        self._probe()
        return csi.ProbeResponse(ready={"value": True})


class ControllerServicer(SnapshotRpcs, csi_grpc.ControllerServicer):
    def __init__(
        self,
        create_volume: CreateVolume,
        delete_volume: DeleteVolume,
        validate_volume_capabilities: ValidateVolumeCapabilities,
        capabilities: tuple[str, ...],
        snapshots: SnapshotUseCases,
        list_volumes: ListVolumes,
        controller_get_volume: ControllerGetVolume,
        get_capacity: GetCapacity,
        controller_expand_volume: ControllerExpandVolume,
        controller_modify_volume: ControllerModifyVolume,
    ) -> None:
        self._snapshots = snapshots
        self._create_volume = create_volume
        self._delete_volume = delete_volume
        self._validate_volume_capabilities = validate_volume_capabilities
        self._capabilities = capabilities
        self._list_volumes = list_volumes
        self._controller_get_volume = controller_get_volume
        self._get_capacity = get_capacity
        self._controller_expand_volume = controller_expand_volume
        self._controller_modify_volume = controller_modify_volume

    @translate_errors
    def CreateVolume(self, request: csi.CreateVolumeRequest, context: grpc.ServicerContext) -> Any:
        volume = self._create_volume(
            CreateVolumeCommand(
                name=request.name,
                capabilities=capabilities_from(request.volume_capabilities),
                capacity=CapacityRange(request.capacity_range.required_bytes, request.capacity_range.limit_bytes),
                parameters=dict(request.parameters),
                content_source=content_source_from(request),
                mutable_parameters=dict(request.mutable_parameters),
            )
        )
        return csi.CreateVolumeResponse(
            volume=csi.Volume(
                volume_id=str(volume.volume_id),
                capacity_bytes=volume.capacity_bytes,
                volume_context=dict(volume.context),
                content_source=request.volume_content_source if request.HasField("volume_content_source") else None,
            )
        )

    @translate_errors
    def DeleteVolume(self, request: csi.DeleteVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._delete_volume(DeleteVolumeCommand(request.volume_id))
        return csi.DeleteVolumeResponse()

    @translate_errors
    def ValidateVolumeCapabilities(
        self, request: csi.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> Any:
        validation = self._validate_volume_capabilities(
            ValidateVolumeCapabilitiesCommand(
                volume_id=request.volume_id,
                capabilities=capabilities_from(request.volume_capabilities),
                context=dict(request.volume_context),
                parameters=dict(request.parameters),
                mutable_parameters=dict(request.mutable_parameters),
            )
        )
        if not validation.confirmed:
            return csi.ValidateVolumeCapabilitiesResponse(message=validation.message)
        return csi.ValidateVolumeCapabilitiesResponse(
            confirmed=csi.ValidateVolumeCapabilitiesResponse.Confirmed(
                volume_context=request.volume_context,
                volume_capabilities=request.volume_capabilities,
                parameters=request.parameters,
                mutable_parameters=request.mutable_parameters,
            )
        )

    @translate_errors
    def ListVolumes(self, request: csi.ListVolumesRequest, context: grpc.ServicerContext) -> Any:
        page = self._list_volumes(ListVolumesCommand(request.max_entries, request.starting_token))
        status = csi.ListVolumesResponse.VolumeStatus
        return csi.ListVolumesResponse(
            entries=[
                csi.ListVolumesResponse.Entry(
                    volume=volume_message(view), status=status(volume_condition=condition_message(view))
                )
                for view in page.volumes
            ],
            next_token=page.next_token,
        )

    @translate_errors
    def ControllerGetVolume(self, request: csi.ControllerGetVolumeRequest, context: grpc.ServicerContext) -> Any:
        view = self._controller_get_volume(ControllerGetVolumeCommand(request.volume_id))
        status = csi.ControllerGetVolumeResponse.VolumeStatus
        return csi.ControllerGetVolumeResponse(
            volume=volume_message(view), status=status(volume_condition=condition_message(view))
        )

    @translate_errors
    def GetCapacity(self, request: csi.GetCapacityRequest, context: grpc.ServicerContext) -> Any:
        available = self._get_capacity(
            GetCapacityCommand(capabilities_from(request.volume_capabilities), dict(request.parameters))
        )
        return csi.GetCapacityResponse(available_capacity=available)

    @translate_errors
    def ControllerExpandVolume(self, request: csi.ControllerExpandVolumeRequest, context: grpc.ServicerContext) -> Any:
        capacity, capability = expansion_from(request)
        expanded = self._controller_expand_volume(
            ControllerExpandVolumeCommand(volume_id=request.volume_id, capacity=capacity, capability=capability)
        )
        return csi.ControllerExpandVolumeResponse(
            capacity_bytes=expanded.capacity_bytes, node_expansion_required=expanded.node_expansion_required
        )

    @translate_errors
    def ControllerModifyVolume(self, request: csi.ControllerModifyVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._controller_modify_volume(ControllerModifyVolumeCommand(request.volume_id, dict(request.mutable_parameters)))
        return csi.ControllerModifyVolumeResponse()

    @translate_errors
    def ControllerGetCapabilities(
        self, request: csi.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> Any:
        return csi.ControllerGetCapabilitiesResponse(capabilities=[controller_capability(n) for n in self._capabilities])


def stats_message(stats: NodeGetVolumeStatsResult) -> csi.NodeGetVolumeStatsResponse:
    usage = []
    if stats.usage is not None:
        u = stats.usage
        usage = [
            csi.VolumeUsage(
                unit=csi.VolumeUsage.BYTES, total=u.total_bytes, available=u.available_bytes, used=u.used_bytes
            ),
            csi.VolumeUsage(
                unit=csi.VolumeUsage.INODES, total=u.total_inodes, available=u.free_inodes, used=u.used_inodes
            ),
        ]
    return csi.NodeGetVolumeStatsResponse(
        usage=usage, volume_condition=csi.VolumeCondition(abnormal=stats.abnormal, message=stats.message)
    )


class NodeServicer(csi_grpc.NodeServicer):
    def __init__(
        self,
        node_publish_volume: NodePublishVolume,
        node_unpublish_volume: NodeUnpublishVolume,
        node_get_volume_stats: NodeGetVolumeStats,
        node_expand_volume: NodeExpandVolume,
        node_id: str,
        capabilities: tuple[str, ...],
        max_volumes_per_node: int = 0,
    ) -> None:
        self._node_publish_volume = node_publish_volume
        self._node_unpublish_volume = node_unpublish_volume
        self._node_get_volume_stats = node_get_volume_stats
        self._node_expand_volume = node_expand_volume
        self._node_id = node_id
        self._capabilities = capabilities
        self._max_volumes = max_volumes_per_node

    @translate_errors
    def NodePublishVolume(self, request: csi.NodePublishVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._node_publish_volume(
            NodePublishVolumeCommand(
                volume_id=request.volume_id,
                target_path=request.target_path,
                capability=capability_from(request.volume_capability)
                if request.HasField("volume_capability")
                else None,
                readonly=request.readonly,
                context=dict(request.volume_context),
                staging_target_path=request.staging_target_path,
            )
        )
        return csi.NodePublishVolumeResponse()

    @translate_errors
    def NodeUnpublishVolume(self, request: csi.NodeUnpublishVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._node_unpublish_volume(NodeUnpublishVolumeCommand(volume_id=request.volume_id, target_path=request.target_path))
        return csi.NodeUnpublishVolumeResponse()

    @translate_errors
    def NodeGetVolumeStats(self, request: csi.NodeGetVolumeStatsRequest, context: grpc.ServicerContext) -> Any:
        return stats_message(
            self._node_get_volume_stats(NodeGetVolumeStatsCommand(request.volume_id, request.volume_path))
        )

    @translate_errors
    def NodeExpandVolume(self, request: csi.NodeExpandVolumeRequest, context: grpc.ServicerContext) -> Any:
        capacity, capability = expansion_from(request)
        expanded = self._node_expand_volume(
            NodeExpandVolumeCommand(request.volume_id, request.volume_path, capacity=capacity, capability=capability)
        )
        return csi.NodeExpandVolumeResponse(capacity_bytes=expanded)

    @translate_errors
    def NodeGetCapabilities(self, request: csi.NodeGetCapabilitiesRequest, context: grpc.ServicerContext) -> Any:
        return csi.NodeGetCapabilitiesResponse(capabilities=[node_capability(name) for name in self._capabilities])

    @translate_errors
    def NodeGetInfo(self, request: csi.NodeGetInfoRequest, context: grpc.ServicerContext) -> Any:
        return csi.NodeGetInfoResponse(node_id=self._node_id, max_volumes_per_node=self._max_volumes)


class StagingNodeServicer(NodeServicer):
    """The node in stage mode (--node-stage); without it NodeStage and NodeUnstage stay UNIMPLEMENTED."""

    def __init__(
        self,
        node_publish_volume: NodePublishVolume,
        node_unpublish_volume: NodeUnpublishVolume,
        node_get_volume_stats: NodeGetVolumeStats,
        node_expand_volume: NodeExpandVolume,
        node_id: str,
        capabilities: tuple[str, ...],
        node_stage_volume: NodeStageVolume,
        node_unstage_volume: NodeUnstageVolume,
        max_volumes_per_node: int = 0,
    ) -> None:
        super().__init__(
            node_publish_volume, node_unpublish_volume, node_get_volume_stats, node_expand_volume, node_id,
            capabilities, max_volumes_per_node,
        )
        self._node_stage_volume = node_stage_volume
        self._node_unstage_volume = node_unstage_volume

    @translate_errors
    def NodeStageVolume(self, request: csi.NodeStageVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._node_stage_volume(
            NodeStageVolumeCommand(
                volume_id=request.volume_id,
                staging_target_path=request.staging_target_path,
                capability=capability_from(request.volume_capability)
                if request.HasField("volume_capability")
                else None,
                context=dict(request.volume_context),
            )
        )
        return csi.NodeStageVolumeResponse()

    @translate_errors
    def NodeUnstageVolume(self, request: csi.NodeUnstageVolumeRequest, context: grpc.ServicerContext) -> Any:
        self._node_unstage_volume(
            NodeUnstageVolumeCommand(volume_id=request.volume_id, staging_target_path=request.staging_target_path)
        )
        return csi.NodeUnstageVolumeResponse()
