"""UserspaceShareStorage: speak NFS from user space (nfs-rs), so the controller needs no mount and no privilege."""

from __future__ import annotations

import errno
import importlib
import io
import logging
import os
import posixpath
import threading
import uuid
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, TypeVar, cast

import tenacity

from adapters.storage.archive import (
    DIRECTORY,
    FILE,
    SYMLINK,
    Deadline,
    Entry,
    SourceFailed,
    SourceReader,
    copy_tree,
    pack_tree,
    reading_source,
    source_entries,
    unpack_tree,
)
from adapters.storage.layout import (
    DRIVER_DIR_MODE,
    ENTRY_LIMIT,
    INDEX_DIR,
    RECORD_LIMIT,
    RecordWriters,
    archive_temporary,
    index_entry,
    indexed_subdir,
    is_temporary,
    listed_volumes,
    record_name,
    snapshot_files,
    snapshot_record,
    snapshot_record_leaf,
    snapshot_records,
    volume_record,
)
from domain.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    StorageFailed,
    NotFound,
    OperationInFlight,
    ResourceExhausted,
    Unavailable,
)
from domain.model import METADATA_DIR, ListedVolume, ListPosition, ShareRef, VolumeRecord
from domain.paths import join_inside
from domain.snapshot_model import SNAPSHOT_DIR, SnapshotRecord, archive_name, record_file
from ports.storage import ShareStorage

log = logging.getLogger(__name__)

NFS_VERSIONS = ("4.1", "4.0", "3")
# Over NFS the server applies the mode it is sent, with no umask: send what a 022 umask leaves of 0777,
# which is what the mount-based adapter creates under the usual umask.
_NEW_DIR_MODE = 0o755
_STATE_LOST = frozenset(
    {"NFS4ERR_STALE", "NFS3ERR_STALE", "NFS4ERR_BADSESSION", "NFS4ERR_DEADSESSION", "NFS4ERR_STALE_CLIENTID",
     "NFS4ERR_EXPIRED", "NFS4ERR_BAD_STATEID", "NFS4ERR_STALE_STATEID", "NFS4ERR_CONN_NOT_BOUND_TO_SESSION"}
)

_NO_SPACE = frozenset({"NFS4ERR_NOSPC", "NFS3ERR_NOSPC", "NFS4ERR_DQUOT", "NFS3ERR_DQUOT"})
_CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class NfsClientOptions:
    """How the adapter reaches every share: protocol, ports, AUTH_SYS identity, time bounds."""

    versions: tuple[str, ...] = ("4.1",)
    port: int | None = None  # NFS service port; None: 2049 (v4), or the portmapper's answer (v3)
    mount_port: int | None = None  # NFSv3 MOUNT service port; None: ask the portmapper
    uid: int | None = None  # AUTH_SYS identity; None: this process's own
    gid: int | None = None
    reserved_port: bool = False  # bind a source port below 1024 (needs CAP_NET_BIND_SERVICE)
    timeout: float = 30.0  # seconds to connect, and for each operation
    attempts: int = 2  # tries of an operation whose connection was lost, reconnecting in between

    def __post_init__(self) -> None:
        if not self.versions or any(v not in NFS_VERSIONS for v in self.versions):
            raise ValueError(f"NFS versions must be among {', '.join(NFS_VERSIONS)}, got {self.versions!r}")
        if self.timeout <= 0 or self.attempts < 1:
            raise ValueError("the NFS timeout must be positive and attempts at least 1")


class NfsClient(Protocol):
    """The part of nfs_rs.Client this adapter uses; paths are relative to the share."""

    def stat(self, path: str) -> Any: ...
    def mkdir(self, path: str, mode: int = ...) -> None: ...
    def chmod(self, path: str, mode: int) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def remove(self, path: str, *, missing_ok: bool = ...) -> None: ...
    def rename(self, source: str, destination: str) -> None: ...
    def chown(self, path: str, uid: int, gid: int) -> None: ...
    def utime(self, path: str, *, ns: tuple[int, int]) -> None: ...
    def symlink(self, target: str, link_path: str) -> None: ...
    def readlink(self, path: str) -> str: ...
    def scandir(self, path: str) -> Iterator[Any]: ...
    def open(self, path: str, mode: str = ...) -> Any: ...
    def fs_stat(self) -> Any: ...
    def close(self) -> None: ...


