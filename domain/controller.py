"""Controller use cases: provision and delete a volume directory on an NFS share."""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import AlreadyExists, InvalidArgument
from domain.locks import VolumeLocks
from domain.model import CapacityRange, OnDelete, VolumeCapability, VolumeId, VolumeRecord, check_capabilities
from domain.needs import Clock, Storage
from domain.parameters import ProvisionDefaults, VolumeParameters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreateVolume:
    name: str
    capabilities: tuple[VolumeCapability, ...]
    capacity: CapacityRange = CapacityRange()
    parameters: Mapping[str, str] = field(default_factory=dict)
    has_content_source: bool = False


@dataclass(frozen=True)
class ProvisionedVolume:
    volume_id: VolumeId
    capacity_bytes: int
    context: Mapping[str, str]


class ProvisionVolume:
    """CreateVolume: make the volume's directory once; a retry with the same name converges."""

    def __init__(self, storage: Storage, locks: VolumeLocks, defaults: ProvisionDefaults) -> None:
        self._storage = storage
        self._locks = locks
        self._defaults = defaults

    def __call__(self, command: CreateVolume) -> ProvisionedVolume:
        if not command.name:
            raise InvalidArgument("name is required")
        check_capabilities(command.capabilities)
        if command.has_content_source:
            raise InvalidArgument("volume_content_source is not supported yet")
        params = VolumeParameters.parse(command.parameters, self._defaults)
        subdir = params.resolve_subdir(command.name, command.parameters)
        volume_id = VolumeId(params.share, subdir, params.on_delete)
        stored_parameters = params.as_record(subdir)
        share = params.share

        with self._locks.hold(str(volume_id)):
            record = self._storage.read_record(share, subdir)
            if record is None:
                if self._storage.exists(share, subdir):
                    raise AlreadyExists(f"directory {subdir!r} exists on {share.source()} and is not a volume of this driver")
                self._refuse_nesting(volume_id)
                record = VolumeRecord(command.name, command.capacity.capacity_bytes, stored_parameters)
                self._storage.write_record(share, subdir, record)
            elif record.name != command.name:
                raise AlreadyExists(f"directory {subdir!r} already belongs to volume {record.name!r}")
            elif not command.capacity.admits(record.capacity_bytes):
                raise AlreadyExists(
                    f"volume {command.name!r} exists with capacity {record.capacity_bytes} bytes, "
                    f"outside the requested range"
                )
            elif dict(record.parameters) != stored_parameters:
                raise AlreadyExists(f"volume {command.name!r} exists with other parameters")
            self._storage.create_volume_dir(share, subdir, params.mount_permissions or None)

        context = {"server": share.server, "share": share.share, "subDir": subdir}
        if params.mount_permissions:
            context["mountPermissions"] = format(params.mount_permissions, "04o")
        return ProvisionedVolume(volume_id, record.capacity_bytes, context)

    def _refuse_nesting(self, volume_id: VolumeId) -> None:
        parent = posixpath.dirname(volume_id.subdir)
        while parent:
            owner = self._storage.read_record(volume_id.share, parent)
            if owner is not None:
                raise AlreadyExists(f"subDir {volume_id.subdir!r} lies inside volume {owner.name!r}")
            parent = posixpath.dirname(parent)


class DeleteVolume:
    """DeleteVolume: delete, archive or retain; only a directory this driver recorded is touched."""

    def __init__(self, storage: Storage, locks: VolumeLocks, clock: Clock) -> None:
        self._storage = storage
        self._locks = locks
        self._clock = clock

    def __call__(self, raw_volume_id: str) -> None:
        if not raw_volume_id:
            raise InvalidArgument("volume_id is required")
        volume_id = VolumeId.parse(raw_volume_id)
        if volume_id is None:
            return  # Not one of ours: it does not exist, and deleting nothing is OK.
        share, subdir = volume_id.share, volume_id.subdir
        with self._locks.hold(str(volume_id)):
            if self._storage.read_record(share, subdir) is None:
                if self._storage.exists(share, subdir):
                    log.warning("volume directory %s has no record of this driver; left untouched", subdir)
                return
            if volume_id.on_delete is OnDelete.DELETE:
                self._storage.remove_volume_dir(share, subdir)
            elif volume_id.on_delete is OnDelete.ARCHIVE and self._storage.exists(share, subdir):
                self._storage.rename_volume_dir(share, subdir, self._archive_name(subdir))
            self._storage.remove_record(share, subdir)

    def _archive_name(self, subdir: str) -> str:
        parent, leaf = posixpath.split(subdir)
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%SZ")
        return posixpath.join(parent, f"archived-{leaf}-{stamp}")
