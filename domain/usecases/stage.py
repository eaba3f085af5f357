"""Stage use cases (--node-stage): mount a volume once per node at its staging path, and unmount it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import FailedPrecondition, InvalidArgument
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import (
    DEFAULT_ALLOWLIST,
    AccessMode,
    MountOptionAllowlist,
    Publication,
    VolumeCapability,
    check_capability,
    source_named_by,
)
from domain.static import context_capacity, is_ephemeral
from domain.usecases.node import (
    checked_path,
    lock_keys,
    mount_recorded,
    refuse_recorded_elsewhere,
    refuse_unless_own_mount,
    volume_source,
)
from ports.events import EventSink, NoEvents
from ports.mounter import Mounter
from ports.publications import PublicationStore


@dataclass(frozen=True)
class NodeStageVolumeCommand:
    volume_id: str
    staging_target_path: str
    capability: VolumeCapability | None
    context: Mapping[str, str] = field(default_factory=dict)


class NodeStageVolume:
    """NodeStageVolume: mount server:/share/subdir at the staging path, once per node, with the same option
    checks as a direct publish; a stale staging mount is mounted again. NodePublishVolume then bind-mounts it.

    Read-only is a property of each publish (a bind remounted ro), except for a reader-only access mode, which
    makes the staging mount itself read-only. A single-writer volume (SINGLE_NODE_SINGLE_WRITER) is staged at one
    path of the node: a second staging path is FAILED_PRECONDITION. The staging mount is the node's, not a pod's,
    so the rule that counts is NodePublishVolume's, which refuses a second target whatever the staging path.
    """

    def __init__(
        self,
        mounter: Mounter,
        stagings: PublicationStore,
        locks: VolumeLocks,
        events: EventSink = NoEvents(),
        mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST,
    ) -> None:
        self._mounter = mounter
        self._stagings = stagings
        self._locks = locks
        self._events = events
        self._mount_options = mount_options

    def __call__(self, command: NodeStageVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        staging = checked_path(command.staging_target_path, "staging_target_path")
        if command.capability is None:
            raise InvalidArgument("volume_capability is required")
        if is_ephemeral(command.context):
            raise InvalidArgument("inline ephemeral volumes are published directly, never staged")
        check_capability(command.capability, self._mount_options)
        source, context_options = volume_source(command.volume_id, command.context, self._mount_options)
        options = [*command.capability.mount_flags, *context_options]
        if command.capability.access_mode.read_only:
            options.append("ro")
        alone = command.capability.access_mode is AccessMode.SINGLE_NODE_SINGLE_WRITER
        capacity = context_capacity(command.context)
        wanted = Publication(command.volume_id, staging, source, tuple(dict.fromkeys(options)), alone, capacity)
        with self._locks.hold(*lock_keys(command.volume_id, staging)):
            recovered = mount_recorded(
                self._mounter,
                self._stagings,
                wanted,
                lambda: self._mounter.mount(wanted.source, staging, wanted.options),
                "staged",
                owns_path=False,  # kubelet's: a failed stage leaves it, as NodeUnstage does
            )
        if recovered:
            self._events.emit(Event.STALE_HANDLE_RECOVERED)


@dataclass(frozen=True)
class NodeUnstageVolumeCommand:
    volume_id: str
    staging_target_path: str


class NodeUnstageVolume:
    """NodeUnstageVolume: unmount what this driver staged at the staging path (escalating like NodeUnpublish);
    OK when nothing is staged there. The staging directory is the CO's: it is left in place.

    A mount point this driver has no record of staging for this volume is unmounted only when it is of exactly
    the export and directory the volume's id names, as NodeUnpublishVolume decides.
    """

    def __init__(
        self, mounter: Mounter, stagings: PublicationStore, locks: VolumeLocks, publications: PublicationStore | None = None
    ) -> None:
        self._mounter = mounter
        self._stagings = stagings
        self._locks = locks
        self._publications = publications

    def __call__(self, command: NodeUnstageVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        staging = checked_path(command.staging_target_path, "staging_target_path")
        with self._locks.hold(*lock_keys(command.volume_id, staging)):
            existing = self._stagings.get(staging)
            if existing is not None and existing.volume_id != command.volume_id:
                raise FailedPrecondition(f"{staging} stages another volume, {existing.volume_id!r}; left as it is")
            if self._mounter.is_mount_point(staging):
                if existing is None:
                    refuse_recorded_elsewhere(self._publications, staging, "a publication", "NodeUnpublishVolume")
                    named = source_named_by(command.volume_id)
                    refuse_unless_own_mount(self._mounter, staging, command.volume_id, named, "staging")
                self._mounter.unmount(staging)
            if existing is not None:
                self._stagings.remove(staging)
