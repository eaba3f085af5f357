"""JsonFilePublicationStore: one small JSON file per published target, in a node-local state directory."""

from __future__ import annotations

import hashlib
import os
import threading

from domain.errors import InvalidArgument, StorageFailed
from domain.model import Publication
from ports.publications import PublicationStore

_SUFFIX = ".json"
_WRITER_LOCKS = 64
MAX_RECORD_BYTES = 1 << 20
"""The most a record may take, and the most get() reads. A request within the gRPC size limits makes a record of
about 150 KiB at most (a 16 KiB id of control characters, which JSON escapes to 6 bytes each; a target of PATH_MAX
and a source of about 5 KiB, escaped to 3 bytes a byte; 20 KiB of mount options); put() refuses anything larger
rather than write what it could not read back, which would leave the target's mount impossible to remove."""


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
    """

    def __init__(self, state_dir: str, kind: str = "publications") -> None:
        # kind: "publications" (targets) or "stagings" (staging paths), each in a directory of its own, so a
        # record of one kind is never read as the other.
        self._dir = os.path.join(os.path.abspath(state_dir), kind)
        self._writing = tuple(threading.Lock() for _ in range(_WRITER_LOCKS))

    def _path(self, target: str) -> str:
        return os.path.join(self._dir, hashlib.sha256(target.encode("utf-8", errors="surrogatepass")).hexdigest() + _SUFFIX)

    def _writer(self, path: str) -> threading.Lock:
        """The lock of every record whose name (a sha256) starts with the same two hex digits as path's."""
        return self._writing[int(os.path.basename(path)[:2], 16) % _WRITER_LOCKS]

    def get(self, target: str) -> Publication | None:
        try:
            with open(self._path(target), "rb") as handle:
                raw = handle.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
            publication = Publication.from_json(raw)
        except (ValueError, KeyError, TypeError) as err:
            raise StorageFailed(f"the publication record of {target} in {self._dir} is unreadable") from err
        return publication if publication.target == target else None

    def put(self, publication: Publication) -> None:
        raw = publication.to_json()
        if len(raw) > MAX_RECORD_BYTES:
            raise InvalidArgument(
                f"the record of what is published at {publication.target[:200]!r} would take {len(raw)} bytes, "
                f"more than the {MAX_RECORD_BYTES} this driver reads back; nothing was written"
            )
        os.makedirs(self._dir, mode=0o700, exist_ok=True)
        path = self._path(publication.target)
        temporary = f"{path}.tmp"
        with self._writer(path):
            with open(temporary, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)

    def remove(self, target: str) -> None:
        path = self._path(target)
        with self._writer(path):
            for name in (path, f"{path}.tmp"):
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass

    def count(self) -> int:
        try:
            return sum(1 for name in os.listdir(self._dir) if name.endswith(_SUFFIX))
        except FileNotFoundError:
            return 0
