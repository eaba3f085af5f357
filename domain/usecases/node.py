"""Node use cases: publish and unpublish a volume at a target path, directly or from its staging mount."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from domain.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import (
    DEFAULT_ALLOWLIST,
    AccessMode,
    CsiDriverNfsVolumeId,
    ExportPath,
    MountOptionAllowlist,
    Publication,
    VolumeCapability,
    VolumeId,
    check_capability,
    source_named_by,
)
from domain.paths import absolute_path
from domain.static import EPHEMERAL, ContextVolume, context_capacity, is_ephemeral
from ports.events import EventSink, NoEvents
from ports.mounter import Mounter
from ports.publications import Admission, PublicationStore

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

    A volume this driver provisioned is described by its id; a static or inline volume by its context (server,
    share, subDir, mountOptions), validated like StorageClass parameters. A csi-driver-nfs volume is described by
    its context, as csi-driver-nfs reads it, or else by its handle.
    """
    parsed = None if inline else VolumeId.parse(volume_id)
    if parsed is not None:
        return parsed.share.source(parsed.subdir), ()
    described = ContextVolume.from_context(context, allowlist)
    if described is None:
        if inline:
            raise InvalidArgument("an inline volume needs the attributes server and share")
        foreign = CsiDriverNfsVolumeId.parse(volume_id)
        if foreign is not None:
            return foreign.source, ()
        raise NotFound(f"volume {volume_id!r} does not exist and its volume_context names no share")
    return described.source, described.mount_options


def mounted_from(mounter: Mounter, path: str, source: str | None) -> bool:
    """Whether every mount stacked at ``path`` is of exactly ``source``, as the kernel's mount table shows it
    (server and path compared in one spelling, never one a prefix of the other).

    How a mount this driver has no record of is known to be the volume's own: made by the driver this one replaced
    under the same name, or by this one before its state directory was lost.
    """
    wanted = ExportPath.parse(source) if source else None
    if wanted is None:
        return False
    sources = mounter.mounted_sources(path)
    return bool(sources) and all(ExportPath.parse(mounted) == wanted for mounted in sources)


