"""FileShareStorage: the driver's one ShareStorage, its layout and rules on a share written once over a file system.

Records sit beside their volume directories (``.<leaf>.nfs-csi.json``); the index (``.nfs-csi/volumes``) and the
snapshots (``.nfs-csi/snapshots``) live in the driver's own directory, private (0700): snapshots hold users' data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import shutil
import threading
import uuid
from typing import BinaryIO, Callable, ContextManager, Iterator, TypeVar

from adapters.storage.archive import CHUNK, DIRECTORY, FILE, SYMLINK, Deadline, Entry, checked, copy_tree, pack_tree
from adapters.storage.archive import reading_source, source_entries, unpack_tree
from adapters.storage.files import ShareFiles, ShareFileSystem
from domain.errors import FailedPrecondition, InvalidArgument, Obstructed, OperationInFlight, StorageFailed
from domain.model import METADATA_DIR, ListedVolume, ListPosition, Owner, ShareRef, VolumeRecord
from domain.paths import relative_subpath
from domain.snapshot_model import FORMATS, SNAPSHOT_DIR, PackedSnapshot, SnapshotRecord, archive_name, is_leaf
from domain.snapshot_model import record_file
from ports.storage import Obstacle, ShareStorage

log = logging.getLogger(__name__)

T = TypeVar("T")
Busy = tuple[str, ShareRef, str]  # long work running: ("fill", share, subdir) restores or copies, ("pack", share, leaf)
LongWork = Callable[[ShareFiles, ShareFiles, Deadline], T]  # (files, the source's files, deadline)

DRIVER_DIR_MODE = 0o700  # .nfs-csi and every directory in it, whichever feature makes them first
RECORD_MODE, SNAPSHOT_MODE = 0o644, 0o600  # records and index entries are readable, as volumes are; snapshots not
INDEX_DIR = f"{METADATA_DIR}/volumes"  # an entry per volume, so listing never walks the share
ENTRY_LIMIT, RECORD_LIMIT = 4096, 1 << 16  # the most of an index entry (a subdir: 1024 bytes) or a record read
KIND_NAMES = {DIRECTORY: "directory", FILE: "regular file", SYMLINK: "symbolic link"}


def kind_name(kind: str) -> str:
    """What an entry of that kind is, in words (an Obstacle's kind)."""
    return KIND_NAMES.get(kind, "FIFO, socket or device")


def record_path(subdir: str) -> str:
    """The record of a volume directory lives beside it: ``<parent>/.<leaf>.nfs-csi.json``."""
    parent, leaf = posixpath.split(subdir)
    return posixpath.join(parent, f".{leaf}.nfs-csi.json")


def index_entry(subdir: str) -> str:
    """The name of subdir's index entry: a fixed-length hash, since a subdir may take 1024 bytes and a name 255."""
    return hashlib.sha256(subdir.encode("utf-8", errors="surrogatepass")).hexdigest()


def check_rename(subdir: str, new_subdir: str) -> None:
    """A volume directory is only renamed within its parent (an archive stays beside where the volume was)."""
    if posixpath.dirname(subdir) != posixpath.dirname(new_subdir):
        raise StorageFailed("a volume directory is only renamed within its parent")


class FileShareStorage(ShareStorage):
    """Volumes, records, the index and snapshots over any ShareFileSystem, which one reads what the other wrote. One
    writer of a record at a time in this process; long work keeps its key busy until the work itself ends, so a
    retry meanwhile is ABORTED instead of writing the same files twice."""

    def __init__(self, files: ShareFileSystem) -> None:
        self._files = files
        self._guard = threading.Lock()
        self._busy: dict[Busy, int] = {}  # each key: its call, and each run of its work still going
        # Striped, so no lock per volume is kept: over NFS, opens of one index entry at once fight over its state.
        self._writers = [threading.Lock() for _ in range(64)]

    def share_reachable(self, share: ShareRef) -> bool:
        return self._files.reachable(share)

    def shares_held(self) -> int:
        return self._files.held()

    def close(self) -> None:
        self._files.close()

    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None, owner: Owner = Owner()) -> None:
        def work(files: ShareFiles) -> None:
            _make_dirs(files, subdir)
            if not _is_dir(files, subdir):
                raise Obstructed(f"{subdir!r} exists and is not a plain directory")
            if owner:
                files.chown(subdir, owner.uid, owner.gid)  # before the mode: a chown clears set-id bits
            if mode is not None:
                files.chmod(subdir, mode)

        self._files.run(share, f"creating {subdir!r}", work)

    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        # A fill into subdir that outlived its caller still writes there: the caller's retry after it ends converges.
        self._refuse_while(("fill", share, subdir), f"{subdir!r} on {share.source()} is still being filled")
        self._files.run(share, f"removing {subdir!r}", lambda files: files.remove_tree(subdir))

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        check_rename(subdir, new_subdir)

        def work(files: ShareFiles) -> None:
            try:
                files.rename(subdir, posixpath.basename(new_subdir))
            except FileNotFoundError:
                pass

        self._files.run(share, f"renaming {subdir!r}", work)

    def move_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        def work(files: ShareFiles) -> None:
            if not _is_dir(files, subdir):
                return  # moved already (or never there)
            try:
                files.stat(new_subdir)
            except FileNotFoundError:
                pass
            else:
                raise FailedPrecondition(f"{new_subdir!r} already exists on {share.source()}; {subdir!r} was not moved")
            _make_dirs(files, posixpath.dirname(new_subdir))
            files.move(subdir, new_subdir)

        self._files.run(share, f"moving {subdir!r} to {new_subdir!r}", work)

    def volume_below(self, share: ShareRef, subdir: str) -> str | None:
        def scan(files: ShareFiles) -> str | None:
            for entry in files.list(INDEX_DIR):
                if entry.kind != FILE:
                    continue
                below = _indexed_subdir(entry.path, files.read(f"{INDEX_DIR}/{entry.path}", ENTRY_LIMIT))
                if below is not None and below.startswith(subdir + "/") and _exists(files, record_path(below)):
                    return below
            return None

        return self._files.run(share, f"looking for volumes below {subdir!r}", scan)

    def exists(self, share: ShareRef, subdir: str) -> bool:
        return self._files.run(share, f"looking up {subdir!r}", lambda files: _is_dir(files, subdir))

    def in_the_way(self, share: ShareRef, subdir: str) -> Obstacle | None:
        def work(files: ShareFiles) -> Obstacle | None:
            parts = subdir.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                try:
                    kind = files.stat(path).kind
                except FileNotFoundError:
                    if depth < len(parts):
                        return None  # from here down nothing is there: all of it is made fresh
                    break
                if kind != DIRECTORY or depth == len(parts):
                    return Obstacle(path, kind_name(kind))
            try:  # subdir is free: so must its record's place be (read_record saw no record there)
                kind = files.stat(record_path(subdir)).kind
            except FileNotFoundError:
                return None
            return None if kind == FILE else Obstacle(record_path(subdir), kind_name(kind))

        return self._files.run(share, f"looking at where {subdir!r} would be made", work)

    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        raw = self._read(share, record_path(subdir), f"the record of {subdir!r}")
        return _parsed(VolumeRecord.from_json, raw, f"the record of {subdir!r}")

    def _read(self, share: ShareRef, path: str, what: str, limit: int = RECORD_LIMIT) -> bytes | None:
        """The bytes of a record or an index entry; None when there is none: nothing there, anything but a regular
        file there (the driver writes no other kind), or a file, link or FIFO on the way (none can be below it)."""

        def work(files: ShareFiles) -> bytes | None:
            try:
                return files.read(path, limit)
            except Obstructed as err:
                log.info("%s is not there: %s", what, err)
                return None

        return self._files.run(share, f"reading {what}", work)

    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        def work(files: ShareFiles) -> None:
            _index(files, subdir)
            _make_dirs(files, posixpath.dirname(subdir))
            files.write_atomically(record_path(subdir), record.to_json(), RECORD_MODE)

        with self._writers[hash((share, subdir)) % len(self._writers)]:
            self._files.run(share, f"writing the record of {subdir!r}", work)

    def remove_record(self, share: ShareRef, subdir: str) -> None:
        def work(files: ShareFiles) -> None:
            for path in (record_path(subdir), f"{record_path(subdir)}.tmp", f"{INDEX_DIR}/{index_entry(subdir)}"):
                with contextlib.suppress(Obstructed):  # a directory there, or no directory on the way: not ours
                    files.remove(path)

        self._files.run(share, f"removing the record of {subdir!r}", work)

    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        def scan(files: ShareFiles) -> list[ListPosition]:
            return sorted(ListPosition(e.mtime_ns, e.path) for e in files.list(INDEX_DIR) if e.kind == FILE)

        listed: list[ListedVolume] = []
        for position in self._files.run(share, "listing the volume index", scan):
            if after is not None and position <= after:
                continue
            raw = self._read(share, f"{INDEX_DIR}/{position.entry}", f"index entry {position.entry}", ENTRY_LIMIT)
            subdir = _indexed_subdir(position.entry, raw)
            try:
                record = None if subdir is None else self.read_record(share, subdir)
            except StorageFailed as err:
                log.warning("volume %s on %s is left out of the listing: %s", subdir, share.source(), err)
                continue
            if subdir is not None and record is not None:  # else no valid entry, or a crash came before the record
                listed.append(ListedVolume(position, subdir, record))
                if len(listed) == limit:
                    break
        return listed

    def available_bytes(self, share: ShareRef) -> int:
        return self._files.run(share, "reading free space", lambda files: files.free_bytes())

    # -- snapshots and clones: long work, bounded as a whole by --snapshot-timeout ---------------------------------

    def pack_snapshot(
        self, share: ShareRef, subdir: str, snapshot_share: ShareRef, leaf: str, fmt: str
    ) -> PackedSnapshot:
        name = archive_name(leaf, fmt)
        # A name of its own for each pack: two controllers packing one snapshot (a leader change while the old one
        # still packs) each write a whole archive and rename it into place, never into one file at once.
        temporary = f"{SNAPSHOT_DIR}/{name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:12]}"

        def work(files: ShareFiles, source: ShareFiles, deadline: Deadline) -> PackedSnapshot:
            _make_dirs(files, SNAPSHOT_DIR, DRIVER_DIR_MODE)
            content: list[int] = []
            try:
                entries = source_entries(tree_entries(source, subdir))
                size = files.write(
                    temporary, lambda out: content.append(pack_tree(entries, out, fmt, deadline)), SNAPSHOT_MODE
                )
                files.rename(temporary, name)
            except BaseException:
                with contextlib.suppress(Exception):  # the first failure is the one to report
                    files.remove(temporary)
                raise
            return PackedSnapshot(size, content[-1])

        return self._long(("pack", snapshot_share, leaf), snapshot_share, f"packing snapshot {leaf!r}", work, share)

    def write_snapshot_record(self, share: ShareRef, leaf: str, record: SnapshotRecord) -> None:
        def work(files: ShareFiles) -> None:
            _make_dirs(files, SNAPSHOT_DIR, DRIVER_DIR_MODE)
            files.write_atomically(f"{SNAPSHOT_DIR}/{record_file(leaf)}", record.to_json(), SNAPSHOT_MODE)

        self._files.run(share, f"writing the record of snapshot {leaf!r}", work)

    def read_snapshot_record(self, share: ShareRef, leaf: str) -> SnapshotRecord | None:
        raw = self._read(share, f"{SNAPSHOT_DIR}/{record_file(leaf)}", f"the record of snapshot {leaf!r}")
        return _parsed(SnapshotRecord.from_json, raw, f"the record of snapshot {leaf!r}")

    def list_snapshot_records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        def work(files: ShareFiles) -> list[tuple[str, SnapshotRecord]]:
            records = []
            for entry in sorted(files.list(SNAPSHOT_DIR), key=lambda e: e.path):
                leaf, path = entry.path.removesuffix(".json"), f"{SNAPSHOT_DIR}/{entry.path}"
                if entry.kind != FILE or not entry.path.endswith(".json") or not is_leaf(leaf):
                    continue
                try:
                    record = _parsed(SnapshotRecord.from_json, files.read(path, RECORD_LIMIT), f"snapshot {leaf!r}")
                except (StorageFailed, Obstructed) as err:
                    log.warning("skipping a record on %s: %s", share.source(), err)
                    continue
                if record is not None:  # gone since it was listed
                    records.append((leaf, record))
            return records

        return self._files.run(share, "listing snapshots", work)

    def remove_snapshot(self, share: ShareRef, leaf: str) -> None:
        own = {record_file(leaf), *(archive_name(leaf, fmt) for fmt in FORMATS)}

        def work(files: ShareFiles) -> None:
            files.remove(f"{SNAPSHOT_DIR}/{record_file(leaf)}")  # first: the snapshot stops existing
            for entry in files.list(SNAPSHOT_DIR):  # then its archives, and what writes cut short left
                if entry.path in own or any(entry.path.startswith(f"{name}.tmp") for name in own):
                    files.remove(f"{SNAPSHOT_DIR}/{entry.path}")

        self._refuse_while(("pack", share, leaf), f"snapshot {leaf!r} is still being packed")
        self._files.run(share, f"removing snapshot {leaf!r}", work)

    def restore_snapshot(self, snapshot_share: ShareRef, leaf: str, fmt: str, share: ShareRef, subdir: str) -> None:
        def work(files: ShareFiles, source: ShareFiles, deadline: Deadline) -> None:
            with reading_source():
                opened = source.open(f"{SNAPSHOT_DIR}/{archive_name(leaf, fmt)}")
            if opened is None:
                raise StorageFailed(f"the archive of snapshot {leaf!r} is missing")
            with opened:
                unpack_tree(checked(opened, source=True), TreeWriter(files, subdir), deadline)

        self._long(("fill", share, subdir), share, f"restoring snapshot {leaf!r} into {subdir!r}", work, snapshot_share)

    def copy_volume(self, source_share: ShareRef, source_subdir: str, share: ShareRef, subdir: str) -> None:
        def work(files: ShareFiles, source: ShareFiles, deadline: Deadline) -> None:
            copy_tree(source_entries(tree_entries(source, source_subdir)), TreeWriter(files, subdir), deadline)

        self._long(("fill", share, subdir), share, f"copying {source_subdir!r} into {subdir!r}", work, source_share)

    def _long(self, key: Busy, share: ShareRef, what: str, work: LongWork[T], source: ShareRef) -> T:
        """Long work, one at a time per key, busy while the call or any run of the work goes on. A fill run again
        (after a lost connection) first empties the directory of what the broken run wrote."""
        with self._guard:
            if key in self._busy:
                raise OperationInFlight(f"{what} on {share.source()} is still running; try again later")
            self._busy[key] = 1
        runs = 0

        def run(files: ShareFiles, source_files: ShareFiles, deadline: Deadline) -> T:
            nonlocal runs
            runs += 1
            self._hold(key, 1)
            try:
                if runs > 1 and key[0] == "fill":
                    files.remove_tree(key[2])
                    files.make_dir(key[2], 0o700)
                return work(files, source_files, deadline)
            finally:
                self._hold(key, -1)

        try:
            return self._files.run_long(share, what, run, source)
        finally:
            self._hold(key, -1)

    def _hold(self, key: Busy, change: int) -> None:
        with self._guard:
            self._busy[key] += change
            if not self._busy[key]:
                del self._busy[key]

    def _refuse_while(self, key: Busy, doing: str) -> None:
        with self._guard:
            if key in self._busy:
                raise OperationInFlight(f"{doing}; try again later")


