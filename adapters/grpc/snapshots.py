"""The controller's snapshot RPCs, and the CreateVolume content source: message -> use case -> message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from adapters.csi.v1 import csi_pb2 as csi
from adapters.grpc.errors import translate_errors
from domain.errors import InvalidArgument
from domain.usecases.snapshots import (
    ContentSource,
    CreateSnapshot,
    CreateSnapshotCommand,
    DeleteSnapshot,
    DeleteSnapshotCommand,
    GetSnapshot,
    GetSnapshotCommand,
    ListSnapshots,
    ListSnapshotsCommand,
    Snapshot,
)


@dataclass(frozen=True)
class SnapshotUseCases:
    create_snapshot: CreateSnapshot
    delete_snapshot: DeleteSnapshot
    get_snapshot: GetSnapshot
    list_snapshots: ListSnapshots


def content_source_from(request: csi.CreateVolumeRequest) -> ContentSource | None:
    if not request.HasField("volume_content_source"):
        return None
    source = request.volume_content_source
    kind = source.WhichOneof("type")
    if kind == "snapshot":
        return ContentSource("snapshot", source.snapshot.snapshot_id)
    if kind == "volume":
        return ContentSource("volume", source.volume.volume_id)
    raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")


def snapshot_message(snapshot: Snapshot) -> csi.Snapshot:
    created = Timestamp()
    created.FromDatetime(snapshot.created)
    return csi.Snapshot(
        snapshot_id=str(snapshot.snapshot_id),
        source_volume_id=snapshot.source_volume_id,
        size_bytes=snapshot.size_bytes,
        creation_time=created,
        ready_to_use=snapshot.ready_to_use,
    )


class SnapshotRpcs:
    """Mixed into ControllerServicer, which sets ``_snapshots``."""

    _snapshots: SnapshotUseCases

    def _use_cases(self) -> SnapshotUseCases:
        return self._snapshots

    @translate_errors
    def CreateSnapshot(self, request: csi.CreateSnapshotRequest, context: grpc.ServicerContext) -> Any:
        snapshot = self._use_cases().create_snapshot(
            CreateSnapshotCommand(request.name, request.source_volume_id, dict(request.parameters))
        )
        return csi.CreateSnapshotResponse(snapshot=snapshot_message(snapshot))

    @translate_errors
    def DeleteSnapshot(self, request: csi.DeleteSnapshotRequest, context: grpc.ServicerContext) -> Any:
        self._use_cases().delete_snapshot(DeleteSnapshotCommand(request.snapshot_id))
        return csi.DeleteSnapshotResponse()

    @translate_errors
    def GetSnapshot(self, request: csi.GetSnapshotRequest, context: grpc.ServicerContext) -> Any:
        snapshot = self._use_cases().get_snapshot(GetSnapshotCommand(request.snapshot_id))
        return csi.GetSnapshotResponse(snapshot=snapshot_message(snapshot))

    @translate_errors
    def ListSnapshots(self, request: csi.ListSnapshotsRequest, context: grpc.ServicerContext) -> Any:
        page = self._use_cases().list_snapshots(
            ListSnapshotsCommand(
                max_entries=request.max_entries,
                starting_token=request.starting_token,
                snapshot_id=request.snapshot_id,
                source_volume_id=request.source_volume_id,
            )
        )
        return csi.ListSnapshotsResponse(
            entries=[csi.ListSnapshotsResponse.Entry(snapshot=snapshot_message(s)) for s in page.entries],
            next_token=page.next_token,
        )
