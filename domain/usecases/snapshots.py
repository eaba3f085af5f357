"""Snapshot use cases (create, delete, get, list) and the content sources CreateVolume clones from."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import AlreadyExists, InvalidArgument, NotFound, OutOfRange, Unavailable
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import ShareRef, VolumeId, VolumeRecord, check_volume_name
from domain.snapshot_model import (
    PackedSnapshot,
    SnapshotId,
    SnapshotParameters,
    SnapshotRecord,
    check_starting_token,
    snapshot_leaf,
)
from ports.clock import Clock
from ports.events import EventSink, NoEvents
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

CONTENT_SOURCE_KEY = "contentSource"
"""Kept in a cloned volume's record parameters, so a retry with another source is told apart (ALREADY_EXISTS)."""
PENDING_KEY = "contentPending"
"""In the record while the content is being copied in; a volume whose record has it was never returned as made."""


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: SnapshotId
    source_volume_id: str
    size_bytes: int
    created: datetime.datetime
    ready_to_use: bool

    @classmethod
    def of(cls, snapshot_id: SnapshotId, record: SnapshotRecord) -> Snapshot:
        created = datetime.datetime.fromtimestamp(record.created_ns / 1e9, tz=datetime.timezone.utc)
        return cls(snapshot_id, record.source_volume_id, record.size_bytes, created, record.ready_to_use)


@dataclass(frozen=True)
class CreateSnapshotCommand:
    name: str
    source_volume_id: str
    parameters: Mapping[str, str] = field(default_factory=dict)


def restore_size(capacity_bytes: int, packed: PackedSnapshot) -> int:
    """The snapshot's size_bytes: what a volume restored from it needs. The spec says the restored volume MUST NOT be
    smaller than the snapshot, and a volume is its nominal capacity: so the source's capacity, as a clone of the
    volume would need. NFS enforces no quota, so the content may outgrow that capacity; then the content, or the
    restored volume would start over its size. Never the archive's size, which compression makes meaningless."""
    return max(capacity_bytes, packed.content_bytes)


def _created_ns(now: datetime.datetime) -> int:
    return int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000


class CreateSnapshot:
    """CreateSnapshot: archive the source volume's directory; the record, written last, makes it exist.

    The archive is packed while the call waits (bounded by the storage's snapshot timeout) under locks on the
    snapshot's name and id and on the source volume: a retry while it packs is ABORTED, never a second pack, and
    the source cannot be deleted under it. So a snapshot returned is always complete and ready_to_use.
    """

    def __init__(self, storage: ShareStorage, locks: VolumeLocks, clock: Clock, events: EventSink = NoEvents()) -> None:
        self._storage = storage
        self._locks = locks
        self._clock = clock
        self._events = events

    def __call__(self, command: CreateSnapshotCommand) -> Snapshot:
        check_volume_name(command.name)
        if not command.source_volume_id:
            raise InvalidArgument("source_volume_id is required")
        params = SnapshotParameters.parse(command.parameters)
        volume_id = VolumeId.parse(command.source_volume_id)
        if volume_id is None:
            raise NotFound(f"source volume {command.source_volume_id!r} does not exist")
        share = params.share or volume_id.share
        snapshot_id = SnapshotId(share, snapshot_leaf(command.name))
        with self._locks.hold(f"snapshot-name:{command.name}", str(snapshot_id), str(volume_id)):
            existing = self._existing(share, snapshot_id, named=params.share is not None)
            if existing is not None:
                return Snapshot.of(snapshot_id, self._compatible(existing, command, params))
            source = self._storage.read_record(volume_id.share, volume_id.subdir)
            if source is None or PENDING_KEY in source.parameters or not self._storage.exists(
                volume_id.share, volume_id.subdir
            ):
                raise NotFound(f"source volume {command.source_volume_id!r} does not exist")
            created = _created_ns(self._clock.now())
            packed = self._storage.pack_snapshot(volume_id.share, volume_id.subdir, share, snapshot_id.leaf, params.format)
            size = restore_size(source.capacity_bytes, packed)
            record = SnapshotRecord(
                command.name, command.source_volume_id, size, created, params.format, archive_bytes=packed.archive_bytes
            )
            self._storage.write_snapshot_record(share, snapshot_id.leaf, record)
        self._events.emit(Event.SNAPSHOT_CREATED)
        log.info(
            "snapshot %s of %s: restore size %d bytes (content %d), archive %d bytes (%s)",
            snapshot_id, command.source_volume_id, size, packed.content_bytes, packed.archive_bytes, params.format,
        )
        return Snapshot.of(snapshot_id, record)

    def _existing(self, share: ShareRef, snapshot_id: SnapshotId, named: bool) -> SnapshotRecord | None:
        try:
            return self._storage.read_snapshot_record(share, snapshot_id.leaf)
        except NotFound as err:
            if named:  # NOT_FOUND would read as "no such source volume"
                raise InvalidArgument(
                    f"the VolumeSnapshotClass names share {share.source()}, which is not exported: {err}"
                ) from err
            raise

    @staticmethod
    def _compatible(
        existing: SnapshotRecord, command: CreateSnapshotCommand, params: SnapshotParameters
    ) -> SnapshotRecord:
        if existing.name != command.name:
            raise AlreadyExists(f"snapshot file name of {command.name!r} is taken by snapshot {existing.name!r}")
        if existing.source_volume_id != command.source_volume_id:
            raise AlreadyExists(f"snapshot {command.name!r} exists with another source volume")
        if existing.format != params.format:
            raise AlreadyExists(f"snapshot {command.name!r} exists in format {existing.format}")
        return existing