# -- the layout's rules, on any file system ------------------------------------------------------------------------


def _parsed(parse: Callable[[bytes], T], raw: bytes | None, what: str) -> T | None:
    """A record read; unreadable is an error (StorageFailed), never taken for a missing one."""
    if raw is None:
        return None
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise StorageFailed(f"{what} is unreadable") from err


def _indexed_subdir(entry: str, raw: bytes | None) -> str | None:
    """The subdir an index entry holds, or None unless it is a valid one that hashes to the entry's own name."""
    try:
        subdir = relative_subpath(raw.decode("utf-8"), "indexed subdir", new=False) if raw is not None else None
    except (UnicodeDecodeError, InvalidArgument):
        return None
    return subdir if subdir is not None and index_entry(subdir) == entry else None


def _index(files: ShareFiles, subdir: str) -> None:
    """Make subdir's index entry unless a valid one exists: one exclusive create on the usual path. Anything but a
    regular file in its place (a link, a fifo) is removed, itself, and the entry made afresh: refusing would fail
    every later write of this volume's record over something planted in the driver's directory; a directory is
    refused."""
    entry = index_entry(subdir)
    path, data = f"{INDEX_DIR}/{entry}", subdir.encode("utf-8", errors="surrogatepass")

    def create() -> None:
        files.write(path, lambda out: out.write(data), RECORD_MODE, exclusive=True, durable=False)

    try:
        return create()
    except FileNotFoundError:  # a share's first volume: the index directories are made once
        _make_dirs(files, INDEX_DIR, DRIVER_DIR_MODE)
        return create()
    except FileExistsError:
        pass
    try:
        if _indexed_subdir(entry, files.read(path, ENTRY_LIMIT)) is not None:
            return  # kept as it is, so the volume keeps its place in listings
    except Obstructed:
        if _is_dir(files, path):
            raise
    files.remove(path)  # half-written by a crash, or no regular file
    create()


