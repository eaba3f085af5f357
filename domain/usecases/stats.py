"""NodeGetVolumeStats: the bytes and inodes of a published or staged volume, and whether it is healthy."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from domain.errors import DeadlineExceeded, InvalidArgument, MountFailed, NotFound, Unavailable
from domain.model import FilesystemUsage, source_named_by
from domain.usecases.node import checked_path, mounted_from
from ports.mounter import Mounter
from ports.publications import PublicationStore


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


class NodeGetVolumeStats:
    """Cheap, and never blocks past the filesystem bound: kubelet asks for every volume about once a minute.

    The path must be where this driver published or staged this very volume (its records say so), or a mount of
    exactly the export and directory the volume's id names (what the driver this one replaced mounted, or this one
    before its state was lost); anything else is NOT_FOUND. A mount that hangs, answers a stale handle or is gone is reported abnormal with a message,
    not as an error; with it, the last usage measured at that path, because kubelet drops a response without
    usage (and the condition with it).
    """

    REMEMBERED = 4096  # last usages kept, one per path: enough for any node's volumes, bounded however many come

    def __init__(self, mounter: Mounter, publications: PublicationStore, stagings: PublicationStore | None = None) -> None:
        self._mounter = mounter
        self._records = (publications,) if stagings is None else (publications, stagings)
        self._last: OrderedDict[str, FilesystemUsage] = OrderedDict()
        self._guard = threading.Lock()

    def __call__(self, command: NodeGetVolumeStatsCommand) -> NodeGetVolumeStatsResult:
        volume_id, volume_path = command.volume_id, command.volume_path
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        if not volume_path:
            raise InvalidArgument("volume_path is required")
        try:
            path = checked_path(volume_path, "volume_path")
        except InvalidArgument:
            path = ""  # a relative or malformed path is never one where a volume was published
        recorded = bool(path) and any(self._holds(records, path, volume_id) for records in self._records)
        if not recorded and not (path and mounted_from(self._mounter, path, source_named_by(volume_id))):
            self._forget(path)
            raise NotFound(f"volume {volume_id!r} is not published or staged at {volume_path!r} on this node")
        if not self._mounter.is_mount_point(path):
            return self._abnormal(path, f"{path} is no longer a mount point: the volume's mount is gone")
        try:
            usage = self._mounter.filesystem_usage(path)
        except (DeadlineExceeded, Unavailable, MountFailed) as err:
            return self._abnormal(path, str(err))
        with self._guard:
            self._last[path] = usage
            self._last.move_to_end(path)
            while len(self._last) > self.REMEMBERED:
                self._last.popitem(last=False)
        return NodeGetVolumeStatsResult(usage)

    @staticmethod
    def _holds(records: PublicationStore, path: str, volume_id: str) -> bool:
        record = records.get(path)
        return record is not None and record.volume_id == volume_id

    def _abnormal(self, path: str, message: str) -> NodeGetVolumeStatsResult:
        with self._guard:
            last = self._last.get(path)
        return NodeGetVolumeStatsResult(last, abnormal=True, message=message)

    def _forget(self, path: str) -> None:
        with self._guard:
            self._last.pop(path, None)