def single_writer(wanted: Publication, what: str) -> Admission:
    """The spec's rule for SINGLE_NODE_SINGLE_WRITER: a volume published (or staged) for one single writer is at one
    path of the node, never two; FAILED_PRECONDITION when one more would make two, whichever of them asked for it."""

    def admit(others: Sequence[Publication]) -> None:
        if others and (wanted.single_writer or any(other.single_writer for other in others)):
            raise FailedPrecondition(
                f"volume {wanted.volume_id!r} is single-writer (SINGLE_NODE_SINGLE_WRITER: a ReadWriteOncePod "
                f"volume) and already {what} at {others[0].target} on this node; unpublish it there first"
            )

    return admit


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
    A single-writer volume held at another path is refused before a target is made, and again as the record is
    written, atomically with it (that second look decides; the first spares making a target for nothing).
    A failed mount's path is removed too when the plugin owns it (``owns_path``: a publish target) or made it just
    now; a staging path is the CO's, made before NodeStageVolume, and stays.
    """
    path = wanted.target
    existing = records.get(path)
    mounted = mounter.is_mount_point(path)
    if existing is not None and not existing.same_mount(wanted):
        raise AlreadyExists(f"{path} is already {what} with other arguments")
    if existing is None and mounted:
        if not mounted_from(mounter, path, wanted.source):
            raise AlreadyExists(f"{path} is already a mount point not {what} by this driver")
        log.info("%s is already mounted from %s, with no record of this driver: taken as %s", path, wanted.source, what)
        records.put(wanted)
        return None
    recovered = False
    if existing is not None and mounted:
        if not mounter.is_stale(path):
            return None
        log.warning("%s answers 'stale file handle': unmounting it and mounting %s again", path, wanted.source)
        mounter.unmount(path)
        recovered = True
    admit = single_writer(wanted, what)
    others = [p for p in records.of_volume(wanted.volume_id) if p.target != path]
    admit(others)
    # The largest capacity the node knows of the volume: a NodeExpandVolume since its context was written counts.
    wanted = dataclasses.replace(wanted, capacity_bytes=max([wanted.capacity_bytes, *(o.capacity_bytes for o in others)]))
    made = mounter.make_target(path)
    try:
        records.put(wanted, admit)
    except FailedPrecondition:
        _forget_failed(mounter, records, path, owns_path or made, forget_record=existing is None)
        raise
    try:
        mount()
    except DeadlineExceeded:
        raise
    except BaseException:
        _forget_failed(mounter, records, path, owns_path or made)
        raise
    return recovered


def _forget_failed(
    mounter: Mounter, records: PublicationStore, path: str, owns_path: bool, forget_record: bool = True
) -> None:
    try:
        if not mounter.is_mount_point(path):
            if forget_record:
                records.remove(path)
            if owns_path:
                mounter.remove_target(path)
    except Exception:  # noqa: BLE001 - the mount's own error is the one to report
        log.warning("could not clean up %s after a failed mount", path, exc_info=True)


class NodePublishVolume:
    """NodePublishVolume: mount server:/share/subdir at the target, once; a stale mount there is mounted again.

    With ``stagings`` (the node stages volumes, --node-stage), a volume is bind-mounted from its staging mount
    instead, read-only when the publish is; inline ephemeral volumes are never staged, so they mount directly.
    A single-writer volume (SINGLE_NODE_SINGLE_WRITER) held at another target of this node is FAILED_PRECONDITION.
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
        alone = command.capability.access_mode is AccessMode.SINGLE_NODE_SINGLE_WRITER
        capacity = context_capacity(command.context)
        staged: Publication | None = None
        if self._stagings is not None and not inline:
            staged = self._staged(command, self._stagings)
            staging = staged.target
            wanted = Publication(
                command.volume_id, target, staging, (BIND, "ro") if readonly else (BIND,), alone,
                max(capacity, staged.capacity_bytes),
            )
            mount = lambda: self._mounter.bind_mount(staging, target, readonly)  # noqa: E731
        else:
            options = [*command.capability.mount_flags, *context_options]
            if readonly:
                options.append("ro")
            wanted = Publication(command.volume_id, target, source, tuple(dict.fromkeys(options)), alone, capacity)
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

    A mount point this driver has no record of publishing for this volume is unmounted only when every mount there
    is of exactly the export and directory the volume's id names (one of this driver's, or a csi-driver-nfs
    handle): what the driver it replaced mounted, or what it mounted itself before its state was lost.
    """

    def __init__(
        self,
        mounter: Mounter,
        publications: PublicationStore,
        locks: VolumeLocks,
        events: EventSink = NoEvents(),
        stagings: PublicationStore | None = None,
    ) -> None:
        self._mounter = mounter
        self._publications = publications
        self._locks = locks
        self._events = events
        self._stagings = stagings

    def __call__(self, command: NodeUnpublishVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        target = checked_path(command.target_path)
        with self._locks.hold(*lock_keys(command.volume_id, target)):
            existing = self._publications.get(target)
            ours = existing is not None and existing.volume_id == command.volume_id
            if existing is not None and not ours:
                raise FailedPrecondition(f"{target} holds another volume, {existing.volume_id!r}; left as it is")
            named = source_named_by(command.volume_id)
            known = ours or named is not None
            mounted = self._mounter.is_mount_point(target)
            if mounted:
                if not ours:
                    refuse_recorded_elsewhere(self._stagings, target, "a staging mount", "NodeUnstageVolume")
                    refuse_unless_own_mount(self._mounter, target, command.volume_id, named, "publishing")
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


def refuse_recorded_elsewhere(records: PublicationStore | None, path: str, what: str, call: str) -> None:
    """A mount point this driver recorded as the other kind (a staging mount, a publication) is never unmounted
    here, whatever its source: it is ``call``'s to unmount."""
    if records is not None and records.get(path) is not None:
        raise FailedPrecondition(f"{path} is {what} of this driver: {call} unmounts it; left as it is")


def refuse_unless_own_mount(mounter: Mounter, path: str, volume_id: str, named: str | None, doing: str) -> None:
    """Refuse to unmount a mount point with no record unless it is provably the volume's own (``mounted_from``)."""
    if not mounted_from(mounter, path, named):
        raise FailedPrecondition(
            f"{path} is a mount point this driver has no record of {doing}, and not a mount of "
            f"{named or 'the export the volume id names'}; refusing to unmount it"
        )
    log.info("unmounting %s: no record of %s it, but a mount of %s, which volume %r names", path, doing, named, volume_id)
