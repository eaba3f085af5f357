"""Controller use cases on existing volumes: list, get, capacity, expand and modify."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping

from domain.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    InvalidToken,
    MountFailed,
    NotFound,
    OutOfRange,
    StorageFailed,
    Unavailable,
)
from domain.locks import VolumeLocks
from domain.model import (
    DEFAULT_ALLOWLIST,
    CapacityRange,
    CsiDriverNfsVolumeId,
    ListedVolume,
    ListPosition,
    MountOptionAllowlist,
    OnDelete,
    Owner,
    ShareRef,
    VolumeCapability,
    VolumeId,
    VolumeRecord,
    check_capability,
)
from domain.parameters import (
    GID,
    MOUNT_PERMISSIONS,
    UID,
    ProvisionDefaults,
    VolumeParameters,
    effective_mode,
    effective_owner,
    parse_mode,
    parse_mutable,
)
from domain.usecases.controller import volume_context
from domain.usecases.snapshots import CONTENT_SOURCE_KEY, PENDING_KEY
from ports.storage import ShareStorage

_TOKEN = re.compile(r"([0-9]{1,4})\.([0-9]{1,20})\.([0-9A-Za-z_-]{1,255})")  # fullmatch; \d is any Unicode digit
_UNREACHABLE = (Unavailable, DeadlineExceeded)


@dataclass(frozen=True)
class VolumeCondition:
    abnormal: bool
    message: str


@dataclass(frozen=True)
class VolumeView:
    """A volume as ListVolumes and ControllerGetVolume report it."""

    volume_id: VolumeId | CsiDriverNfsVolumeId
    capacity_bytes: int
    context: Mapping[str, str]
    condition: VolumeCondition


@dataclass(frozen=True)
class ListVolumesResult:
    volumes: tuple[VolumeView, ...]
    next_token: str = ""


def condition_of(storage: ShareStorage, share: ShareRef, subdir: str, record: VolumeRecord) -> VolumeCondition:
    """Abnormal when the directory is gone or cannot be reached, or a clone's content is not in place yet."""
    if PENDING_KEY in record.parameters:
        source = record.parameters.get(CONTENT_SOURCE_KEY, "its source")
        return VolumeCondition(True, f"the content of {subdir!r} is still being filled from {source} (CreateVolume)")
    try:
        present = storage.exists(share, subdir)
    except (*_UNREACHABLE, MountFailed, StorageFailed) as err:
        return VolumeCondition(True, f"the directory {subdir!r} on {share.source()} cannot be reached: {err}")
    if not present:
        return VolumeCondition(True, f"the directory {subdir!r} is missing on {share.source()}")
    return VolumeCondition(False, f"the directory {subdir!r} is present on {share.source()}")


def _recorded_mode(record: VolumeRecord) -> int:
    return parse_mode(record.parameters.get(MOUNT_PERMISSIONS, "0"), "recorded mountPermissions")


@dataclass(frozen=True)
class ListVolumesCommand:
    max_entries: int = 0
    starting_token: str = ""


