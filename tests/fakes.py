"""Fakes that subclass the ports and record state; tests assert on that state."""

from __future__ import annotations

import datetime
import hashlib
import itertools
from typing import Sequence

from adapters.storage.share_storage import check_rename, record_path
from domain.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    Obstructed,
    OperationInFlight,
    StorageFailed,
    Unavailable,
)
from domain.events import Event
from domain.model import FilesystemUsage, ListedVolume, ListPosition, Owner, Publication, ShareRef, TreeUsage, VolumeRecord
from domain.snapshot_model import PackedSnapshot, SnapshotRecord
from ports.clock import Clock
from ports.events import EventSink
from ports.mounter import Mounter
from ports.publications import Admission, PublicationStore
from ports.usage import UsageMeter
from ports.storage import Obstacle, ShareStorage


def _ancestors(subdir: str) -> list[str]:
    parts = subdir.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class FakeShareStorage(ShareStorage):
    def __init__(self) -> None:
        self.dirs: dict[tuple[ShareRef, str], int | None] = {}
        self.records: dict[tuple[ShareRef, str], VolumeRecord] = {}
        self.exports: set[ShareRef] | None = None  # None: every share is exported
        self.closed = False
        self.files: dict[tuple[ShareRef, str], bytes] = {}  # volume content: path below the share -> bytes
        self.archives: dict[tuple[ShareRef, str], dict[str, bytes | None]] = {}  # relative path -> bytes, None: dir
        self.snapshot_records: dict[tuple[ShareRef, str], SnapshotRecord] = {}
        self.fail_next_fill: Exception | None = None  # raised half way through the next restore or copy
        # Restores and copies running now, as the adapters keep them busy: (share, subdir). A test may add one to
        # stand for a fill that outlived its caller.
        self.filling: set[tuple[ShareRef, str]] = set()
        # The index, kept apart from the records as on disk: (share, subdir) -> when its entry was made.
        self.index: dict[tuple[ShareRef, str], int] = {}
        self.free: dict[ShareRef, int] = {}  # available_bytes; a share not set here has none free
        self.owners: dict[tuple[ShareRef, str], tuple[int, int]] = {}  # directories given an owner: (uid, gid)
        self.refuse_chown = False  # the server squashes root: every chown is refused
        # What is neither a directory nor a record, planted by a test: (share, path) -> "regular file",
        # "symbolic link" or "FIFO, socket or device". Refused in the way of a directory, never followed.
        self.planted: dict[tuple[ShareRef, str], str] = {}
        self._clock = itertools.count(1)

    def _blocked(self, share: ShareRef, subdir: str, itself: bool = True) -> str | None:
        """The planted path on the way to subdir (or at it, when itself), if any."""
        on_the_way = _ancestors(subdir) + ([subdir] if itself else [])
        return next((path for path in on_the_way if (share, path) in self.planted), None)

    def _refuse_blocked(self, share: ShareRef, subdir: str, itself: bool = True) -> None:
        blocked = self._blocked(share, subdir, itself)
        if blocked is not None:
            raise Obstructed(f"{blocked!r} is a {self.planted[(share, blocked)]}, not a directory")

    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None, owner: Owner = Owner()) -> None:
        self._refuse_blocked(share, subdir)
        for parent in _ancestors(subdir):
            self.dirs.setdefault((share, parent), None)
        key = (share, subdir)
        if key not in self.dirs or mode is not None:
            self.dirs[key] = mode
        if owner:
            if self.refuse_chown:
                raise FailedPrecondition(f"chown of {subdir!r}: Operation not permitted (root squashing)")
            uid, gid = self.owners.get(key, (0, 0))
            self.owners[key] = (uid if owner.uid is None else owner.uid, gid if owner.gid is None else owner.gid)

    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        self._refuse_blocked(share, subdir)
        if (share, subdir) in self.filling:
            raise OperationInFlight(f"{subdir!r} on {share.source()} is still being filled; try again later")
        for key in [k for k in self.dirs if k[0] == share and (k[1] == subdir or k[1].startswith(subdir + "/"))]:
            del self.dirs[key]
            self.owners.pop(key, None)
        for key in [k for k in self.files if k[0] == share and k[1].startswith(subdir + "/")]:
            del self.files[key]
        # The records of volumes inside live in the removed tree (the contract suite found this).
        for key in [k for k in self.records if k[0] == share and k[1].startswith(subdir + "/")]:
            del self.records[key]

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        check_rename(subdir, new_subdir)
        for key in [k for k in self.dirs if k[0] == share and (k[1] == subdir or k[1].startswith(subdir + "/"))]:
            self.dirs[(share, new_subdir + key[1][len(subdir) :])] = self.dirs.pop(key)
        for key in [k for k in self.records if k[0] == share and k[1].startswith(subdir + "/")]:
            self.records[(share, new_subdir + key[1][len(subdir) :])] = self.records.pop(key)

    def move_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        if (share, subdir) not in self.dirs:
            return
        if (share, new_subdir) in self.dirs or (share, new_subdir) in self.files:
            raise FailedPrecondition(f"{new_subdir!r} already exists on {share.source()}; {subdir!r} was not moved")
        for parent in _ancestors(new_subdir):
            self.dirs.setdefault((share, parent), None)

        def moved(key: tuple[ShareRef, str]) -> tuple[ShareRef, str]:
            return share, new_subdir + key[1][len(subdir) :]

        for key in [k for k in self.dirs if k[0] == share and (k[1] == subdir or k[1].startswith(subdir + "/"))]:
            self.dirs[moved(key)] = self.dirs.pop(key)
        for key in [k for k in self.files if k[0] == share and k[1].startswith(subdir + "/")]:
            self.files[moved(key)] = self.files.pop(key)
        for key in [k for k in self.records if k[0] == share and k[1].startswith(subdir + "/")]:
            self.records[moved(key)] = self.records.pop(key)  # a record inside moves along; its own stays beside

    def volume_below(self, share: ShareRef, subdir: str) -> str | None:
        below = sorted(s for (at, s) in self.index if at == share and s.startswith(subdir + "/") and (at, s) in self.records)
        return below[0] if below else None

    def exists(self, share: ShareRef, subdir: str) -> bool:
        return (share, subdir) in self.dirs

    def in_the_way(self, share: ShareRef, subdir: str) -> Obstacle | None:
        blocked = self._blocked(share, subdir)
        if blocked is not None:
            return Obstacle(blocked, self.planted[(share, blocked)])
        if (share, subdir) in self.dirs:
            return Obstacle(subdir, "directory")
        if (share, record_path(subdir)) in self.planted:
            return Obstacle(record_path(subdir), self.planted[(share, record_path(subdir))])
        return None

    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        if self._blocked(share, subdir, itself=False) is not None:
            return None
        return self.records.get((share, subdir))

    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        self._require_reachable(share)
        self._refuse_blocked(share, subdir, itself=False)
        for parent in _ancestors(subdir):  # the record lives in subdir's parent, made if missing
            self.dirs.setdefault((share, parent), None)
        self.index.setdefault((share, subdir), next(self._clock))
        self.records[(share, subdir)] = record

    def remove_record(self, share: ShareRef, subdir: str) -> None:
        self.records.pop((share, subdir), None)
        self.index.pop((share, subdir), None)

    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        self._require_reachable(share)
        listed = []
        for (indexed_share, subdir), created in self.index.items():
            record = self.records.get((share, subdir))
            position = ListPosition(created, hashlib.sha256(subdir.encode()).hexdigest())
            if indexed_share == share and record is not None and (after is None or position > after):
                listed.append(ListedVolume(position, subdir, record))
        listed.sort(key=lambda volume: volume.position)
        return listed[:limit] if limit else listed

    def available_bytes(self, share: ShareRef) -> int:
        self._require_reachable(share)
        return self.free.get(share, 0)

    def share_reachable(self, share: ShareRef) -> bool:
        return self.exports is None or share in self.exports

    def _require_reachable(self, share: ShareRef) -> None:
        if not self.share_reachable(share):
            raise Unavailable(f"share {share.source()} cannot be reached")

    def shares_held(self) -> int:
        return len({share for share, _ in self.dirs})

    def _content(self, share: ShareRef, subdir: str) -> dict[str, bytes | None]:
        prefix = subdir + "/"
        content: dict[str, bytes | None] = {k[1][len(prefix) :]: None for k in self.dirs if k[0] == share and k[1].startswith(prefix)}
        content.update({k[1][len(prefix) :]: v for k, v in self.files.items() if k[0] == share and k[1].startswith(prefix)})
        return content

    def _fill(self, share: ShareRef, subdir: str, content: dict[str, bytes | None]) -> None:
        if (share, subdir) in self.filling:
            raise OperationInFlight(f"filling {subdir!r} on {share.source()} is still running; try again later")
        self.filling.add((share, subdir))
        try:
            self._fill_now(share, subdir, content)
        finally:
            self.filling.discard((share, subdir))

    def _fill_now(self, share: ShareRef, subdir: str, content: dict[str, bytes | None]) -> None:
        for n, (path, data) in enumerate(sorted(content.items())):
            if self.fail_next_fill is not None and n == len(content) // 2:
                error, self.fail_next_fill = self.fail_next_fill, None
                raise error
            if data is None:
                self.dirs[(share, f"{subdir}/{path}")] = None
            else:
                self.files[(share, f"{subdir}/{path}")] = data

    def pack_snapshot(self, share: ShareRef, subdir: str, snapshot_share: ShareRef, leaf: str, fmt: str) -> PackedSnapshot:
        self._refuse_blocked(share, subdir)
        if (share, subdir) not in self.dirs:
            raise StorageFailed(f"{subdir!r} does not exist")
        content = self._content(share, subdir)
        self.archives[(snapshot_share, leaf)] = content
        size = sum(len(v or b"") for v in content.values())
        return PackedSnapshot(512 + size, size)

    def write_snapshot_record(self, share: ShareRef, leaf: str, record: SnapshotRecord) -> None:
        self.snapshot_records[(share, leaf)] = record

    def read_snapshot_record(self, share: ShareRef, leaf: str) -> SnapshotRecord | None:
        self._require_reachable(share)
        return self.snapshot_records.get((share, leaf))

    def list_snapshot_records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        self._require_reachable(share)
        return sorted((leaf, record) for (s, leaf), record in self.snapshot_records.items() if s == share)

    def remove_snapshot(self, share: ShareRef, leaf: str) -> None:
        self.snapshot_records.pop((share, leaf), None)
        self.archives.pop((share, leaf), None)

    def restore_snapshot(self, snapshot_share: ShareRef, leaf: str, fmt: str, share: ShareRef, subdir: str) -> None:
        content = self.archives.get((snapshot_share, leaf))
        if content is None:
            raise StorageFailed(f"the archive of snapshot {leaf!r} is missing")
        self._fill(share, subdir, content)

    def copy_volume(self, source_share: ShareRef, source_subdir: str, share: ShareRef, subdir: str) -> None:
        self._refuse_blocked(source_share, source_subdir)
        self._fill(share, subdir, self._content(source_share, source_subdir))

    def close(self) -> None:
        self.closed = True


