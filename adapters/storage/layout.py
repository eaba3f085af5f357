"""The driver's layout on a share, written once for both storage adapters, so either reads what the other wrote.

Records sit beside their volume directories; the volume index and the snapshots live in the driver's own
``.nfs-csi`` directory, private to it (0700), since snapshots hold full copies of users' data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from typing import Callable, Iterable

from domain.errors import InvalidArgument, StorageFailed
from domain.model import METADATA_DIR, ListedVolume, ListPosition, ShareRef, VolumeRecord
from domain.paths import relative_subpath
from domain.snapshot_model import FORMATS, SnapshotRecord, archive_name, is_leaf, record_file

log = logging.getLogger(__name__)

DRIVER_DIR_MODE = 0o700
"""The mode of ``.nfs-csi`` and every directory in it, whichever feature makes them first."""

INDEX_DIR = f"{METADATA_DIR}/volumes"
"""Where each volume has an index entry, so listing never walks the share: records sit at any depth."""

ENTRY_LIMIT = 4096
"""An index entry holds a subdir (at most 1024 bytes): more is not a valid entry."""

RECORD_LIMIT = 1 << 16
"""The most of a record (a volume's or a snapshot's) that is read."""


class RecordWriters:
    """One writer of a volume's record and index entry at a time in this process, without a lock per volume.

    The mount adapter's temporary record has a fixed name, so a retry after a crash overwrites what the crash
    left; and over NFS, opens of one index entry from one client at once fight over its open state.
    """

    def __init__(self, stripes: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def __call__(self, share: ShareRef, subdir: str) -> threading.Lock:
        return self._locks[hash((share, subdir)) % len(self._locks)]


def record_name(leaf: str) -> str:
    """The record of volume directory ``leaf`` lives beside it under this name."""
    return f".{leaf}.nfs-csi.json"


def index_entry(subdir: str) -> str:
    """The name of subdir's index entry: a fixed-length hash, since a subdir may take 1024 bytes and a name 255."""
    return hashlib.sha256(subdir.encode("utf-8", errors="surrogatepass")).hexdigest()


def indexed_subdir(entry: str, raw: bytes | None) -> str | None:
    """The subdir an index entry holds, or None unless it is a valid one that hashes to the entry's own name."""
    if raw is None:
        return None
    try:
        subdir = relative_subpath(raw.decode("utf-8"), "indexed subdir", new=False)
    except (UnicodeDecodeError, InvalidArgument):
        return None
    return subdir if index_entry(subdir) == entry else None


def volume_record(raw: bytes | None, subdir: str) -> VolumeRecord | None:
    """The record read for subdir; unreadable is an error (StorageFailed), never taken for a missing one."""
    if raw is None:
        return None
    try:
        return VolumeRecord.from_json(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise StorageFailed(f"the record of {subdir!r} is unreadable") from err


def listed_volumes(
    positions: Iterable[ListPosition],
    read_entry: Callable[[str], str | None],
    read_record: Callable[[str], VolumeRecord | None],
    share: ShareRef,
    after: ListPosition | None,
    limit: int,
) -> list[ListedVolume]:
    """One page of a share's index: entries after ``after`` whose entry is valid and whose record is readable."""
    listed: list[ListedVolume] = []
    for position in positions:
        if after is not None and position <= after:
            continue
        subdir = read_entry(position.entry)
        record = _listed_record(read_record, share, subdir) if subdir is not None else None
        if subdir is None or record is None:
            continue  # not a valid entry, or a crash came between it and its record
        listed.append(ListedVolume(position, subdir, record))
        if len(listed) == limit:
            break
    return listed


def _listed_record(read_record: Callable[[str], VolumeRecord | None], share: ShareRef, subdir: str) -> VolumeRecord | None:
    try:
        return read_record(subdir)
    except StorageFailed as err:
        log.warning("volume %s on %s is left out of the listing: %s", subdir, share.source(), err)
        return None


# -- snapshots: ``.nfs-csi/snapshots/<leaf>.<format>`` (the archive) and ``<leaf>.json`` (its record) -------------


def snapshot_record_leaf(name: str) -> str | None:
    """The leaf whose record file is ``name``, or None when it is no snapshot record."""
    leaf = name[: -len(".json")]
    return leaf if name.endswith(".json") and is_leaf(leaf) else None


def snapshot_record(raw: bytes | None, leaf: str) -> SnapshotRecord | None:
    """The record read for a snapshot; unreadable is an error (StorageFailed), never taken for a missing one."""
    if raw is None:
        return None
    try:
        return SnapshotRecord.from_json(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise StorageFailed(f"the record of snapshot {leaf!r} is unreadable") from err


def snapshot_records(found: Iterable[tuple[str, bytes]], share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
    """The readable ones of the records read from a share; an unreadable one is skipped, with a warning."""
    records: list[tuple[str, SnapshotRecord]] = []
    for leaf, raw in found:
        try:
            records.append((leaf, SnapshotRecord.from_json(raw)))
        except (ValueError, KeyError, TypeError):
            log.warning("skipping unreadable snapshot record %s on %s", leaf, share.source())
    return records


def snapshot_files(leaf: str) -> list[str]:
    """What removing snapshot ``leaf`` deletes, the record first (the snapshot stops existing), then its
    archives and the temporary files of writes a crash or a timeout cut short."""
    names = [record_file(leaf), f"{record_file(leaf)}.tmp"]
    for fmt in FORMATS:
        names += [archive_name(leaf, fmt), f"{archive_name(leaf, fmt)}.tmp"]
    return names


def is_temporary(leaf: str, name: str) -> bool:
    """Whether ``name`` is a temporary file of a write of snapshot leaf's record or archive (``<file>.tmp...``)."""
    files = [record_file(leaf), *(archive_name(leaf, fmt) for fmt in FORMATS)]
    return any(name.startswith(f"{file}.tmp") for file in files)


def archive_temporary(name: str) -> str:
    """A name of its own for each pack: two controllers packing one snapshot (a leader change while the old one
    still packs) each write a whole archive and rename it into place, never into one file at once."""
    return f"{name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:12]}"
