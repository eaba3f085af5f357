"""Controller use cases: provision and delete a volume directory on an NFS share."""

from __future__ import annotations

import contextlib
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Mapping

from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MountFailed, NotFound, Obstructed
from domain.events import Event
from domain.locks import VolumeLocks
from domain.model import (
    DEFAULT_ALLOWLIST,
    METADATA_DIR,
    CapacityRange,
    CsiDriverNfsVolumeId,
    MountOptionAllowlist,
    OnDelete,
    Owner,
    ShareRef,
    VolumeCapability,
    VolumeId,
    VolumeRecord,
    check_capabilities,
    check_capability,
    check_volume_name,
)
from domain.parameters import (
    GID,
    UID,
    CsiDriverNfsVolumes,
    ProvisionDefaults,
    VolumeParameters,
    effective_mode,
    effective_owner,
    parse_mode,
    parse_mutable,
)
from domain.static import CAPACITY, ContextVolume, context_capacity, own_context
from domain.usecases.snapshots import (
    CONTENT_SOURCE_KEY,
    PENDING_KEY,
    ContentSource,
    ResolvedSource,
    check_source_capacity,
    populate,
    resolve_source,
)
from ports.clock import Clock
from ports.events import EventSink, NoEvents
from ports.storage import ShareStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreateVolumeCommand:
    name: str
    capabilities: tuple[VolumeCapability, ...]
    capacity: CapacityRange = CapacityRange()
    parameters: Mapping[str, str] = field(default_factory=dict)
    content_source: ContentSource | None = None
    mutable_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreateVolumeResult:
    volume_id: VolumeId
    capacity_bytes: int
    context: Mapping[str, str]


@dataclass(frozen=True)
class _Checked:
    """A CreateVolumeCommand, checked: the volume it names and the record parameters that make two tries the same."""

    command: CreateVolumeCommand
    volume_id: VolumeId
    mount_permissions: int
    parameters: dict[str, str]
    mutable_parameters: dict[str, str]
    adopt_existing: bool