class FakeMounter(Mounter):
    def __init__(self) -> None:
        self.mounts: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.targets: set[str] = set()
        self.ready = True
        self.fail_next_mount: Exception | None = None
        self.stale: set[str] = set()  # mounts that answer a stat with ESTALE, until unmounted
        self.hung: set[str] = set()  # mounts whose stats never return
        self.usage = FilesystemUsage(10 << 30, 6 << 30, 4 << 30, 1000, 900, 100)

    def mount(self, source: str, target: str, options: Sequence[str]) -> None:
        if self.fail_next_mount is not None:
            error, self.fail_next_mount = self.fail_next_mount, None
            raise error
        if target not in self.targets:
            raise NotFound(f"mount point {target} does not exist")
        self.mounts[target] = (source, tuple(options))

    def bind_mount(self, source: str, target: str, readonly: bool) -> None:
        if source not in self.mounts:
            raise NotFound(f"bind source {source} is not mounted")
        self.mount(source, target, ("bind", "ro") if readonly else ("bind",))

    def unmount(self, target: str) -> None:
        self.mounts.pop(target, None)
        self.stale.discard(target)
        self.hung.discard(target)

    def is_mount_point(self, path: str) -> bool:
        return path in self.mounts

    def mounted_source(self, path: str) -> str | None:
        mounted = self.mounts.get(path)
        if mounted is not None and "bind" in mounted[1]:
            return self.mounted_source(mounted[0])  # as the kernel shows a bind: the source of what it binds
        return None if mounted is None else mounted[0]

    def is_stale(self, path: str) -> bool:
        return path in self.stale

    def filesystem_usage(self, path: str) -> FilesystemUsage:
        if path in self.hung:
            raise DeadlineExceeded(f"statvfs of {path} did not finish within 30 s")
        if path in self.stale:
            raise Unavailable(f"cannot stat {path}: Stale file handle")
        return self.usage

    def make_target(self, path: str) -> bool:
        made = path not in self.targets
        self.targets.add(path)
        return made

    def remove_target(self, path: str) -> bool:
        present = path in self.targets
        self.targets.discard(path)
        return present

    def check_ready(self) -> None:
        if not self.ready:
            raise FailedPrecondition("mount.nfs is not installed")