Connector = Callable[[ShareRef, NfsClientOptions], NfsClient]


def _nfs_rs() -> Any:
    try:
        return importlib.import_module("nfs_rs")
    except ImportError as err:
        raise FailedPrecondition(
            "the userspace NFS client is not installed: install nfs-csi-driver[userspace] (PyPI nfs-rs)"
        ) from err


def connect_with_nfs_rs(share: ShareRef, options: NfsClientOptions) -> NfsClient:
    """Open an nfs-rs client on the share; every call it makes is bounded by ``options.timeout``."""
    client: NfsClient = _nfs_rs().Client.connect(
        f"nfs://{share.server}{share.share}",
        versions=list(options.versions),
        nfs_port=options.port,
        mount_port=options.mount_port,
        uid=options.uid,
        gid=options.gid,
        noresvport=not options.reserved_port,
        connect_timeout=options.timeout,
        operation_timeout=options.timeout,
    )
    return client


class _ConnectionLost(Unavailable):
    """The share's connection broke; the next try reconnects."""


def _or_own(identity: int | None) -> str:
    return "of this process" if identity is None else str(identity)


def _kind(info: Any) -> str:
    """What nfs-rs says an entry is ("file", "directory", "symlink", ...): the one place its type is read."""
    return str(getattr(info.type, "value", info.type))


def _is_directory(info: Any) -> bool:
    return _kind(info) == "directory"


def _is_file(info: Any) -> bool:
    return _kind(info) == "file"


def _code(err: BaseException) -> str:
    return str(getattr(err, "code_name", "") or "")