class CreateVolume:
    """CreateVolume: make the volume's directory once; a retry with the same name converges.

    A first try writes the record (``_create``), a retry must match it (``_check_retry``), and a clone's content is
    copied in until its record stops saying pending (``_complete_clone``), on the first try or on a retry. With
    adoptExisting, a first try that finds a directory without a record takes it over (``_adoptable``).
    """

    def __init__(
        self,
        storage: ShareStorage,
        locks: VolumeLocks,
        defaults: ProvisionDefaults,
        events: EventSink = NoEvents(),
        mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST,
    ) -> None:
        self._storage = storage
        self._locks = locks
        self._defaults = defaults
        self._events = events
        self._mount_options = mount_options

    def __call__(self, command: CreateVolumeCommand) -> CreateVolumeResult:
        checked = self._checked(command)
        try:
            return self._create_or_retry(checked)
        except MountFailed as err:
            raise _suggesting_class_options(err, checked) from err

    def _create_or_retry(self, checked: _Checked) -> CreateVolumeResult:
        command, share, subdir = checked.command, checked.volume_id.share, checked.volume_id.subdir
        source = command.content_source
        source_keys = source.lock_keys() if source is not None else ()
        with self._locks.hold(f"name:{command.name}", str(checked.volume_id), *source_keys):
            record = self._storage.read_record(share, subdir)
            made: Event | None = None
            resolved: ResolvedSource | None = None
            if record is None:
                record, resolved, made = self._create(checked)
            else:
                _check_retry(record, checked)
            # The record's mode and owner: a retry must not undo what ControllerModifyVolume set since.
            mode = effective_mode(record.parameters, record.mutable_parameters) or None
            if PENDING_KEY in record.parameters and source is not None:
                record = self._complete_clone(checked.volume_id, record, source, resolved, mode, fresh=made is not None)
            owner = effective_owner(record.parameters, record.mutable_parameters)
            try:
                # Only a directory this call made is removed again if its owner is refused; never an adopted one.
                self._make_dir(share, subdir, mode, owner, created=made is Event.VOLUME_CREATED)
            except Obstructed:
                if made is not None:  # planted since the first look: the record this call wrote goes, the place stays free
                    self._storage.remove_record(share, subdir)
                raise
        if made is not None:
            self._events.emit(made)
        context = volume_context(share, subdir, checked.mount_permissions, record.capacity_bytes)
        return CreateVolumeResult(checked.volume_id, record.capacity_bytes, context)

    def _checked(self, command: CreateVolumeCommand) -> _Checked:
        check_volume_name(command.name)
        check_capabilities(command.capabilities, self._mount_options)
        params = VolumeParameters.parse(command.parameters, self._defaults)
        mutable = parse_mutable(command.mutable_parameters)
        subdir = params.resolve_subdir(command.name, command.parameters)
        parameters = params.as_record(subdir)
        if command.content_source is not None:
            parameters[CONTENT_SOURCE_KEY] = command.content_source.key
        volume_id = VolumeId(params.share, subdir, params.on_delete)
        return _Checked(command, volume_id, params.mount_permissions, parameters, mutable, params.adopt_existing)

    def _create(self, checked: _Checked) -> tuple[VolumeRecord, ResolvedSource | None, Event]:
        """The first try: the volume's record, once its source and its place are known good; nothing else yet."""
        command, share, subdir = checked.command, checked.volume_id.share, checked.volume_id.subdir
        source = command.content_source
        resolved = resolve_source(self._storage, source) if source is not None else None
        adopted = self._refuse_taken(checked)
        self._refuse_nesting(checked.volume_id)
        capacity = command.capacity.capacity_bytes
        if resolved is not None:
            check_source_capacity(resolved, command.capacity.limit_bytes)
            capacity = max(capacity, resolved.capacity_bytes)
        # A clone's record says "pending" until its content is in place: never returned before that.
        pending = {PENDING_KEY: "true"} if resolved is not None else {}
        parameters = {**checked.parameters, **pending}
        record = VolumeRecord(command.name, capacity, parameters, mutable_parameters=checked.mutable_parameters)
        try:
            self._storage.write_record(share, subdir, record)
        except Obstructed:  # planted since the look above: its index entry, if made already, goes too
            self._storage.remove_record(share, subdir)
            raise
        if adopted:
            log.info("volume %s adopted the existing directory %s on %s", command.name, subdir, share.source())
        return record, resolved, Event.VOLUME_ADOPTED if adopted else Event.VOLUME_CREATED

    def _adoptable(self, checked: _Checked) -> None:
        """An existing directory without a record is ALREADY_EXISTS unless the parameters say adoptExisting and it
        holds no volume of this driver (a clone never adopts one: its content would mix with the source's)."""
        share, subdir = checked.volume_id.share, checked.volume_id.subdir
        where = f"directory {subdir!r} exists on {share.source()}"
        if not checked.adopt_existing:
            raise AlreadyExists(f"{where} and is not a volume of this driver (adoptExisting: \"true\" takes it over)")
        if checked.command.content_source is not None:
            raise AlreadyExists(f"{where}: a volume with a content source never adopts an existing directory")
        inner = self._storage.volume_below(share, subdir)
        if inner is not None:
            raise AlreadyExists(f"{where} and holds {inner!r}, a volume of this driver: it is never adopted")

    def _complete_clone(
        self, volume_id: VolumeId, record: VolumeRecord, source: ContentSource, resolved: ResolvedSource | None,
        mode: int | None, fresh: bool,
    ) -> VolumeRecord:
        """Copy a clone's content in, then drop the pending mark; a retry after an interruption starts from empty."""
        share, subdir = volume_id.share, volume_id.subdir
        if resolved is None:  # a retry: the source as it is now
            try:
                resolved = resolve_source(self._storage, source)
            except NotFound:
                self._discard(share, subdir)  # its source went away between two tries: nothing left to finish
                raise
        if not fresh:
            self._storage.remove_volume_dir(share, subdir)  # what an interrupted try left half copied
        try:
            self._storage.create_volume_dir(share, subdir, mode)
            populate(self._storage, resolved, share, subdir)
        except _REFUSALS:
            # A source refused (unsafe, unrestorable, gone) will be refused again: leave nothing behind.
            self._discard(share, subdir)
            raise
        complete = VolumeRecord(
            record.name, record.capacity_bytes, _without_pending(record.parameters), mutable_parameters=record.mutable_parameters
        )
        self._storage.write_record(share, subdir, complete)
        return complete

    def _make_dir(self, share: ShareRef, subdir: str, mode: int | None, owner: Owner, created: bool) -> None:
        """The volume's directory with its mode and owner. An owner the server refuses (root squashing) fails the
        call, and a volume this call began is removed again: no one else knows it, and the provisioner would keep
        retrying a refusal, leaving it behind when the claim is given up."""
        try:
            self._storage.create_volume_dir(share, subdir, mode, owner)
        except FailedPrecondition as err:
            if created and owner:
                self._discard(share, subdir)
                raise FailedPrecondition(
                    f"{err}; the volume was not created. The export must let the controller give files away "
                    "(no root squashing, e.g. no_root_squash; with --storage userspace, --nfs-uid 0), or leave out "
                    "the uid and gid parameters"
                ) from err
            raise

    def _discard(self, share: ShareRef, subdir: str) -> None:
        """Remove a pending clone, content and record: CreateVolume never returned it, so no one else knows it.
        Anything but a directory in its place is not the driver's: left as it is."""
        with contextlib.suppress(Obstructed):
            self._storage.remove_volume_dir(share, subdir)
        self._storage.remove_record(share, subdir)

    def _refuse_taken(self, checked: _Checked) -> bool:
        """Before anything is written: the directory must be the driver's to make, or, with adoptExisting, to take
        over (True: an existing directory to adopt, checked by ``_adoptable``). A directory already there is
        otherwise another's (ALREADY_EXISTS, for good); anything else in the way (a file, a link, a FIFO at subDir,
        on the way to it or in its record's place) is FAILED_PRECONDITION: never followed or replaced, and a retry
        succeeds once it is moved."""
        share, subdir = checked.volume_id.share, checked.volume_id.subdir
        obstacle = self._storage.in_the_way(share, subdir)
        if obstacle is None:
            return False
        if obstacle.path == subdir and obstacle.kind == "directory":
            self._adoptable(checked)
            return True
        raise FailedPrecondition(
            f"{obstacle.path!r} on {share.source()} is a {obstacle.kind}, in the way of the volume directory "
            f"{subdir!r}; nothing was written: move it, or choose another subDir"
        )

    def _refuse_nesting(self, volume_id: VolumeId) -> None:
        owner = enclosing_volume(self._storage, volume_id.share, volume_id.subdir)
        if owner is not None:
            raise AlreadyExists(f"subDir {volume_id.subdir!r} lies inside volume {owner.name!r}")


