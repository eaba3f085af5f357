"""NodeGetVolumeStats: a published or staged volume's use and health; NodeExpandVolume: the capacity it counts against."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass

from domain.errors import DeadlineExceeded, InvalidArgument, MountFailed, NotFound, OutOfRange, Unavailable
from domain.locks import VolumeLocks
from domain.model import (
    DEFAULT_ALLOWLIST,
    CapacityRange,
    FilesystemUsage,
    MountOptionAllowlist,
    Publication,
    TreeUsage,
    VolumeCapability,
    check_capability,
    source_named_by,
)
from domain.usecases.node import BIND, checked_path, mounted_from
from ports.mounter import Mounter
from ports.publications import PublicationStore
from ports.usage import UsageMeter


@dataclass(frozen=True)
class NodeGetVolumeStatsResult:
    """What kubelet is told: the usage (None when never measured) and the volume's condition."""

    usage: FilesystemUsage | None
    abnormal: bool = False
    message: str = ""


@dataclass(frozen=True)
class NodeGetVolumeStatsCommand:
    volume_id: str
    volume_path: str


def volume_usage(capacity_bytes: int, tree: TreeUsage, filesystem: FilesystemUsage) -> FilesystemUsage:
    """A volume's own figures: its bytes against its requested capacity (NFS enforces none, so what is left is
    never below 0), its inodes against what the share has free (a volume has no inode quota of its own)."""
    return FilesystemUsage(
        total_bytes=capacity_bytes,
        available_bytes=max(0, capacity_bytes - tree.used_bytes),
        used_bytes=tree.used_bytes,
        total_inodes=tree.used_inodes + filesystem.free_inodes,
        free_inodes=filesystem.free_inodes,
        used_inodes=tree.used_inodes,
    )


def freshness(tree: TreeUsage) -> str:
    bound = "" if tree.complete else "at least (the walk stopped at its limit): "
    return f"{bound}the volume's own usage, measured {tree.age_seconds:.0f} s ago"


def _server(source: str) -> str:
    """The NFS server of ``server:/path``; any other source is its own."""
    return source.partition(":/")[0] if ":/" in source else source


