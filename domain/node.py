"""Node use cases: publish and unpublish a volume at a target path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from domain.locks import VolumeLocks
from domain.model import DEFAULT_ALLOWLIST, MountOptionAllowlist, Publication, VolumeCapability, VolumeId, check_capability
from domain.events import Event, NoEvents
from domain.needs import Events, Mounting, Publications
from domain.paths import absolute_path
from domain.static import EPHEMERAL, ContextVolume, is_ephemeral

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PublishVolume:
    volume_id: str
    target_path: str
    capability: VolumeCapability | None
    readonly: bool = False
    context: Mapping[str, str] = field(default_factory=dict)


def _target(raw: str) -> str:
    if not raw:
        raise InvalidArgument("target_path is required")
    target = absolute_path(raw, "target_path")
    if target == "/":
        raise InvalidArgument("target_path must not be '/'")
    return target


def _lock_keys(volume_id: str, target: str) -> tuple[str, str]:
    """One call per volume at a target, and one volume per target at a time."""
    return f"{volume_id}@{target}", f"target:{target}"


class Publish:
    """NodePublishVolume: mount server:/share/subdir at the target, once; a stale mount there is mounted again."""

    def __init__(
        self,
        mounter: Mounting,
        publications: Publications,
        locks: VolumeLocks,
        events: Events = NoEvents(),
        mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST,
        inline_volumes: bool = False,
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events
        self._mount_options = mount_options
        self._inline_volumes = inline_volumes

    def __call__(self, command: PublishVolume) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        target = _target(command.target_path)
        if command.capability is None:
            raise InvalidArgument("volume_capability is required")
        inline = is_ephemeral(command.context)
        if inline and not self._inline_volumes:
            raise InvalidArgument(
                "inline ephemeral volumes are disabled on this driver (start it with --enable-inline-volumes): "
                f"use a PersistentVolumeClaim (the volume_context has {EPHEMERAL}: true)"
            )
        check_capability(command.capability, self._mount_options)
        source, context_options = self._source(command, inline)

        options = [*command.capability.mount_flags, *context_options]
        if command.readonly or command.capability.access_mode.read_only:
            options.append("ro")
        wanted = Publication(
            volume_id=command.volume_id,
            target=target,
            source=source,
            options=tuple(dict.fromkeys(options)),
        )
        recovered = False
        with self._locks.hold(*_lock_keys(command.volume_id, target)):
            existing = self._publications.get(target)
            mounted = self._mounter.is_mount_point(target)
            if existing is not None and existing != wanted:
                raise AlreadyExists(f"{target} is already published with other arguments")
            if existing is None and mounted:
                raise AlreadyExists(f"{target} is already a mount point not published by this driver")
            if existing is not None and mounted:
                if not self._mounter.is_stale(target):
                    return
                log.warning("%s answers 'stale file handle': unmounting it and mounting %s again", target, wanted.source)
                self._mounter.unmount(target)
                recovered = True
            self._mounter.make_target(target)
            self._publications.put(wanted)  # before the mount: a restart finds what may be mounted here
            try:
                self._mounter.mount(wanted.source, target, wanted.options)
            except DeadlineExceeded:
                # The mount may still land (a killed helper can outlive its timeout in the kernel): keep the
                # record, so a retry mounts again and NodeUnpublish may unmount what did land.
                raise
            except BaseException:
                self._forget_failed(target)
                raise
        self._events.emit(Event.STALE_HANDLE_RECOVERED if recovered else Event.VOLUME_PUBLISHED)

    def _source(self, command: PublishVolume, inline: bool) -> tuple[str, tuple[str, ...]]:
        """server:/share/subdir to mount, and the mount options the volume context adds.

        A dynamically provisioned volume is described by its id; a static or inline volume by its context
        (server, share, subDir, mountOptions), validated like StorageClass parameters.
        """
        volume_id = None if inline else VolumeId.parse(command.volume_id)
        if volume_id is not None:
            return volume_id.share.source(volume_id.subdir), ()
        described = ContextVolume.from_context(command.context, self._mount_options)
        if described is None:
            if inline:
                raise InvalidArgument("an inline volume needs the attributes server and share")
            raise NotFound(f"volume {command.volume_id!r} does not exist and its volume_context names no share")
        return described.source, described.mount_options

    def _forget_failed(self, target: str) -> None:
        try:
            if not self._mounter.is_mount_point(target):
                self._publications.remove(target)
                self._mounter.remove_target(target)
        except Exception:  # noqa: BLE001 - the mount's own error is the one to report
            log.warning("could not clean up %s after a failed mount", target, exc_info=True)


@dataclass(frozen=True)
class UnpublishVolume:
    volume_id: str
    target_path: str


class Unpublish:
    """NodeUnpublishVolume: unmount what this driver published, remove the target; OK when nothing is there.

    A mount point this driver has no record of publishing for this volume is never unmounted.
    """

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
        target = _target(command.target_path)
        with self._locks.hold(*_lock_keys(command.volume_id, target)):
            existing = self._publications.get(target)
            ours = existing is not None and existing.volume_id == command.volume_id
            if existing is not None and not ours:
                raise FailedPrecondition(f"{target} holds another volume, {existing.volume_id!r}; left as it is")
            known = ours or VolumeId.parse(command.volume_id) is not None
            mounted = self._mounter.is_mount_point(target)
            if mounted:
                if not ours:
                    raise FailedPrecondition(
                        f"{target} is a mount point this driver has no record of publishing; refusing to unmount it"
                    )
                self._mounter.unmount(target)
            removed = self._mounter.remove_target(target)
            if ours:
                self._publications.remove(target)
        if mounted:
            self._events.emit(Event.VOLUME_UNPUBLISHED)
        if not known and (mounted or removed):
            # Nothing of ours was there, but the target was: cleaned up, and the volume reported missing. With
            # nothing there at all this is a repeat of a call that succeeded (a static volume's handle is any
            # string, and its record is gone): OK, so a retry never leaves a pod Terminating.
            raise NotFound(f"volume {command.volume_id!r} does not exist")