def _make_dirs(files: ShareFiles, path: str, mode: int | None = None) -> None:
    """path and its missing parents; one that is there is left as it is (a link or a file: the next step refuses)."""
    parts = path.split("/") if path else []
    for depth in range(1, len(parts) + 1):
        try:
            files.make_dir("/".join(parts[:depth]), mode)
        except FileExistsError:
            pass


def _exists(files: ShareFiles, path: str) -> bool:
    """Whether anything (a link too, never followed) is at path."""
    try:
        files.stat(path)
    except FileNotFoundError:
        return False
    return True


def _is_dir(files: ShareFiles, path: str) -> bool:
    """Whether a directory, not a link to one, is at path; False when nothing is, or something but a directory is
    on the way (no directory can be below a file, a link or a FIFO)."""
    try:
        return files.stat(path).kind == DIRECTORY
    except (FileNotFoundError, Obstructed):
        return False


# -- the trees of pack, restore and copy: walked and built through ShareFiles, so never through a link -------------


def tree_entries(files: ShareFiles, top: str) -> Iterator[Entry]:
    """The tree below the directory top, parents first ('.' is the top): links as links, never followed; a directory
    gone or swapped for a link while walking is skipped; devices, fifos and sockets are left out."""
    entry = files.stat(top)
    if entry.kind != DIRECTORY:
        raise Obstructed(f"{top!r} is a {kind_name(entry.kind)}, not a directory")
    yield dataclasses.replace(entry, path=".")
    yield from _below(files, top, "")


