"""Node use cases: publish and unpublish a volume at a target path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import AlreadyExists, InvalidArgument, NotFound
from domain.locks import VolumeLocks
from domain.model import Publication, VolumeCapability, VolumeId, check_capability
from domain.events import Event, NoEvents
from domain.needs import Events, Mounting, Publications
from domain.paths import absolute_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishVolume:
    volume_id: str
    target_path: str
    capability: VolumeCapability | None
    readonly: bool = False
    context: Mapping[str, str] = field(default_factory=dict)


class Publish:
    """NodePublishVolume: mount server:/share/subdir at the target, once."""

    def __init__(
        self, mounter: Mounting, publications: Publications, locks: VolumeLocks, events: Events = NoEvents()
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events

    def __call__(self, command: PublishVolume) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        if not command.target_path:
            raise InvalidArgument("target_path is required")
        if command.capability is None:
            raise InvalidArgument("volume_capability is required")
        check_capability(command.capability)
        target = absolute_path(command.target_path, "target_path")
        volume_id = VolumeId.parse(command.volume_id)
        if volume_id is None:
            raise NotFound(f"volume {command.volume_id!r} does not exist")

        options = list(command.capability.mount_flags)
        if command.readonly or command.capability.access_mode.read_only:
            options.append("ro")
        wanted = Publication(
            volume_id=command.volume_id,
            target=target,
            source=volume_id.share.source(volume_id.subdir),
            options=tuple(dict.fromkeys(options)),
        )
        with self._locks.hold(f"{command.volume_id}@{target}"):
            existing = self._publications.get(target)
            mounted = self._mounter.is_mount_point(target)
            if existing is not None and existing != wanted:
                raise AlreadyExists(f"{target} is already published with other arguments")
            if existing is None and mounted:
                raise AlreadyExists(f"{target} is already a mount point not published by this driver")
            if existing is not None and mounted:
                return
            self._mounter.make_target(target)
            self._publications.put(wanted)
            try:
                self._mounter.mount(wanted.source, target, wanted.options)
            except BaseException:
                self._publications.remove(target)
                self._mounter.remove_target(target)
                raise
        self._events.emit(Event.VOLUME_PUBLISHED)


@dataclass(frozen=True)
class UnpublishVolume:
    volume_id: str
    target_path: str


class Unpublish:
    """NodeUnpublishVolume: unmount if mounted, remove the target; OK when nothing is there."""

    def __init__(
        self, mounter: Mounting, publications: Publications, locks: VolumeLocks, events: Events = NoEvents()
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events

    def __call__(self, command: UnpublishVolume) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        if not command.target_path:
            raise InvalidArgument("target_path is required")
        target = absolute_path(command.target_path, "target_path")
        with self._locks.hold(f"{command.volume_id}@{target}"):
            existing = self._publications.get(target)
            known = VolumeId.parse(command.volume_id) is not None or (
                existing is not None and existing.volume_id == command.volume_id
            )
            mounted = self._mounter.is_mount_point(target)
            if mounted:
                self._mounter.unmount(target)
            self._mounter.remove_target(target)
            self._publications.remove(target)
        if mounted:
            self._events.emit(Event.VOLUME_UNPUBLISHED)
        if not known:
            raise NotFound(f"volume {command.volume_id!r} does not exist")
