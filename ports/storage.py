"""ShareStorage: directory operations on an NFS share, one volume at a time."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from domain.model import ListedVolume, ListPosition, Owner, ShareRef, VolumeRecord
from domain.snapshot_model import PackedSnapshot, SnapshotRecord


@dataclass(frozen=True)
class Obstacle:
    """What stands where a volume directory would be made: its path below the share, and what it is ("directory",
    "regular file", "symbolic link", or "FIFO, socket or device")."""

    path: str
    kind: str


class ShareStorage(abc.ABC):
    """Directories and metadata for volumes on NFS shares.

    ``subdir`` is always a relative path already validated by the domain; implementations
    must still never touch anything outside ``share``/``subdir`` (and the volume's record),
    and never follow a symbolic link on the way there. Every method is idempotent.
    """

    @abc.abstractmethod
    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None, owner: Owner = Owner()) -> None:
        """Create subdir (and missing parents); chown it to ``owner`` and chmod it to ``mode`` when given. Existing
        is OK. An owner the server will not give (root squashing) is FailedPrecondition, the directory left made."""

    @abc.abstractmethod
    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        """Remove subdir and everything below it, never opening what is no directory. Missing is OK; anything but a
        directory at subdir (a file, a link, a FIFO) is refused (Obstructed), never followed; OperationInFlight
        while a restore or copy into it still runs."""

    @abc.abstractmethod
    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        """Rename subdir to new_subdir on the same share (for archiving)."""

    @abc.abstractmethod
    def move_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        """Move subdir to new_subdir anywhere on the same share, making new_subdir's missing parents (for archiving
        as csi-driver-nfs does). Missing is OK; FailedPrecondition, with nothing moved, when anything is at
        new_subdir."""

    @abc.abstractmethod
    def volume_below(self, share: ShareRef, subdir: str) -> str | None:
        """The subdir of a volume this driver recorded strictly below subdir (its index entry and its record are
        there), or None: what a directory the driver did not make holds of its own."""

    @abc.abstractmethod
    def exists(self, share: ShareRef, subdir: str) -> bool:
        """Whether subdir exists as a directory (not a link to one); False when anything but a directory is on the
        way."""

    @abc.abstractmethod
    def in_the_way(self, share: ShareRef, subdir: str) -> Obstacle | None:
        """What stands where a new volume directory subdir would be made: the first name on the way that is not a
        plain directory, subdir itself when anything is there, or anything but a regular file in its record's place;
        None when the place is free (parents that are missing are made). Looks only: nothing is written."""

    @abc.abstractmethod
    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        """The record kept beside subdir, or None when there is none: nothing in its place, anything but a regular
        file there, or anything but a directory on the way. An unreadable record is an error, never None."""

    @abc.abstractmethod
    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        """Store the record beside subdir atomically (a reader sees the old or the new one).

        Also indexes subdir for ``list_records``, before the record is written (a crash in between leaves an
        entry without a record, which listing skips): an entry under ``<share>/.nfs-csi/volumes/`` named by a
        hash of subdir and holding it. An existing entry is kept as it is, so a volume keeps its place.
        """

    @abc.abstractmethod
    def remove_record(self, share: ShareRef, subdir: str) -> None:
        """Remove the record beside subdir, then its index entry. Missing is OK."""

    @abc.abstractmethod
    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        """Indexed volumes whose position is after ``after`` (None: from the first), oldest entry first.

        At most ``limit`` (0: no limit); an entry whose record is missing, or that does not name itself, is
        skipped. The order is stable: an entry's position never changes while it exists.
        """

    @abc.abstractmethod
    def available_bytes(self, share: ShareRef) -> int:
        """Bytes the share's filesystem has free for this client (statvfs f_bavail, NFS FSSTAT abytes)."""

    @abc.abstractmethod
    def share_reachable(self, share: ShareRef) -> bool:
        """Whether the share can be reached and is exported (mounting or connecting to it if need be)."""

    # -- snapshots and clones -------------------------------------------------------------------------------------
    # A snapshot is ``.nfs-csi/snapshots/<leaf>.<fmt>`` (the archive) and ``<leaf>.json`` (its record) on a share.
    # Packing, restoring and copying may take long: they are bounded as a whole by the snapshot timeout, counted
    # from the call (waiting for a thread included) and checked between files and chunks, so the work stops no
    # later than its caller gives up; a single filesystem call within it has no bound of its own in the mount-based
    # adapter (the userspace adapter bounds each NFS call by its timeout), and a second one on the same target
    # while one still runs is refused (OperationInFlight) instead of run twice. Nothing is reached through a symbolic link, and nothing
    # outside the source (read) and the destination volume or snapshot files (written) is touched.

    @abc.abstractmethod
    def pack_snapshot(
        self, share: ShareRef, subdir: str, snapshot_share: ShareRef, leaf: str, fmt: str
    ) -> PackedSnapshot:
        """Archive subdir's content (modes, numeric owners, times, links as links; no devices or fifos) to the
        snapshot's archive, written under a temporary name and renamed into place; its size, and its content's."""

    @abc.abstractmethod
    def write_snapshot_record(self, share: ShareRef, leaf: str, record: SnapshotRecord) -> None:
        """Store the snapshot's record atomically: the commit point, written after its archive is in place."""

    @abc.abstractmethod
    def read_snapshot_record(self, share: ShareRef, leaf: str) -> SnapshotRecord | None:
        """The snapshot's record, or None when there is none."""

    @abc.abstractmethod
    def list_snapshot_records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        """Every (leaf, record) on the share; unreadable records are skipped; none (or no directory) is []."""

    @abc.abstractmethod
    def remove_snapshot(self, share: ShareRef, leaf: str) -> None:
        """Remove the record first (the snapshot stops existing), then its archives and temporaries. Missing is OK."""

    @abc.abstractmethod
    def restore_snapshot(self, snapshot_share: ShareRef, leaf: str, fmt: str, share: ShareRef, subdir: str) -> None:
        """Unpack the snapshot's archive into the existing, empty directory subdir; an unsafe member (absolute,
        '..', a link leaving subdir, a device) is refused (InvalidArgument) before it is written."""

    @abc.abstractmethod
    def copy_volume(self, source_share: ShareRef, source_subdir: str, share: ShareRef, subdir: str) -> None:
        """Copy source_subdir's content into the existing, empty directory subdir, keeping modes, times and (where
        the process may) owners; links are copied as links."""

    @abc.abstractmethod
    def shares_held(self) -> int:
        """How many shares the adapter holds open now (mounts, or client connections)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the adapter holds (share mounts, connections)."""