class ListVolumes:
    """ListVolumes: the volumes indexed on the shares of ``--shares``, in that order, paged.

    A token is ``<share index>.<position>``: a place in the order, not a volume, so deleting the last volume of a
    page leaves it valid, and a volume created meanwhile sorts after it (positions follow creation). A share
    that cannot be read fails the call (UNAVAILABLE): a partial list would read as volumes that vanished.
    """

    def __init__(self, storage: ShareStorage, shares: tuple[ShareRef, ...]) -> None:
        self._storage = storage
        self._shares = shares

    def __call__(self, command: ListVolumesCommand) -> ListVolumesResult:
        max_entries = command.max_entries
        if max_entries < 0:
            raise InvalidArgument("max_entries must not be negative")
        first, after = self._parse_token(command.starting_token)
        found: list[tuple[int, ListedVolume]] = []
        for index in range(first, len(self._shares)):
            wanted = max_entries + 1 - len(found) if max_entries else 0  # one more tells whether a page follows
            listed = self._list(self._shares[index], after if index == first else None, wanted)
            found += [(index, volume) for volume in listed]
            if max_entries and len(found) > max_entries:
                break
        token = ""
        if max_entries and len(found) > max_entries:
            found = found[:max_entries]
            index, last = found[-1]
            token = f"{index}.{last.position.created_ns}.{last.position.entry}"
        return ListVolumesResult(tuple(self._view(self._shares[index], volume) for index, volume in found), token)

    def _parse_token(self, token: str) -> tuple[int, ListPosition | None]:
        if not token:
            return 0, None
        match = _TOKEN.fullmatch(token)
        if match is None or int(match.group(1)) >= len(self._shares):
            raise InvalidToken(f"starting_token {token[:80]!r} is not one ListVolumes returned for these shares")
        return int(match.group(1)), ListPosition(int(match.group(2)), match.group(3))

    def _list(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        try:
            return self._storage.list_records(share, after, limit)
        except NotFound as err:
            raise Unavailable(f"share {share.source()} of --shares cannot be listed: {err}") from err

    def _view(self, share: ShareRef, volume: ListedVolume) -> VolumeView:
        volume_id = _listed_id(share, volume)
        return VolumeView(
            volume_id,
            volume.record.capacity_bytes,
            volume_context(volume_id.share, volume.subdir, _recorded_mode(volume.record), volume.record.capacity_bytes),
            condition_of(self._storage, share, volume.subdir, volume.record),
        )


def _listed_id(listed_on: ShareRef, volume: ListedVolume) -> VolumeId:
    """The id CreateVolume returned: the share as the record names it; the share it was found on otherwise."""
    parameters = volume.record.parameters
    try:
        share = ShareRef.parse(parameters["server"], parameters["share"])
    except (KeyError, InvalidArgument):
        share = listed_on
    try:
        on_delete = OnDelete(parameters.get("onDelete", ""))
    except ValueError:
        on_delete = OnDelete.RETAIN  # never let an id made up here delete data
    return VolumeId(share, volume.subdir, on_delete)


@dataclass(frozen=True)
class ControllerGetVolumeCommand:
    volume_id: str


class ControllerGetVolume:
    """ControllerGetVolume: the recorded volume and its condition; NOT_FOUND only when its record is provably gone.

    A volume csi-driver-nfs provisioned has no record: it is its directory, reported with the handle's context and
    no capacity (csi-driver-nfs recorded none); NOT_FOUND only when the directory is provably gone.
    """

    def __init__(self, storage: ShareStorage) -> None:
        self._storage = storage

    def __call__(self, command: ControllerGetVolumeCommand) -> VolumeView:
        raw_volume_id = command.volume_id
        if not raw_volume_id:
            raise InvalidArgument("volume_id is required")
        volume_id = VolumeId.parse(raw_volume_id)
        if volume_id is None:
            theirs = CsiDriverNfsVolumeId.parse(raw_volume_id)
            if theirs is None:
                raise NotFound(f"volume {raw_volume_id!r} does not exist")
            return self._theirs(theirs)
        share, subdir = volume_id.share, volume_id.subdir
        unknown = VolumeView(volume_id, 0, volume_context(share, subdir, 0), VolumeCondition(True, ""))
        if not self._storage.share_reachable(share):
            return dataclasses.replace(
                unknown, condition=VolumeCondition(True, f"share {share.source()} cannot be reached")
            )
        try:
            record = self._storage.read_record(share, subdir)
        except _UNREACHABLE as err:
            return dataclasses.replace(unknown, condition=VolumeCondition(True, f"share {share.source()}: {err}"))
        if record is None:
            raise NotFound(f"volume {raw_volume_id!r} does not exist")
        return VolumeView(
            volume_id,
            record.capacity_bytes,
            volume_context(share, subdir, _recorded_mode(record), record.capacity_bytes),
            condition_of(self._storage, share, subdir, record),
        )


    def _theirs(self, volume: CsiDriverNfsVolumeId) -> VolumeView:
        share, subdir = volume.share, volume.subdir
        view = VolumeView(volume, 0, volume_context(share, subdir, 0), VolumeCondition(True, ""))
        if not self._storage.share_reachable(share):
            return dataclasses.replace(view, condition=VolumeCondition(True, f"share {share.source()} cannot be reached"))
        try:
            present = self._storage.exists(share, subdir)
        except (*_UNREACHABLE, MountFailed, StorageFailed) as err:
            message = f"the directory {subdir!r} on {share.source()} cannot be reached: {err}"
            return dataclasses.replace(view, condition=VolumeCondition(True, message))
        if not present:
            raise NotFound(f"volume {volume} does not exist: no directory {subdir!r} on {share.source()}")
        return dataclasses.replace(view, condition=VolumeCondition(False, f"the directory {subdir!r} is present on {share.source()}"))


@dataclass(frozen=True)
class GetCapacityCommand:
    capabilities: tuple[VolumeCapability, ...]
    parameters: Mapping[str, str]


class GetCapacity:
    """GetCapacity: what the share the parameters name has free (NFS has no quota: the filesystem's free space).

    No parameters is 0: a volume cannot be created without the server and share they name.
    """

    def __init__(
        self, storage: ShareStorage, defaults: ProvisionDefaults, mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST
    ) -> None:
        self._storage = storage
        self._defaults = defaults
        self._mount_options = mount_options

    def __call__(self, command: GetCapacityCommand) -> int:
        share = VolumeParameters.parse(command.parameters, self._defaults).share if command.parameters else None
        try:
            for capability in command.capabilities:
                check_capability(capability, self._mount_options)
        except InvalidArgument:
            return 0  # the spec asks for capacity usable by volumes with ALL these capabilities: none can be made
        if share is None:
            return 0
        return self._storage.available_bytes(share)


@dataclass(frozen=True)
class ControllerExpandVolumeCommand:
    volume_id: str
    capacity: CapacityRange | None
    capability: VolumeCapability | None = None


@dataclass(frozen=True)
class ControllerExpandVolumeResult:
    capacity_bytes: int
    # Nothing changes on an NFS mount, but the nodes measure the volume's use against its capacity, which they
    # learned from the volume context (which never changes): NodeExpandVolume tells them the new one.
    node_expansion_required: bool = True


class ControllerExpandVolume:
    """ControllerExpandVolume: record the new nominal size (NFS has no quota, so nothing enforces it); the nodes
    are asked to expand too, which tells them the size their usage figures count against."""

    def __init__(
        self, storage: ShareStorage, locks: VolumeLocks, mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST
    ) -> None:
        self._storage = storage
        self._locks = locks
        self._mount_options = mount_options

    def __call__(self, command: ControllerExpandVolumeCommand) -> ControllerExpandVolumeResult:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        if command.capacity is None:
            raise InvalidArgument("capacity_range is required")
        if command.capability is not None:
            check_capability(command.capability, self._mount_options)
        volume_id = VolumeId.parse(command.volume_id)
        if volume_id is None:
            return self._expand_theirs(command.volume_id, command.capacity)
        with self._locks.hold(str(volume_id)):
            record = _existing(self._storage, volume_id, command.volume_id)
            size = max(record.capacity_bytes, command.capacity.required_bytes)
            if command.capacity.limit_bytes and size > command.capacity.limit_bytes:
                raise OutOfRange(
                    f"the volume has {record.capacity_bytes} bytes, more than limit_bytes "
                    f"{command.capacity.limit_bytes}; a volume never shrinks"
                )
            if size != record.capacity_bytes:
                updated = dataclasses.replace(record, capacity_bytes=size)
                self._storage.write_record(volume_id.share, volume_id.subdir, updated)
        return ControllerExpandVolumeResult(size)


    def _expand_theirs(self, raw_volume_id: str, capacity: CapacityRange) -> ControllerExpandVolumeResult:
        """A volume csi-driver-nfs provisioned: the size asked for, with nothing recorded, as csi-driver-nfs answers
        (NFS has no quota); NOT_FOUND when its directory is gone. No node expansion: its volume context carries no
        capacity, so its usage figures are its share's and a node has nothing to learn."""
        theirs = CsiDriverNfsVolumeId.parse(raw_volume_id)
        present = (
            theirs is not None
            and self._storage.share_reachable(theirs.share)
            and self._storage.exists(theirs.share, theirs.subdir)
        )
        if not present:
            raise NotFound(f"volume {raw_volume_id!r} does not exist")
        return ControllerExpandVolumeResult(capacity.capacity_bytes, node_expansion_required=False)


def _existing(storage: ShareStorage, volume_id: VolumeId, raw_volume_id: str) -> VolumeRecord:
    """The record of a volume CreateVolume returned; a clone still being filled was never returned, so is not one."""
    record = storage.read_record(volume_id.share, volume_id.subdir)
    if record is None or PENDING_KEY in record.parameters:
        raise NotFound(f"volume {raw_volume_id!r} does not exist")
    return record


@dataclass(frozen=True)
class ControllerModifyVolumeCommand:
    volume_id: str
    mutable_parameters: Mapping[str, str]


class ControllerModifyVolume:
    """ControllerModifyVolume: validate every mutable parameter, then apply and record them; else change nothing.

    The mode and owner are the volume's directory's, applied at once; an owner the server refuses (root squashing)
    is FAILED_PRECONDITION, with nothing recorded."""

    def __init__(self, storage: ShareStorage, locks: VolumeLocks) -> None:
        self._storage = storage
        self._locks = locks

    def __call__(self, command: ControllerModifyVolumeCommand) -> None:
        raw_volume_id = command.volume_id
        if not raw_volume_id:
            raise InvalidArgument("volume_id is required")
        wanted = parse_mutable(command.mutable_parameters)
        volume_id = VolumeId.parse(raw_volume_id)
        if volume_id is None:
            raise NotFound(f"volume {raw_volume_id!r} does not exist")
        share, subdir = volume_id.share, volume_id.subdir
        with self._locks.hold(str(volume_id)):
            record = _existing(self._storage, volume_id, raw_volume_id)
            merged = {**record.mutable_parameters, **wanted}
            if wanted:
                if not self._storage.exists(share, subdir):
                    raise FailedPrecondition(f"the volume's directory {subdir!r} is missing on {share.source()}")
                mode = effective_mode(record.parameters, merged) or None  # again after a chown, which may clear set-id
                owner = effective_owner(record.parameters, merged) if {UID, GID} & set(wanted) else Owner()
                self._storage.create_volume_dir(share, subdir, mode, owner)
            if merged != dict(record.mutable_parameters):
                self._storage.write_record(share, subdir, dataclasses.replace(record, mutable_parameters=merged))