def _below(files: ShareFiles, directory: str, prefix: str) -> Iterator[Entry]:
    for entry in sorted(files.list(directory), key=lambda e: e.path):
        path, remote = prefix + entry.path, posixpath.join(directory, entry.path)
        if entry.kind == DIRECTORY:
            yield dataclasses.replace(entry, path=path)
            try:
                yield from _below(files, remote, path + "/")
            except Obstructed:  # swapped for something else since it was listed
                continue
        elif entry.kind == SYMLINK:
            yield dataclasses.replace(entry, path=path)
        elif entry.kind == FILE:
            yield dataclasses.replace(entry, path=path, open=_opener(files, remote))
        else:
            log.info("not archiving %s: a device, fifo or socket", path)


def _opener(files: ShareFiles, path: str) -> Callable[[], ContextManager[BinaryIO]]:
    """A file of the walk (always the side read from): failures to open or read it are raised as SourceFailed."""

    @contextlib.contextmanager
    def opened() -> Iterator[BinaryIO]:
        with reading_source():
            handle = files.open(path)
            if handle is None:
                raise FileNotFoundError(f"{path!r} is gone")
        with handle:
            yield checked(handle, source=True)

    return opened


class TreeWriter:
    """Builds a tree (unpack, copy) in an existing directory of a share, through its files: never through a link.
    New directories and files are private (0700, 0600) until ``finish`` gives them their own modes."""

    def __init__(self, files: ShareFiles, top: str) -> None:
        self._files, self._top = files, top

    def _path(self, path: str) -> str:
        return self._top if path == "." else posixpath.join(self._top, path)

    def directory(self, path: str) -> None:
        try:
            self._files.make_dir(self._path(path), 0o700)
        except FileExistsError:
            if not _is_dir(self._files, self._path(path)):
                raise Obstructed(f"{path!r} exists and is not a directory") from None

    def file(self, path: str, data: BinaryIO) -> None:
        self._files.write(self._path(path), lambda out: shutil.copyfileobj(data, out, CHUNK), 0o600, durable=False)

    def symlink(self, path: str, target: str) -> None:
        self._files.symlink(self._path(path), target)

    def finish(self, path: str, entry: Entry) -> None:
        self._files.set_attributes(self._path(path), entry)