class FakePublicationStore(PublicationStore):
    def __init__(self) -> None:
        self.publications: dict[str, Publication] = {}

    def get(self, target: str) -> Publication | None:
        return self.publications.get(target)

    def put(self, publication: Publication, admit: Admission | None = None) -> None:
        if admit is not None:
            admit([p for p in self.of_volume(publication.volume_id) if p.target != publication.target])
        self.publications[publication.target] = publication

    def of_volume(self, volume_id: str) -> list[Publication]:
        return sorted((p for p in self.publications.values() if p.volume_id == volume_id), key=lambda p: p.target)

    def remove(self, target: str) -> None:
        self.publications.pop(target, None)

    def count(self) -> int:
        return len(self.publications)


class FakeUsageMeter(UsageMeter):
    def __init__(self) -> None:
        self.trees: dict[str, TreeUsage] = {}  # by key: what the last walk of that tree found
        self.asked: list[tuple[str, str, str, int]] = []  # (key, path, server, capacity) of every ask

    def usage(self, key: str, path: str, server: str, capacity_bytes: int) -> TreeUsage | None:
        self.asked.append((key, path, server, capacity_bytes))
        return self.trees.get(key)

    def close(self) -> None:
        pass


class FakeClock(Clock):
    def __init__(self, now: datetime.datetime | None = None) -> None:
        self.current = now or datetime.datetime(2026, 11, 24, 12, 0, 0, tzinfo=datetime.timezone.utc)
        self.elapsed = 0.0

    def now(self) -> datetime.datetime:
        return self.current

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        """Time passes, on both clocks."""
        self.elapsed += seconds
        self.current += datetime.timedelta(seconds=seconds)


class RecordingEvents(EventSink):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)
