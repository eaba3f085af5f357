"""Node use cases: publish and unpublish a volume at a target path, directly or from its staging mount."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping

from domain.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import DEFAULT_ALLOWLIST, MountOptionAllowlist, Publication, VolumeCapability, VolumeId, check_capability
from domain.paths import absolute_path
from domain.static import EPHEMERAL, ContextVolume, is_ephemeral
from ports.events import EventSink, NoEvents
from ports.mounter import Mounter
from ports.publications import PublicationStore

log = logging.getLogger(__name__)

# The options recorded for a bind mount of a staging mount into a publish target. "bind" is never on the NFS
# mount option allowlist, so such a record cannot be mistaken for a direct NFS mount's.
BIND = "bind"


@dataclass(frozen=True)
class NodePublishVolumeCommand:
    volume_id: str
    target_path: str
    capability: VolumeCapability | None
    readonly: bool = False
    context: Mapping[str, str] = field(default_factory=dict)
    staging_target_path: str = ""


def checked_path(raw: str, what: str = "target_path") -> str:
    if not raw:
        raise InvalidArgument(f"{what} is required")
    target = absolute_path(raw, what)
    if target == "/":
        raise InvalidArgument(f"{what} must not be '/'")
    return target


def lock_keys(volume_id: str, target: str) -> tuple[str, str]:
    """One call per volume at a target, and one volume per target at a time."""
    return f"{volume_id}@{target}", f"target:{target}"


def volume_source(
    volume_id: str, context: Mapping[str, str], allowlist: MountOptionAllowlist, inline: bool = False
) -> tuple[str, tuple[str, ...]]:
    """server:/share/subdir to mount, and the mount options the volume context adds.

    A dynamically provisioned volume is described by its id; a static or inline volume by its context
    (server, share, subDir, mountOptions), validated like StorageClass parameters.
    """
    parsed = None if inline else VolumeId.parse(volume_id)
    if parsed is not None:
        return parsed.share.source(parsed.subdir), ()
    described = ContextVolume.from_context(context, allowlist)
    if described is None:
        if inline:
            raise InvalidArgument("an inline volume needs the attributes server and share")
        raise NotFound(f"volume {volume_id!r} does not exist and its volume_context names no share")
    return described.source, described.mount_options


def mount_recorded(
    mounter: Mounter,
    records: PublicationStore,
    wanted: Publication,
    mount: Callable[[], None],
    what: str,
    owns_path: bool = True,
) -> bool | None:
    """Mount ``wanted`` at its path once, recording it first; None when it is already there, else whether a
    stale mount was replaced.

    The record is written before the mount, so a restart finds what may be mounted there; a mount that failed
    for sure is forgotten, one that timed out is kept (it may still land) so a retry or an unmount cleans up.
    A failed mount's path is removed too when the plugin owns it (``owns_path``: a publish target) or made it just
    now; a staging path is the CO's, made before NodeStageVolume, and stays.
    """
    path = wanted.target
    existing = records.get(path)
    mounted = mounter.is_mount_point(path)
    if existing is not None and existing != wanted:
        raise AlreadyExists(f"{path} is already {what} with other arguments")
    if existing is None and mounted:
        raise AlreadyExists(f"{path} is already a mount point not {what} by this driver")
    recovered = False
    if existing is not None and mounted:
        if not mounter.is_stale(path):
            return None
        log.warning("%s answers 'stale file handle': unmounting it and mounting %s again", path, wanted.source)
        mounter.unmount(path)
        recovered = True
    made = mounter.make_target(path)
    records.put(wanted)
    try:
        mount()
    except DeadlineExceeded:
        raise
    except BaseException:
        _forget_failed(mounter, records, path, owns_path or made)
        raise
    return recovered


def _forget_failed(mounter: Mounter, records: PublicationStore, path: str, owns_path: bool) -> None:
    try:
        if not mounter.is_mount_point(path):
            records.remove(path)
            if owns_path:
                mounter.remove_target(path)
    except Exception:  # noqa: BLE001 - the mount's own error is the one to report
        log.warning("could not clean up %s after a failed mount", path, exc_info=True)


class NodePublishVolume:
    """NodePublishVolume: mount server:/share/subdir at the target, once; a stale mount there is mounted again.

    With ``stagings`` (the node stages volumes, --node-stage), a volume is bind-mounted from its staging mount
    instead, read-only when the publish is; inline ephemeral volumes are never staged, so they mount directly.
    """

    def __init__(
        self,
        mounter: Mounter,
        publications: PublicationStore,
        locks: VolumeLocks,
        events: EventSink = NoEvents(),
        mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST,
        inline_volumes: bool = False,
        stagings: PublicationStore | None = None,
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events
        self._mount_options = mount_options
        self._inline_volumes = inline_volumes
        self._stagings = stagings

    def __call__(self, command: NodePublishVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        target = checked_path(command.target_path)
        if command.capability is None:
            raise InvalidArgument("volume_capability is required")
        inline = is_ephemeral(command.context)
        if inline and not self._inline_volumes:
            raise InvalidArgument(
                "inline ephemeral volumes are disabled on this driver (start it with --enable-inline-volumes): "
                f"use a PersistentVolumeClaim (the volume_context has {EPHEMERAL}: true)"
            )
        check_capability(command.capability, self._mount_options)
        source, context_options = volume_source(command.volume_id, command.context, self._mount_options, inline)
        readonly = command.readonly or command.capability.access_mode.read_only
        staged: Publication | None = None
        if self._stagings is not None and not inline:
            staged = self._staged(command, self._stagings)
            staging = staged.target
            wanted = Publication(command.volume_id, target, staging, (BIND, "ro") if readonly else (BIND,))
            mount = lambda: self._mounter.bind_mount(staging, target, readonly)  # noqa: E731
        else:
            options = [*command.capability.mount_flags, *context_options]
            if readonly:
                options.append("ro")
            wanted = Publication(command.volume_id, target, source, tuple(dict.fromkeys(options)))
            mount = lambda: self._mounter.mount(wanted.source, target, wanted.options)  # noqa: E731
        with self._locks.hold(*lock_keys(command.volume_id, target)):
            if staged is not None:
                self._refresh_staging(staged)
            recovered = mount_recorded(self._mounter, self._publications, wanted, mount, "published")
        if recovered is not None:
            self._events.emit(Event.STALE_HANDLE_RECOVERED if recovered else Event.VOLUME_PUBLISHED)

    def _refresh_staging(self, staged: Publication) -> None:
        """A staging mount answering ESTALE (its server restarted) is mounted again before a pod binds to it:
        kubelet does not stage a volume again while it is staged, so binding the stale mount would never heal."""
        if not self._mounter.is_stale(staged.target):
            return
        log.warning("staging mount %s answers 'stale file handle': mounting %s there again", staged.target, staged.source)
        self._mounter.unmount(staged.target)
        self._mounter.mount(staged.source, staged.target, staged.options)
        self._events.emit(Event.STALE_HANDLE_RECOVERED)

    def _staged(self, command: NodePublishVolumeCommand, stagings: PublicationStore) -> Publication:
        """The record of the staging mount this volume is staged at; FAILED_PRECONDITION when it is not."""
        if not command.staging_target_path:
            raise FailedPrecondition(
                "staging_target_path is required: this node stages volumes (--node-stage), so NodeStageVolume "
                "comes first"
            )
        staging = checked_path(command.staging_target_path, "staging_target_path")
        staged = stagings.get(staging)
        if staged is None or staged.volume_id != command.volume_id or not self._mounter.is_mount_point(staging):
            raise FailedPrecondition(f"volume {command.volume_id!r} is not staged at {staging}: NodeStageVolume first")
        return staged


@dataclass(frozen=True)
class NodeUnpublishVolumeCommand:
    volume_id: str
    target_path: str


class NodeUnpublishVolume:
    """NodeUnpublishVolume: unmount what this driver published, remove the target; OK when nothing is there.

    A mount point this driver has no record of publishing for this volume is never unmounted.
    """

    def __init__(
        self, mounter: Mounter, publications: PublicationStore, locks: VolumeLocks, events: EventSink = NoEvents()
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events

    def __call__(self, command: NodeUnpublishVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        target = checked_path(command.target_path)
        with self._locks.hold(*lock_keys(command.volume_id, target)):
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
