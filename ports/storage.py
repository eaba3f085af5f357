"""ShareStorage: directory operations on an NFS share, one volume at a time."""

from __future__ import annotations

import abc

from domain.model import ListedVolume, ListPosition, ShareRef, VolumeRecord
from domain.needs import Storage


class ShareStorage(abc.ABC):
    """Directories and metadata for volumes on NFS shares.

    ``subdir`` is always a relative path already validated by the domain; implementations
    must still never touch anything outside ``share``/``subdir`` (and the volume's record),
    and never follow a symbolic link on the way there. Every method is idempotent.
    """

    @abc.abstractmethod
    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None) -> None:
        """Create subdir (and missing parents); chmod it to ``mode`` when given. Existing is OK."""

    @abc.abstractmethod
    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        """Remove subdir and everything below it. Missing is OK."""

    @abc.abstractmethod
    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        """Rename subdir to new_subdir on the same share (for archiving)."""

    @abc.abstractmethod
    def exists(self, share: ShareRef, subdir: str) -> bool:
        """Whether subdir exists as a directory."""

    @abc.abstractmethod
    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        """The record kept beside subdir, or None when there is none."""

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

    @abc.abstractmethod
    def shares_held(self) -> int:
        """How many shares the adapter holds open now (mounts, or client connections)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the adapter holds (share mounts, connections)."""


def _satisfies_domain(storage: ShareStorage) -> Storage:
    return storage  # mypy proves the contract covers what the domain needs.