class UserspaceShareStorage(ShareStorage):
    """One NFS client per share, opened on first use and reused; nothing is mounted.

    The server resolves each path one LOOKUP at a time, and LOOKUP never follows a symbolic link: a link on the
    way to a volume directory fails the call (NFS4ERR_SYMLINK) instead of leading elsewhere. Records use the
    mount-based adapter's layout (``.<leaf>.nfs-csi.json`` beside the directory), so both work on one share.
    """

    def __init__(
        self,
        options: NfsClientOptions = NfsClientOptions(),
        connect: Connector = connect_with_nfs_rs,
        snapshot_timeout: float = 600.0,
    ) -> None:
        self._options = options
        self._snapshot_timeout = snapshot_timeout
        self._busy: set[tuple[str, ShareRef, str]] = set()
        self._record_writers = RecordWriters()
        self._connect = connect
        self._guard = threading.Lock()
        self._share_locks: dict[ShareRef, threading.Lock] = {}
        self._clients: dict[ShareRef, NfsClient] = {}
        self._closers: list[threading.Thread] = []
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(options.attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=1.0),
            retry=tenacity.retry_if_exception_type(_ConnectionLost),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        log.info(
            "controller storage: userspace NFS %s, port %s, AUTH_SYS uid %s gid %s, %s s per call",
            ",".join(options.versions), options.port or "default", _or_own(options.uid), _or_own(options.gid), options.timeout,
        )

    def share_reachable(self, share: ShareRef) -> bool:
        try:
            self._client(share)
        except DomainError:
            return False
        return True

    def shares_held(self) -> int:
        return len(self._clients)

    # -- connections --------------------------------------------------------------------------------------------

    def _client(self, share: ShareRef) -> NfsClient:
        client = self._clients.get(share)
        if client is not None:
            return client
        if "?" in share.share or "#" in share.share:
            raise InvalidArgument(f"share {share.share!r}: the userspace NFS client cannot reach a path with '?' or '#'")
        with self._guard:
            lock = self._share_locks.setdefault(share, threading.Lock())
        with lock:
            client = self._clients.get(share)
            if client is None:
                try:
                    client = self._connect(share, self._options)
                except DomainError:
                    raise
                except Exception as err:  # noqa: BLE001 - every nfs-rs failure becomes a domain error
                    raise self._connect_error(share, err) from err
                self._clients[share] = client
                log.info("connected to share %s over NFS %s from user space", share.source(), self._options.versions)
            return client

    def _connect_error(self, share: ShareRef, err: Exception) -> DomainError:
        where = share.source()
        if isinstance(err, TimeoutError):
            return DeadlineExceeded(f"connecting to {where} took longer than {self._options.timeout} s")
        if isinstance(err, FileNotFoundError):
            return NotFound(f"share {where} is not exported by {share.server}")
        if isinstance(err, ConnectionError):
            return _ConnectionLost(f"cannot reach the NFS server of {where}: {err}")
        if isinstance(err, ValueError):
            return InvalidArgument(f"cannot address share {where}: {err}")
        return StorageFailed(f"cannot connect to {where}: {err}")

    def _drop(self, share: ShareRef, client: NfsClient) -> None:
        """Forget a broken client; close it aside, since closing waits up to a timeout on a dead server."""
        with self._guard:
            if self._clients.get(share) is client:
                del self._clients[share]

        def close() -> None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the connection is already gone
                log.debug("closing a broken client of %s failed", share.source(), exc_info=True)

        closer = threading.Thread(target=close, name="nfs-close", daemon=True)
        with self._guard:
            self._closers = [t for t in self._closers if t.is_alive()] + [closer]
        closer.start()

    def _run(self, share: ShareRef, what: str, operation: Callable[[NfsClient], T]) -> T:
        """Run one storage operation with the share's client; translate every NFS failure to a domain error."""
        for attempt in self._retrying:
            with attempt:
                client = self._client(share)
                try:
                    return operation(client)
                except DomainError:
                    raise
                except Exception as err:  # noqa: BLE001 - nfs-rs raises its own hierarchy and builtins
                    raise self._operation_error(share, client, what, err) from err
        raise AssertionError("unreachable: tenacity reraises")

    def _operation_error(self, share: ShareRef, client: NfsClient, what: str, err: Exception) -> DomainError:
        where = f"{what} on {share.source()}"
        nfs = _nfs_rs()
        if isinstance(err, TimeoutError):
            self._drop(share, client)
            return DeadlineExceeded(f"{where} took longer than {self._options.timeout} s")
        if _code(err) in _NO_SPACE or getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return ResourceExhausted(f"{where}: no space left on the share ({err})")
        if _code(err) in ("NFS4ERR_SYMLINK", "NFS3ERR_NOTDIR", "NFS4ERR_NOTDIR") or isinstance(err, NotADirectoryError):
            return StorageFailed(f"{where}: a component on the way is not a plain directory ({err})")
        # The client's connection, session or state is gone (a server restart shows as a retryable protocol
        # error that the same client keeps returning): start again with a new client. Every operation here is
        # idempotent, so repeating one whose outcome was uncertain is safe.
        lost = (
            ConnectionError, nfs.NfsClientClosedError, nfs.NfsStateLostError, nfs.NfsRetryableError,
            nfs.NfsOperationOutcomeError, nfs.NfsRpcError,
        )
        if isinstance(err, lost) or _code(err) in _STATE_LOST:
            self._drop(share, client)
            return _ConnectionLost(f"{where}: the connection to the NFS server was lost: {err}")
        return StorageFailed(f"{where} failed: {err}")

    # -- paths ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _checked(share: ShareRef, subdir: str) -> str:
        join_inside(share.share, subdir)  # lexical containment, again, at the edge
        return subdir

    @staticmethod
    def _record_path(subdir: str) -> str:
        parent, leaf = posixpath.split(subdir)
        return posixpath.join(parent, record_name(leaf))

    @staticmethod
    def _make_parents(client: NfsClient, subdir: str) -> None:
        # An existing parent that is a link or a file is left alone: the LOOKUP after it fails, and nothing is
        # created through it.
        parts = subdir.split("/")
        for depth in range(1, len(parts)):
            try:
                client.mkdir("/".join(parts[:depth]), _NEW_DIR_MODE)
            except FileExistsError:
                pass

    # -- the port -------------------------------------------------------------------------------------------------

    def create_volume_dir(self, share: ShareRef, subdir: str, mode: int | None) -> None:
        path = self._checked(share, subdir)

        def create(client: NfsClient) -> None:
            self._make_parents(client, path)
            try:
                client.mkdir(path, _NEW_DIR_MODE if mode is None else mode)
            except FileExistsError:
                pass
            if not _is_directory(client.stat(path)):
                raise StorageFailed(f"{subdir!r} on {share.source()} exists and is not a directory")
            if mode is not None:
                client.chmod(path, mode)

        self._run(share, f"creating {subdir!r}", create)

    def remove_volume_dir(self, share: ShareRef, subdir: str) -> None:
        path = self._checked(share, subdir)

        def remove(client: NfsClient) -> None:
            try:
                info = client.stat(path)
            except FileNotFoundError:
                return
            if not _is_directory(info):
                raise StorageFailed(f"{subdir!r} is not a directory; refusing to remove it")
            self._remove_tree(client, path)

        with self._guard:
            if ("fill", share, subdir) in self._busy:  # a restore or copy still writing there: not raced
                raise OperationInFlight(f"{subdir!r} on {share.source()} is still being filled; try again later")
        self._run(share, f"removing {subdir!r}", remove)

    @staticmethod
    def _remove_tree(client: NfsClient, top: str) -> None:
        """Depth first; a link inside is removed as a link, never followed (READDIR reports the entry itself)."""
        pending: list[tuple[str, bool]] = [(top, False)]
        while pending:
            path, listed = pending.pop()
            if listed:
                try:
                    client.rmdir(path)
                except FileNotFoundError:
                    pass
                continue
            pending.append((path, True))
            try:
                entries = list(client.scandir(path))
            except FileNotFoundError:
                pending.pop()
                continue
            for entry in entries:
                if entry.name in (".", ".."):
                    continue
                child = posixpath.join(path, entry.name)
                if _is_directory(entry.info):
                    pending.append((child, False))
                else:
                    client.remove(child, missing_ok=True)

    def rename_volume_dir(self, share: ShareRef, subdir: str, new_subdir: str) -> None:
        if posixpath.dirname(subdir) != posixpath.dirname(new_subdir):
            raise StorageFailed("a volume directory is only renamed within its parent")
        source, target = self._checked(share, subdir), self._checked(share, new_subdir)

        def rename(client: NfsClient) -> None:
            try:
                client.rename(source, target)
            except FileNotFoundError:
                pass

        self._run(share, f"renaming {subdir!r}", rename)

    def exists(self, share: ShareRef, subdir: str) -> bool:
        path = self._checked(share, subdir)

        def exists(client: NfsClient) -> bool:
            try:
                return _is_directory(client.stat(path))
            except FileNotFoundError:
                return False

        return self._run(share, f"looking up {subdir!r}", exists)

    def read_record(self, share: ShareRef, subdir: str) -> VolumeRecord | None:
        path = self._record_path(self._checked(share, subdir))

        def read(client: NfsClient) -> bytes | None:
            return _read_small(client, path, RECORD_LIMIT)

        return volume_record(self._run(share, f"reading the record of {subdir!r}", read), subdir)

    def write_record(self, share: ShareRef, subdir: str, record: VolumeRecord) -> None:
        path = self._record_path(self._checked(share, subdir))
        temporary = f"{path}.tmp{os.getpid()}.{uuid.uuid4().hex[:12]}"
        data = record.to_json()

        def write(client: NfsClient) -> None:
            self._index(client, subdir)
            self._make_parents(client, subdir)
            try:
                with client.open(temporary, "wb") as handle:
                    handle.write(data)  # nfs-rs returns once the bytes are stable on the server
                client.rename(temporary, path)
            except Exception as err:
                if not isinstance(err, (TimeoutError, ConnectionError)):  # a dead server would only time out again
                    try:
                        client.remove(temporary, missing_ok=True)
                    except Exception:  # noqa: BLE001 - the first failure is the one to report
                        log.debug("could not remove %s", temporary, exc_info=True)
                raise

        with self._record_writers(share, subdir):
            self._run(share, f"writing the record of {subdir!r}", write)

    def remove_record(self, share: ShareRef, subdir: str) -> None:
        path = self._record_path(self._checked(share, subdir))

        def remove(client: NfsClient) -> None:
            for done_with in (path, f"{INDEX_DIR}/{index_entry(subdir)}"):
                try:
                    client.remove(done_with, missing_ok=True)
                except FileNotFoundError:
                    pass

        self._run(share, f"removing the record of {subdir!r}", remove)

    # -- snapshots and clones ---------------------------------------------------------------------------------------
    # Streamed over the NFS file objects: nothing is staged locally. Each NFS call is bounded by --nfs-timeout, the
    # whole walk by --snapshot-timeout (checked between files and chunks). Not retried on a lost connection: the
    # domain retries from the start (a half archive is only ever a temporary file; a half clone stays pending).

    def _long(
        self,
        share: ShareRef,
        key: tuple[str, ShareRef, str],
        what: str,
        work: Callable[[NfsClient, Deadline], T],
        reset: Callable[[NfsClient], None] | None = None,
        source: ShareRef | None = None,
    ) -> T:
        """Run a long walk once per connection attempt; a lost connection (or a server's "retry") starts it again
        from the beginning, after ``reset`` undoes what the broken attempt wrote. One deadline, made before the
        first try, bounds all tries; the walk runs on the caller's thread, so it never outlives its caller.

        What fails on the ``source`` side (SourceFailed, whose origin is the reading client) is blamed on the
        source share and its client; anything else on ``share`` and the client writing to it.
        """
        deadline = Deadline(self._snapshot_timeout, f"{what} on {share.source()}")
        with self._guard:
            if key in self._busy:
                raise OperationInFlight(f"{what} on {share.source()} is still running; try again later")
            self._busy.add(key)
        try:
            for attempt in self._retrying:
                with attempt:
                    client = self._client(share)
                    try:
                        if attempt.retry_state.attempt_number > 1 and reset is not None:
                            reset(client)
                        return work(client, deadline)
                    except DomainError:
                        raise
                    except SourceFailed as failed:
                        assert source is not None and failed.origin is not None, "only work given a source marks it"
                        reader = cast(NfsClient, failed.origin)
                        raise self._operation_error(source, reader, what, failed.error) from failed.error
                    except Exception as err:  # noqa: BLE001 - nfs-rs raises its own hierarchy and builtins
                        raise self._operation_error(share, client, what, err) from err
            raise AssertionError("unreachable: tenacity reraises")
        finally:
            with self._guard:
                self._busy.discard(key)

    def _emptied(self, path: str) -> Callable[[NfsClient], None]:
        def reset(client: NfsClient) -> None:
            self._remove_tree(client, path)
            client.mkdir(path, 0o700)

        return reset

    def _snapshot_path(self, share: ShareRef, name: str) -> str:
        return self._checked(share, f"{SNAPSHOT_DIR}/{name}")

    @staticmethod
    def _make_driver_dir(client: NfsClient, name: str) -> None:
        """Make ``.nfs-csi/<name>``, private (0700) whichever feature comes first: snapshots hold users' data."""
        for path in (METADATA_DIR, f"{METADATA_DIR}/{name}"):
            try:
                client.mkdir(path, DRIVER_DIR_MODE)
            except FileExistsError:
                pass

    def pack_snapshot(self, share: ShareRef, subdir: str, snapshot_share: ShareRef, leaf: str, fmt: str) -> int:
        source = self._checked(share, subdir)
        final = self._snapshot_path(snapshot_share, archive_name(leaf, fmt))
        temporary = archive_temporary(final)

        def work(client: NfsClient, deadline: Deadline) -> int:
            reader = self._client(share)
            with reading_source(reader):
                if not _is_directory(reader.stat(source)):
                    raise StorageFailed(f"{subdir!r} is not a directory")
            self._make_driver_dir(client, "snapshots")
            try:
                with client.open(temporary, "wb") as raw:
                    out = io.BufferedWriter(raw, _CHUNK)
                    pack_tree(source_entries(nfs_entries(reader, source), reader), out, fmt, deadline)
                    out.flush()
                    out.detach()
                size = int(client.stat(temporary).size)
                client.rename(temporary, final)
            except BaseException:
                try:
                    client.remove(temporary, missing_ok=True)
                except Exception:  # noqa: BLE001 - the first failure is the one to report
                    log.debug("could not remove %s", temporary, exc_info=True)
                raise
            return size

        return self._long(
            snapshot_share, ("pack", snapshot_share, leaf), f"packing snapshot {leaf!r}", work, source=share
        )

    def write_snapshot_record(self, share: ShareRef, leaf: str, record: SnapshotRecord) -> None:
        path = self._snapshot_path(share, record_file(leaf))
        temporary = f"{path}.tmp{os.getpid()}.{uuid.uuid4().hex[:12]}"
        data = record.to_json()

        def write(client: NfsClient) -> None:
            self._make_driver_dir(client, "snapshots")
            try:
                with client.open(temporary, "wb") as handle:
                    handle.write(data)
                client.rename(temporary, path)
            except Exception:
                client.remove(temporary, missing_ok=True)
                raise

        self._run(share, f"writing the record of snapshot {leaf!r}", write)

    @classmethod
    def _index(cls, client: NfsClient, subdir: str) -> None:
        """Make subdir's index entry unless a valid one exists (nfs-rs has no exclusive create: look, then write).

        Anything but a regular file in the entry's place (a link) is no valid entry, and never one a write could go
        through: it is removed, itself (REMOVE never follows), and the entry written afresh, as the mount-based
        adapter does.
        """
        entry = index_entry(subdir)
        path = f"{INDEX_DIR}/{entry}"
        try:
            if indexed_subdir(entry, _read_small(client, path, ENTRY_LIMIT)) is not None:
                return  # kept as it is, so the volume keeps its place in listings
        except StorageFailed:
            if _is_directory(client.stat(path)):
                raise
            client.remove(path, missing_ok=True)
        data = subdir.encode("utf-8", errors="surrogatepass")
        try:
            with client.open(path, "wb") as handle:
                handle.write(data)
        except FileNotFoundError:  # a share's first volume: the index directories are made once
            cls._make_driver_dir(client, "volumes")
            with client.open(path, "wb") as handle:
                handle.write(data)

    def read_snapshot_record(self, share: ShareRef, leaf: str) -> SnapshotRecord | None:
        path = self._snapshot_path(share, record_file(leaf))
        raw = self._run(share, f"reading the record of snapshot {leaf!r}", lambda client: _read_small(client, path, RECORD_LIMIT))
        return snapshot_record(raw, leaf)

    def list_snapshot_records(self, share: ShareRef) -> list[tuple[str, SnapshotRecord]]:
        def listing(client: NfsClient) -> list[tuple[str, bytes]]:
            try:
                entries = sorted(client.scandir(SNAPSHOT_DIR), key=lambda e: str(e.name))
            except FileNotFoundError:
                return []
            found: list[tuple[str, bytes]] = []
            for entry in entries:
                name = str(entry.name)
                leaf = snapshot_record_leaf(name)
                if leaf is None or not _is_file(entry.info):
                    continue
                raw = _read_small(client, f"{SNAPSHOT_DIR}/{name}", RECORD_LIMIT)
                if raw is not None:
                    found.append((leaf, raw))
            return found

        return snapshot_records(self._run(share, "listing snapshots", listing), share)

    def remove_snapshot(self, share: ShareRef, leaf: str) -> None:
        paths = [self._snapshot_path(share, name) for name in snapshot_files(leaf)]

        def remove(client: NfsClient) -> None:
            for path in paths:
                try:
                    client.remove(path, missing_ok=True)
                except FileNotFoundError:
                    pass
            # Temporaries with names of their own (archives; records, as nfs-rs has no exclusive create): by listing.
            try:
                names = [str(entry.name) for entry in client.scandir(SNAPSHOT_DIR)]
            except FileNotFoundError:
                return
            for name in names:
                if is_temporary(leaf, name):
                    client.remove(self._snapshot_path(share, name), missing_ok=True)

        with self._guard:
            if ("pack", share, leaf) in self._busy:
                raise OperationInFlight(f"snapshot {leaf!r} is still being packed; try again later")
        self._run(share, f"removing snapshot {leaf!r}", remove)

    def restore_snapshot(self, snapshot_share: ShareRef, leaf: str, fmt: str, share: ShareRef, subdir: str) -> None:
        archive = self._snapshot_path(snapshot_share, archive_name(leaf, fmt))
        target = self._checked(share, subdir)

        def work(client: NfsClient, deadline: Deadline) -> None:
            reader = self._client(snapshot_share)
            with reading_source(reader):
                if not _regular(reader, archive):
                    raise StorageFailed(f"the archive of snapshot {leaf!r} is missing")
                raw = reader.open(archive, "rb")
            with raw:
                unpack_tree(io.BufferedReader(SourceReader(raw, reader), _CHUNK), NfsTreeWriter(client, target), deadline)

        self._long(
            share, ("fill", share, subdir), f"restoring snapshot {leaf!r} into {subdir!r}", work, self._emptied(target),
            source=snapshot_share,
        )

    def copy_volume(self, source_share: ShareRef, source_subdir: str, share: ShareRef, subdir: str) -> None:
        source, target = self._checked(source_share, source_subdir), self._checked(share, subdir)

        def work(client: NfsClient, deadline: Deadline) -> None:
            reader = self._client(source_share)
            copy_tree(source_entries(nfs_entries(reader, source), reader), NfsTreeWriter(client, target), deadline)

        self._long(
            share, ("fill", share, subdir), f"copying {source_subdir!r} into {subdir!r}", work, self._emptied(target),
            source=source_share,
        )

    def list_records(self, share: ShareRef, after: ListPosition | None, limit: int) -> list[ListedVolume]:
        def scan(client: NfsClient) -> list[ListPosition]:
            try:
                entries = list(client.scandir(INDEX_DIR))
            except FileNotFoundError:
                return []
            return sorted(ListPosition(e.info.mtime, e.name) for e in entries if _is_file(e.info))

        def read_entry(entry: str) -> str | None:
            path = f"{INDEX_DIR}/{entry}"
            raw = self._run(share, f"reading index entry {entry}", lambda c: _read_small(c, path, ENTRY_LIMIT))
            return indexed_subdir(entry, raw)

        positions = self._run(share, "listing the volume index", scan)
        return listed_volumes(positions, read_entry, lambda subdir: self.read_record(share, subdir), share, after, limit)

    def available_bytes(self, share: ShareRef) -> int:
        def free(client: NfsClient) -> int:
            return int(client.fs_stat().available_bytes)  # FSSTAT (v3) / space_avail (v4), bounded by the client

        return self._run(share, "reading free space", free)

    def close(self) -> None:
        with self._guard:
            clients, self._clients = dict(self._clients), {}
            closers, self._closers = self._closers, []
        # No thread may still be inside nfs-rs when the interpreter ends: a daemon thread unwound there at exit
        # crashes the process. Each closer is itself bounded by the client's timeout.
        for closer in closers:
            closer.join(self._options.timeout + 1.0)
        for share, client in clients.items():
            try:
                client.close()
                log.info("disconnected from share %s", share.source())
            except Exception:  # noqa: BLE001 - shutdown goes on for the other shares
                log.exception("could not close the NFS client of share %s", share.source())