@dataclass(frozen=True)
class DeleteSnapshotCommand:
    snapshot_id: str


class DeleteSnapshot:
    """DeleteSnapshot: remove the record (it stops existing), then the archive; a missing one is OK."""

    def __init__(self, storage: ShareStorage, locks: VolumeLocks, events: EventSink = NoEvents()) -> None:
        self._storage = storage
        self._locks = locks
        self._events = events

    def __call__(self, command: DeleteSnapshotCommand) -> None:
        if not command.snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        snapshot_id = SnapshotId.parse(command.snapshot_id)
        if snapshot_id is None:
            return  # Not one of ours: it does not exist, and deleting nothing is OK.
        with self._locks.hold(str(snapshot_id)):
            existed = self._storage.read_snapshot_record(snapshot_id.share, snapshot_id.leaf) is not None
            self._storage.remove_snapshot(snapshot_id.share, snapshot_id.leaf)
        if existed:
            self._events.emit(Event.SNAPSHOT_DELETED)


def _read(storage: ShareStorage, snapshot_id: SnapshotId) -> SnapshotRecord | None:
    record = storage.read_snapshot_record(snapshot_id.share, snapshot_id.leaf)
    if record is None or snapshot_leaf(record.name) != snapshot_id.leaf:
        return None
    return record


@dataclass(frozen=True)
class GetSnapshotCommand:
    snapshot_id: str


class GetSnapshot:
    """GetSnapshot: read one record by id, with no listing; a missing one is NOT_FOUND."""

    def __init__(self, storage: ShareStorage) -> None:
        self._storage = storage

    def __call__(self, command: GetSnapshotCommand) -> Snapshot:
        if not command.snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        snapshot_id = SnapshotId.parse(command.snapshot_id)
        record = None if snapshot_id is None else _read(self._storage, snapshot_id)
        if snapshot_id is None or record is None:
            raise NotFound(f"snapshot {command.snapshot_id!r} does not exist")
        return Snapshot.of(snapshot_id, record)


@dataclass(frozen=True)
class ListSnapshotsCommand:
    max_entries: int = 0
    starting_token: str = ""
    snapshot_id: str = ""
    source_volume_id: str = ""


@dataclass(frozen=True)
class ListSnapshotsResult:
    entries: tuple[Snapshot, ...]
    next_token: str = ""


