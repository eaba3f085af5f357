"""JsonFilePublicationStore: one small JSON file per published target, in a node-local state directory."""

from __future__ import annotations

import hashlib
import logging
import os
import threading

from domain.errors import InvalidArgument, ResourceExhausted, StorageFailed
from domain.model import Publication
from ports.publications import Admission, PublicationStore

log = logging.getLogger(__name__)

_SUFFIX = ".json"
_WRITER_LOCKS = 64
MAX_RECORD_BYTES = 1 << 20
"""The most a record may take, and the most get() reads. A request within the gRPC size limits makes a record of
about 150 KiB at most (a 16 KiB id of control characters, which JSON escapes to 6 bytes each; a target of PATH_MAX
and a source of about 5 KiB, escaped to 3 bytes a byte; 20 KiB of mount options); put() refuses anything larger
rather than write what it could not read back, which would leave the target's mount impossible to remove."""
MAX_RECORDS = 65536
"""Publications one store keeps (far above kubelet's pods per node): what bounds the index held in memory."""


class JsonFilePublicationStore(PublicationStore):
    """Nothing lives only in memory: a restarted node plugin reads back what it published, and where.

    A record is written to ``<sha256(target)>.json.tmp``, fsynced, and renamed over ``<sha256(target)>.json``; a
    process killed in between leaves that fixed-name temporary file, which the next write of the same target
    overwrites. One writer per record at a time (the temporary name is fixed), records of different targets in
    parallel: each write waits for its fsync, and a lock shared by every target made a node's publishes queue
    behind one another's disk flushes.

    The record is fsynced, so a power loss never leaves one half written (unreadable, its target could never be
    unpublished); the directory is not, so a record written or removed just before a power loss may be missing
    or back afterwards. Either is harmless: a power loss took every mount with it, and the use cases converge
    from a record without its mount, and from a mount-free target without a record.

    The publications of a volume are found through an index in memory (target -> volume id, and back), read from
    the records once, on first use after a start, and kept with every put and remove: at most MAX_RECORDS
    entries, a volume id and a path each. A put that admits (``admit``) holds its volume's lock (one of 64,
    striped by volume id) from the admission to the index update, so two publications of one volume are never
    admitted side by side.
    """

    def __init__(self, state_dir: str, kind: str = "publications") -> None:
        # kind: "publications" (targets) or "stagings" (staging paths), each in a directory of its own, so a
        # record of one kind is never read as the other.
        self._dir = os.path.join(os.path.abspath(state_dir), kind)
        self._writing = tuple(threading.Lock() for _ in range(_WRITER_LOCKS))
        self._admitting = tuple(threading.Lock() for _ in range(_WRITER_LOCKS))
        self._index_guard = threading.Lock()
        self._by_target: dict[str, str] | None = None  # None until read from the records
        self._by_volume: dict[str, set[str]] = {}

    def _path(self, target: str) -> str:
        return os.path.join(self._dir, hashlib.sha256(target.encode("utf-8", errors="surrogatepass")).hexdigest() + _SUFFIX)

    def _writer(self, path: str) -> threading.Lock:
        """The lock of every record whose name (a sha256) starts with the same two hex digits as path's."""
        return self._writing[int(os.path.basename(path)[:2], 16) % _WRITER_LOCKS]

    def get(self, target: str) -> Publication | None:
        publication = self._read(self._path(target), target)
        return publication if publication is not None and publication.target == target else None

    def _read(self, path: str, what: str) -> Publication | None:
        try:
            raw = _read_at_most(path, MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
            return Publication.from_json(raw)
        except (ValueError, KeyError, TypeError) as err:
            raise StorageFailed(f"the publication record of {what} in {self._dir} is unreadable") from err

    def put(self, publication: Publication, admit: Admission | None = None) -> None:
        raw = publication.to_json()
        if len(raw) > MAX_RECORD_BYTES:
            raise InvalidArgument(
                f"the record of what is published at {publication.target[:200]!r} would take {len(raw)} bytes, "
                f"more than the {MAX_RECORD_BYTES} this driver reads back; nothing was written"
            )
        self._index()
        with self._admitting[hash(publication.volume_id) % _WRITER_LOCKS]:
            self._check_room(publication.target)
            if admit is not None:
                admit([p for p in self.of_volume(publication.volume_id) if p.target != publication.target])
            path = self._path(publication.target)
            temporary = f"{path}.tmp"
            with self._writer(path):
                try:
                    _write_synced(temporary, raw)
                except FileNotFoundError:  # the first record, or the directory was removed since
                    os.makedirs(self._dir, mode=0o700, exist_ok=True)
                    _write_synced(temporary, raw)
                os.replace(temporary, path)
                self._indexed(publication.target, publication.volume_id)

    def remove(self, target: str) -> None:
        path = self._path(target)
        with self._writer(path):
            for name in (path, f"{path}.tmp"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
            self._indexed(target, None)

    def of_volume(self, volume_id: str) -> list[Publication]:
        self._index()
        with self._index_guard:
            targets = sorted(self._by_volume.get(volume_id, ()))
        found = (self.get(target) for target in targets)
        return [p for p in found if p is not None and p.volume_id == volume_id]

    def _index(self) -> None:
        """target -> volume id of every record, and back, read from the records the first time."""
        with self._index_guard:
            if self._by_target is None:
                self._by_target = {}
                for publication in self._every_record():
                    self._by_target[publication.target] = publication.volume_id
                    self._by_volume.setdefault(publication.volume_id, set()).add(publication.target)

    def _check_room(self, target: str) -> None:
        with self._index_guard:
            if self._by_target is not None and target not in self._by_target and len(self._by_target) >= MAX_RECORDS:
                raise ResourceExhausted(f"this node already keeps {MAX_RECORDS} records in {self._dir}")

    def _every_record(self) -> list[Publication]:
        try:
            names = [name for name in os.listdir(self._dir) if name.endswith(_SUFFIX)]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            path = os.path.join(self._dir, name)
            try:
                publication = self._read(path, name)
            except (StorageFailed, OSError) as err:
                log.warning("publication record %s is left out of the index: %s", path, err)
                continue
            if publication is not None and self._path(publication.target) == path:
                found.append(publication)
        return found

    def _indexed(self, target: str, volume_id: str | None) -> None:
        """The index after a write (volume_id) or a removal (None) of target's record."""
        with self._index_guard:
            if self._by_target is None:
                return  # not read yet: it will be, from the records
            previous = self._by_target.pop(target, None)
            if previous is not None:
                targets = self._by_volume[previous]
                targets.discard(target)
                if not targets:
                    del self._by_volume[previous]
            if volume_id is not None:
                self._by_target[target] = volume_id
                self._by_volume.setdefault(volume_id, set()).add(target)

    def count(self) -> int:
        try:
            return sum(1 for name in os.listdir(self._dir) if name.endswith(_SUFFIX))
        except FileNotFoundError:
            return 0


def _read_at_most(path: str, limit: int) -> bytes:
    """Up to limit bytes of the file at path, with plain system calls: no buffered file object (whose fstat, ioctl
    and lseek are three more calls, each a chance for another thread to take the interpreter)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_synced(path: str, raw: bytes) -> None:
    """raw as the whole content of the file at path, on disk (fsynced) when this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