# -- the tree walks of the snapshot methods: LOOKUP never follows a link, so neither do they ------------------------


def _regular(client: NfsClient, path: str) -> bool:
    """Whether a regular file is at path (False: nothing is); anything else is refused (StorageFailed). The one
    check before a file on a share is opened: LOOKUP never follows a link, so a link is seen as one."""
    try:
        info = client.stat(path)
    except FileNotFoundError:
        return False
    if not _is_file(info):
        raise StorageFailed(f"{path!r} is a {_kind(info)}, not a regular file")
    return True


def _read_small(client: NfsClient, path: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of a small file (a record, an index entry); None when it is missing."""
    if not _regular(client, path):
        return None
    with client.open(path, "rb") as handle:
        data: bytes = handle.read(limit)
    return data


def _nfs_entry(path: str, kind: str, info: Any, **more: Any) -> Entry:
    return Entry(path, kind, int(info.mode) & 0o7777, int(info.uid), int(info.gid), int(info.mtime), **more)


def nfs_entries(client: NfsClient, top: str) -> Iterator[Entry]:
    """The tree below top, parents first, from READDIR's own attributes; links are read, never followed."""
    yield _nfs_entry(".", DIRECTORY, client.stat(top))
    yield from _subtree(client, top, "")


def _subtree(client: NfsClient, top: str, prefix: str) -> Iterator[Entry]:
    directory = posixpath.join(top, prefix) if prefix else top
    for entry in sorted(client.scandir(directory), key=lambda e: str(e.name)):
        name = str(entry.name)
        if name in (".", ".."):
            continue
        path, remote = posixpath.join(prefix, name), posixpath.join(directory, name)
        kind = _kind(entry.info)
        if kind == "directory":
            yield _nfs_entry(path, DIRECTORY, entry.info)
            yield from _subtree(client, top, path)
        elif kind == "symlink":
            yield _nfs_entry(path, SYMLINK, entry.info, target=client.readlink(remote))
        elif kind == "file":
            yield _nfs_entry(path, FILE, entry.info, size=int(entry.info.size), open=_nfs_opener(client, remote))
        else:
            log.info("not archiving %s: a device, fifo or socket", path)


def _nfs_opener(client: NfsClient, path: str) -> Callable[[], Any]:
    @contextmanager
    def opened() -> Iterator[Any]:
        with client.open(path, "rb") as raw:  # OPEN of a link fails on the server (NFS4ERR_SYMLINK)
            yield io.BufferedReader(raw, _CHUNK)

    return opened


class NfsTreeWriter:
    """Builds a tree below ``top`` over NFS. Modes and times are set as sent; owners only where the server lets
    the AUTH_SYS identity chown (uid 0 on an export without root squashing): elsewhere they are the identity's."""

    def __init__(self, client: NfsClient, top: str) -> None:
        self._client = client
        self._top = top
        self._may_chown = True

    def _path(self, path: str) -> str:
        return self._top if path == "." else posixpath.join(self._top, path)

    def directory(self, path: str) -> None:
        try:
            self._client.mkdir(self._path(path), 0o700)
        except FileExistsError:
            if not _is_directory(self._client.stat(self._path(path))):
                raise StorageFailed(f"{path!r} exists and is not a directory") from None

    def file(self, path: str, data: Any) -> None:
        with self._client.open(self._path(path), "wb") as raw:
            while True:
                chunk = data.read(_CHUNK)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[raw.write(view) :]

    def symlink(self, path: str, target: str) -> None:
        self._client.symlink(target, self._path(path))

    def finish(self, path: str, entry: Entry) -> None:
        remote = self._path(path)
        if self._may_chown:
            try:
                self._client.chown(remote, entry.uid, entry.gid)
            except PermissionError:
                self._may_chown = False  # the server decides; one refusal says it for the whole tree
                log.info("the NFS server refuses chown to this AUTH_SYS identity: owners are not preserved")
        if entry.kind != SYMLINK:
            self._client.chmod(remote, entry.mode)
        try:
            self._client.utime(remote, ns=(entry.mtime_ns, entry.mtime_ns))
        except PermissionError:
            if entry.kind != SYMLINK:
                raise