def enclosing_volume(storage: ShareStorage, share: ShareRef, subdir: str) -> VolumeRecord | None:
    """The record of a volume of this driver that subdir lies inside, or None."""
    parent = posixpath.dirname(subdir)
    while parent:
        owner = storage.read_record(share, parent)
        if owner is not None:
            return owner
        parent = posixpath.dirname(parent)
    return None


def _suggesting_class_options(err: MountFailed, checked: _Checked) -> MountFailed:
    """The controller could not mount the share, which nodes mount with the StorageClass's mountOptions: name them,
    as the controller would be given them (DeleteVolume and the snapshot RPCs never see them, so they are
    configured per share, not taken from this call)."""
    flags = [f for f in dict.fromkeys(f for c in checked.command.capabilities for f in c.mount_flags) if f != "ro"]
    if not flags:
        return err
    share = checked.volume_id.share.source()
    return MountFailed(
        f"{err}. Nodes mount this volume with the StorageClass's mountOptions {','.join(flags)}: if the controller "
        f"needs them to reach the share too, start it with --share-mount-options '{share}={','.join(flags)}'"
    )


def _check_retry(record: VolumeRecord, checked: _Checked) -> None:
    """A retry finds the record of the first try: it must ask for the same volume, or it is ALREADY_EXISTS."""
    command, subdir = checked.command, checked.volume_id.subdir
    if record.name != command.name:
        raise AlreadyExists(f"directory {subdir!r} already belongs to volume {record.name!r}")
    if record.parameters.get(CONTENT_SOURCE_KEY, "") != checked.parameters.get(CONTENT_SOURCE_KEY, ""):
        raise AlreadyExists(f"volume {command.name!r} exists with another content source")
    if not command.capacity.admits(record.capacity_bytes):
        raise AlreadyExists(
            f"volume {command.name!r} exists with capacity {record.capacity_bytes} bytes, outside the requested range"
        )
    if _without_pending(record.parameters) != checked.parameters:
        raise AlreadyExists(f"volume {command.name!r} exists with other parameters")


# What a retry would meet again, unlike a timeout or an unreachable share: a pending clone is not kept for it.
_REFUSALS = (InvalidArgument, FailedPrecondition, NotFound)