class NodeGetVolumeStats:
    """Cheap, and never blocks past the filesystem bound: kubelet asks for every volume about once a minute.

    The path must be where this driver published or staged this very volume (its records say so), or a mount of
    exactly the export and directory the volume's id names (what the driver this one replaced mounted, or this one
    before its state was lost); anything else is NOT_FOUND. A mount that hangs, answers a stale handle or is gone is reported abnormal with a message,
    not as an error; with it, the last usage measured at that path, because kubelet drops a response without
    usage (and the condition with it).

    With a meter and a known capacity, the figures are the volume's own (``volume_usage``), from the meter's last
    walk of its tree, with their age in the message; until a first walk has finished, and for a volume of unknown
    capacity (a static volume whose attributes state none), the share's, from statvfs.
    """

    REMEMBERED = 4096  # last usages kept, one per path: enough for any node's volumes, bounded however many come

    def __init__(
        self,
        mounter: Mounter,
        publications: PublicationStore,
        stagings: PublicationStore | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self._mounter = mounter
        self._stagings = stagings
        self._records = (publications,) if stagings is None else (publications, stagings)
        self._meter = meter
        self._last: OrderedDict[str, FilesystemUsage] = OrderedDict()
        self._guard = threading.Lock()

    def __call__(self, command: NodeGetVolumeStatsCommand) -> NodeGetVolumeStatsResult:
        volume_id, volume_path = command.volume_id, command.volume_path
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        if not volume_path:
            raise InvalidArgument("volume_path is required")
        path, record = recorded_at(self._records, volume_path, volume_id)
        if record is None and not (path and mounted_from(self._mounter, path, source_named_by(volume_id))):
            self._forget(path)
            raise NotFound(f"volume {volume_id!r} is not published or staged at {volume_path!r} on this node")
        if not self._mounter.is_mount_point(path):
            return self._abnormal(path, f"{path} is no longer a mount point: the volume's mount is gone")
        try:
            usage = self._mounter.filesystem_usage(path)
        except (DeadlineExceeded, Unavailable, MountFailed) as err:
            return self._abnormal(path, str(err))
        message = ""
        if self._meter is not None and record is not None and record.capacity_bytes:
            tree = self._meter.usage(record.source, path, self._server_of(record), record.capacity_bytes)
            if tree is None:
                message = "the volume's own usage is not measured yet: these figures are its share's"
            else:
                usage, message = volume_usage(record.capacity_bytes, tree, usage), freshness(tree)
        with self._guard:
            self._last[path] = usage
            self._last.move_to_end(path)
            while len(self._last) > self.REMEMBERED:
                self._last.popitem(last=False)
        return NodeGetVolumeStatsResult(usage, message=message)

    def _server_of(self, record: Publication) -> str:
        """The server a publication's tree lives on: its source's, or for a bind, its staging mount's."""
        if record.options[:1] == (BIND,) and self._stagings is not None:
            staged = self._stagings.get(record.source)
            if staged is not None:
                return _server(staged.source)
        return _server(record.source)

    def _abnormal(self, path: str, message: str) -> NodeGetVolumeStatsResult:
        with self._guard:
            last = self._last.get(path)
        return NodeGetVolumeStatsResult(last, abnormal=True, message=message)

    def _forget(self, path: str) -> None:
        with self._guard:
            self._last.pop(path, None)


def recorded_at(
    stores: tuple[PublicationStore, ...], volume_path: str, volume_id: str
) -> tuple[str, Publication | None]:
    """The path, normalised, and the record of volume_id published or staged there; a relative or malformed path
    is never one where a volume was published."""
    try:
        path = checked_path(volume_path, "volume_path")
    except InvalidArgument:
        return "", None
    for records in stores:
        record = records.get(path)
        if record is not None and record.volume_id == volume_id:
            return path, record
    return path, None


@dataclass(frozen=True)
class NodeExpandVolumeCommand:
    volume_id: str
    volume_path: str
    capacity: CapacityRange | None = None
    capability: VolumeCapability | None = None


class NodeExpandVolume:
    """NodeExpandVolume: nothing to grow on an NFS mount; the node learns the volume's new capacity, which its usage
    figures count against, in every record it keeps of the volume (each target, and its staging path).

    The volume must be published or staged at volume_path (NOT_FOUND otherwise, as csi-sanity's relative
    "some/path" is). A capacity never shrinks: a request at or below the known one answers the known one, and a
    limit below it is OUT_OF_RANGE.
    """

    def __init__(
        self,
        publications: PublicationStore,
        locks: VolumeLocks,
        stagings: PublicationStore | None = None,
        mount_options: MountOptionAllowlist = DEFAULT_ALLOWLIST,
    ) -> None:
        self._records = (publications,) if stagings is None else (publications, stagings)
        self._locks = locks
        self._mount_options = mount_options

    def __call__(self, command: NodeExpandVolumeCommand) -> int:
        if not command.volume_id:
            raise InvalidArgument("volume_id is required")
        if not command.volume_path:
            raise InvalidArgument("volume_path is required")
        if command.capability is not None:
            check_capability(command.capability, self._mount_options)
        with self._locks.hold(f"node-expand:{command.volume_id}"):
            _, record = recorded_at(self._records, command.volume_path, command.volume_id)
            if record is None:
                raise NotFound(
                    f"volume {command.volume_id!r} is not published or staged at {command.volume_path!r} on this node"
                )
            held = [p for records in self._records for p in records.of_volume(command.volume_id)]
            known = max(p.capacity_bytes for p in [record, *held])
            wanted = command.capacity.required_bytes if command.capacity is not None else 0
            size = max(known, wanted)
            if command.capacity is not None and command.capacity.limit_bytes and size > command.capacity.limit_bytes:
                raise OutOfRange(
                    f"the volume has {known} bytes, more than limit_bytes {command.capacity.limit_bytes}; "
                    "a volume never shrinks"
                )
            for records in self._records:
                for publication in records.of_volume(command.volume_id):
                    if publication.capacity_bytes < size:
                        records.put(dataclasses.replace(publication, capacity_bytes=size))
        return size