class ListSnapshots:
    """ListSnapshots: the snapshots on the listed shares (and on the share a filter names), in id order.

    A page ends at an entry; the next token is that entry's id, and the next page starts after it, so deleting
    it (or anything else) never invalidates a token.
    """

    def __init__(self, storage: ShareStorage, shares: tuple[ShareRef, ...] = ()) -> None:
        self._storage = storage
        self._shares = shares

    def __call__(self, command: ListSnapshotsCommand) -> ListSnapshotsResult:
        if command.max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        token = check_starting_token(command.starting_token)
        entries = [e for e in self._candidates(command) if str(e.snapshot_id) > token]
        entries.sort(key=lambda e: str(e.snapshot_id))
        if command.max_entries and len(entries) > command.max_entries:
            page = entries[: command.max_entries]
            return ListSnapshotsResult(tuple(page), str(page[-1].snapshot_id))
        return ListSnapshotsResult(tuple(entries))

    def _candidates(self, query: ListSnapshotsCommand) -> list[Snapshot]:
        if query.snapshot_id:
            snapshot_id = SnapshotId.parse(query.snapshot_id)
            record = None if snapshot_id is None else _read(self._storage, snapshot_id)
            if snapshot_id is None or record is None:
                return []
            if query.source_volume_id and record.source_volume_id != query.source_volume_id:
                return []
            return [Snapshot.of(snapshot_id, record)]
        shares = list(self._shares)
        if query.source_volume_id:
            volume_id = VolumeId.parse(query.source_volume_id)
            if volume_id is None:
                return []
            if volume_id.share not in shares:
                shares.append(volume_id.share)
        found: list[Snapshot] = []
        for share in shares:
            for leaf, record in self._records(share):
                if snapshot_leaf(record.name) != leaf:
                    continue  # not a record this driver wrote under that name
                if query.source_volume_id and record.source_volume_id != query.source_volume_id:
                    continue
                found.append(Snapshot.of(SnapshotId(share, leaf), record))
        return found

    def _records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        try:
            return self._storage.list_snapshot_records(share)
        except NotFound as err:
            if share in self._shares:  # a partial list would read as snapshots that vanished
                raise Unavailable(f"share {share.source()} of --shares cannot be listed: {err}") from err
            return []  # the share a source volume id names is not exported: no snapshot of it is there


# -- content sources: CreateVolume from a snapshot or from a volume ------------------------------------------------


@dataclass(frozen=True)
class ContentSource:
    """What CreateVolume asked to fill the new volume from: ``kind`` is ``snapshot`` or ``volume``."""

    kind: str
    source_id: str

    def __post_init__(self) -> None:
        if self.kind not in ("snapshot", "volume"):
            raise InvalidArgument(f"volume_content_source type {self.kind!r} is not supported")
        if not self.source_id:
            raise InvalidArgument(f"volume_content_source {self.kind} id is required")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.source_id}"

    def lock_keys(self) -> tuple[str, ...]:
        """The source is held too, so it cannot be deleted while it is copied."""
        if self.kind == "snapshot":
            snapshot_id = SnapshotId.parse(self.source_id)
            return (str(snapshot_id),) if snapshot_id else ()
        volume_id = VolumeId.parse(self.source_id)
        return (str(volume_id),) if volume_id else ()


@dataclass(frozen=True)
class ResolvedSource:
    source: ContentSource
    capacity_bytes: int
    snapshot: tuple[SnapshotId, SnapshotRecord] | None = None
    volume: VolumeId | None = None


def resolve_source(storage: ShareStorage, source: ContentSource) -> ResolvedSource:
    """The source as it is on its share; a source that does not exist (or is not complete) is NOT_FOUND."""
    if source.kind == "snapshot":
        snapshot_id = SnapshotId.parse(source.source_id)
        record = None if snapshot_id is None else _read(storage, snapshot_id)
        if snapshot_id is None or record is None:
            raise NotFound(f"source snapshot {source.source_id!r} does not exist")
        return ResolvedSource(source, record.size_bytes, snapshot=(snapshot_id, record))
    volume_id = VolumeId.parse(source.source_id)
    volume: VolumeRecord | None = None
    if volume_id is not None:
        volume = storage.read_record(volume_id.share, volume_id.subdir)
    if volume_id is None or volume is None or PENDING_KEY in volume.parameters:
        raise NotFound(f"source volume {source.source_id!r} does not exist")
    if not storage.exists(volume_id.share, volume_id.subdir):  # gone, or replaced by a file, a link or a FIFO
        raise NotFound(f"the directory of source volume {source.source_id!r} is missing")
    return ResolvedSource(source, volume.capacity_bytes, volume=volume_id)


def check_source_capacity(resolved: ResolvedSource, limit_bytes: int) -> None:
    """A volume made from a source is never smaller than it (a snapshot's size_bytes, a volume's capacity)."""
    if limit_bytes and resolved.capacity_bytes > limit_bytes:
        raise OutOfRange(
            f"source {resolved.source.kind} needs {resolved.capacity_bytes} bytes, more than the limit of "
            f"{limit_bytes} bytes"
        )


def populate(storage: ShareStorage, resolved: ResolvedSource, share: ShareRef, subdir: str) -> None:
    """Fill the (empty) volume directory from its source: unpack the snapshot, or copy the volume."""
    if resolved.snapshot is not None:
        snapshot_id, record = resolved.snapshot
        storage.restore_snapshot(snapshot_id.share, snapshot_id.leaf, record.format, share, subdir)
    elif resolved.volume is not None:
        storage.copy_volume(resolved.volume.share, resolved.volume.subdir, share, subdir)