def _without_pending(parameters: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in parameters.items() if k != PENDING_KEY}


def volume_context(share: ShareRef, subdir: str, mount_permissions: int, capacity_bytes: int = 0) -> dict[str, str]:
    """The volume_context CreateVolume returns, and ValidateVolumeCapabilities accepts back. The capacity tells the
    node what to report the volume's use against (NodeExpandVolume tells it of a larger one later)."""
    context = {"server": share.server, "share": share.share, "subDir": subdir}
    if mount_permissions:
        context["mountPermissions"] = format(mount_permissions, "04o")
    if capacity_bytes:
        context[CAPACITY] = str(capacity_bytes)
    return context


@dataclass(frozen=True)
class ValidateVolumeCapabilitiesCommand:
    volume_id: str
    capabilities: tuple[VolumeCapability, ...]
    context: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    mutable_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidateVolumeCapabilitiesResult:
    """Confirmed, or not with the reason; an unsupported capability is an answer, not an error."""

    confirmed: bool
    message: str = ""


class ValidateVolumeCapabilities:
    """ValidateVolumeCapabilities: confirm only what this driver serves for a volume it recorded."""

    def __init__(
        self, storage: ShareStorage, defaults: ProvisionDefaults, mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST
    ) -> None:
        self._storage = storage
        self._defaults = defaults
        self._mount_options = mount_options

    def __call__(self, command: ValidateVolumeCapabilitiesCommand) -> ValidateVolumeCapabilitiesResult:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        if not command.capabilities:
            raise InvalidArgument("volume_capabilities must not be empty")
        volume_id = VolumeId.parse(command.volume_id)
        if volume_id is None:
            return self._validate_static(command)
        record = self._storage.read_record(volume_id.share, volume_id.subdir)
        if record is None:
            raise NotFound(f"volume {command.volume_id!r} does not exist")
        try:
            for capability in command.capabilities:
                check_capability(capability, self._mount_options)
            self._check_context(volume_id, record, command.context)
            self._check_parameters(volume_id, record, command.parameters)
            parse_mutable(command.mutable_parameters)  # supported ones can be set on any volume at any time
        except InvalidArgument as err:
            return ValidateVolumeCapabilitiesResult(False, str(err))
        return ValidateVolumeCapabilitiesResult(True)

    def _validate_static(self, command: ValidateVolumeCapabilitiesCommand) -> ValidateVolumeCapabilitiesResult:
        """A volume without a record: a static one, whose context must name a reachable share (and subDir), or one
        csi-driver-nfs provisioned, whose context or else handle must name a directory there; else it does not
        exist."""
        described = ContextVolume.from_context(command.context, self._mount_options)
        theirs = CsiDriverNfsVolumeId.parse(command.volume_id) if described is None else None
        if described is not None:
            share, subdir, source = described.share, described.subdir, described.source
        elif theirs is not None:
            share, subdir, source = theirs.share, theirs.subdir, theirs.source
        else:
            raise NotFound(f"volume {command.volume_id!r} does not exist and its volume_context names no share")
        reachable = self._storage.share_reachable(share) and (not subdir or self._storage.exists(share, subdir))
        if not reachable:
            raise NotFound(f"{source} cannot be reached or does not exist")
        try:
            for capability in command.capabilities:
                check_capability(capability, self._mount_options)
        except InvalidArgument as err:
            return ValidateVolumeCapabilitiesResult(False, str(err))
        if command.parameters or command.mutable_parameters:
            return ValidateVolumeCapabilitiesResult(
                False, "a volume this driver did not create has no parameters or mutable parameters"
            )
        return ValidateVolumeCapabilitiesResult(True)

    @staticmethod
    def _check_context(volume_id: VolumeId, record: VolumeRecord, context: Mapping[str, str]) -> None:
        """The context CreateVolume returned; its capacity may be an earlier one (a PersistentVolume's context
        never changes, while an expansion grows the record's)."""
        if not context:
            return
        mode = parse_mode(record.parameters.get("mountPermissions", "0"), "recorded mountPermissions")
        given = {key: value for key, value in own_context(context).items() if key != CAPACITY}
        if given != volume_context(volume_id.share, volume_id.subdir, mode):
            raise InvalidArgument("volume_context does not match the volume's")
        if context_capacity(context) > record.capacity_bytes:
            raise InvalidArgument(f"volume_context's {CAPACITY} is more than the volume's capacity")

    def _check_parameters(self, volume_id: VolumeId, record: VolumeRecord, parameters: Mapping[str, str]) -> None:
        if not parameters:
            return
        params = VolumeParameters.parse(parameters, self._defaults)
        if params.share != volume_id.share or params.on_delete is not volume_id.on_delete:
            raise InvalidArgument("parameters name another share or onDelete policy than the volume's")
        if format(params.mount_permissions, "04o") != record.parameters.get("mountPermissions", "0000"):
            raise InvalidArgument("parameters ask for other mountPermissions than the volume's")
        asked = params.as_record(volume_id.subdir)
        if any(asked.get(key) != record.parameters.get(key) for key in (UID, GID)):
            raise InvalidArgument("parameters ask for another owner (uid, gid) than the volume was created with")


_DELETE_EVENT = {
    OnDelete.DELETE: Event.VOLUME_DELETED,
    OnDelete.ARCHIVE: Event.VOLUME_ARCHIVED,
    OnDelete.RETAIN: Event.VOLUME_RETAINED,
}


@dataclass(frozen=True)
class DeleteVolumeCommand:
    volume_id: str


class DeleteVolume:
    """DeleteVolume: delete, archive or retain, as the volume's record says; only a directory this driver recorded
    is touched, or, when the operator says so, a directory csi-driver-nfs provisioned, as csi-driver-nfs would; and
    nothing that is not a directory (a file, a link, a FIFO put in its place) is followed."""

    def __init__(
        self,
        storage: ShareStorage,
        locks: VolumeLocks,
        clock: Clock,
        events: EventSink = NoEvents(),
        theirs: CsiDriverNfsVolumes = CsiDriverNfsVolumes(),
    ) -> None:
        self._storage = storage
        self._locks = locks
        self._clock = clock
        self._events = events
        self._theirs = theirs

    def __call__(self, command: DeleteVolumeCommand) -> None:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        volume_id = VolumeId.parse(command.volume_id)
        if volume_id is None:
            theirs = CsiDriverNfsVolumeId.parse(command.volume_id)
            if theirs is not None:
                self._delete_theirs(theirs)
            return  # Else not a volume: it does not exist, and deleting nothing is OK.
        share, subdir = volume_id.share, volume_id.subdir
        with self._locks.hold(str(volume_id)):
            record = self._storage.read_record(share, subdir)
            if record is None:
                if self._storage.exists(share, subdir):
                    log.warning("volume directory %s has no record of this driver; left untouched", subdir)
                return
            policy = _recorded_policy(volume_id, record)
            if policy is OnDelete.DELETE:
                self._remove(volume_id)
            elif policy is OnDelete.ARCHIVE and self._storage.exists(share, subdir):
                self._storage.rename_volume_dir(share, subdir, self._archive_name(share, subdir))
            self._storage.remove_record(share, subdir)
        self._events.emit(_DELETE_EVENT[policy])

    def _remove(self, volume_id: VolumeId) -> None:
        """Remove the volume's directory. A file, a link or a FIFO in its place is not what the driver made: it is
        left as it is, never followed or opened, and the record goes all the same (the directory it describes is
        gone; kept, it would fail every retry and the volume could never be deleted)."""
        try:
            self._storage.remove_volume_dir(volume_id.share, volume_id.subdir)
        except Obstructed as err:
            log.warning("volume %s: its directory was replaced (%s); left as it is, record removed", volume_id, err)

    def _delete_theirs(self, volume: CsiDriverNfsVolumeId) -> None:
        """A volume csi-driver-nfs provisioned: deleted, archived to ``archived-<subDir>`` at the share's root, or
        retained, as csi-driver-nfs would, but never a parent (csi-driver-nfs removes empty ones), never through a
        link, and never a directory of this driver's own volumes or holding one."""
        policy = volume.on_delete or self._theirs.default_on_delete
        share, subdir = volume.share, volume.subdir
        if not self._theirs.manage:
            log.warning(
                "volume %s was provisioned by csi-driver-nfs: %s is left untouched (its onDelete: %s); start the "
                "controller with --manage-csi-driver-nfs-volumes to have it handled as csi-driver-nfs would",
                volume, volume.source, policy.value,
            )  # fmt: skip
            return
        with self._locks.hold(str(volume)):
            present = policy is OnDelete.RETAIN or self._storage.exists(share, subdir)
            if policy is not OnDelete.RETAIN and present:
                self._refuse_unless_theirs(share, subdir)
                if policy is OnDelete.DELETE:
                    self._storage.remove_volume_dir(share, subdir)
                else:
                    self._archive_theirs(share, subdir, volume.archive_subdir)
        if not present:
            log.info("csi-driver-nfs volume %s: no directory at %s (deleted or archived already)", volume, volume.source)
            return
        log.info("csi-driver-nfs volume %s: %s, onDelete %s, done", volume, volume.source, policy.value)
        self._events.emit(_DELETE_EVENT[policy])

    def _archive_theirs(self, share: ShareRef, subdir: str, archive: str) -> None:
        self._refuse_nested(share, archive)
        if self._storage.exists(share, archive):
            if not self._theirs.remove_archived:
                raise FailedPrecondition(
                    f"{archive!r} already exists on {share.source()}, so {subdir!r} cannot be archived there; remove "
                    "it, or start the controller with --csi-driver-nfs-remove-archived-volume-path"
                )
            self._refuse_unless_theirs(share, archive)
            self._storage.remove_volume_dir(share, archive)
        self._storage.move_volume_dir(share, subdir, archive)

    def _refuse_unless_theirs(self, share: ShareRef, subdir: str) -> None:
        """FAILED_PRECONDITION, with nothing touched, unless subdir can be a csi-driver-nfs volume's directory and
        nothing of this driver's: not hidden ('.nfs-csi', records), no record, not inside a volume, none inside, and
        not the root of another share of this driver (one the server exports below this share: its .nfs-csi)."""
        if any(name.startswith(".") for name in subdir.split("/")):
            raise FailedPrecondition(f"{subdir!r} has a name starting with '.', which csi-driver-nfs never made; left as it is")
        record = self._storage.read_record(share, subdir)
        if record is not None:
            raise FailedPrecondition(f"{subdir!r} on {share.source()} is volume {record.name!r} of this driver; left as it is")
        self._refuse_nested(share, subdir)
        inner = self._storage.volume_below(share, subdir)
        if inner is not None:
            raise FailedPrecondition(f"{subdir!r} on {share.source()} holds {inner!r}, a volume of this driver; left as it is")
        if self._storage.exists(share, f"{subdir}/{METADATA_DIR}"):
            raise FailedPrecondition(
                f"{subdir!r} on {share.source()} holds {METADATA_DIR}: it is a share of this driver; left as it is"
            )

    def _refuse_nested(self, share: ShareRef, subdir: str) -> None:
        owner = enclosing_volume(self._storage, share, subdir)
        if owner is not None:
            raise FailedPrecondition(f"{subdir!r} on {share.source()} lies inside volume {owner.name!r} of this driver")

    def _archive_name(self, share: ShareRef, subdir: str) -> str:
        """Beside the volume, in its own parent; never onto anything already there (a rename would replace it)."""
        parent, leaf = posixpath.split(subdir)
        stamp = self._clock.now().strftime("%Y%m%dT%H%M%SZ")
        name = posixpath.join(parent, f"archived-{leaf}-{stamp}")
        candidate, n = name, 1
        while self._storage.in_the_way(share, candidate) is not None:
            candidate, n = f"{name}-{n}", n + 1
        return candidate


def _recorded_policy(volume_id: VolumeId, record: VolumeRecord) -> OnDelete:
    """The onDelete policy the record was written with, which decides. An id saying otherwise is not the one
    CreateVolume returned for this directory (an id edited from retain to delete, or a handle made up for it), so
    which volume's deletion it asks for cannot be known: refused, with nothing touched."""
    try:
        recorded = OnDelete(record.parameters.get("onDelete", ""))
    except ValueError:
        raise FailedPrecondition(
            f"the record of {volume_id.subdir!r} names no valid onDelete policy; nothing was deleted"
        ) from None
    if recorded is not volume_id.on_delete:
        log.warning("DeleteVolume %s refused: the volume was created with onDelete %s", volume_id, recorded.value)
        raise FailedPrecondition(
            f"volume {volume_id.subdir!r} was created with onDelete {recorded.value!r}, and this id says "
            f"{volume_id.on_delete.value!r}: it is not the id CreateVolume returned; nothing was deleted"
        )
    return recorded
