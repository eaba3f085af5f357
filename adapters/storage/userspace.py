"""NfsRsFileSystem: speak NFS from user space (nfs-rs), so the controller needs no mount and no privilege."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import io
import logging
import os
import posixpath
import re
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Concatenate, Iterable, ParamSpec, Sequence, TypeVar

import tenacity

from adapters.clock import SystemClock
from adapters.storage.archive import CHUNK, DIRECTORY, FILE, SYMLINK, Deadline, Entry, SourceFailed
from adapters.storage.files import OTHER, ShareFiles, ShareFileSystem
from adapters.storage.held import HeldShares
from domain.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Obstructed,
    ResourceExhausted,
    StorageFailed,
    Unavailable,
)
from domain.model import ShareRef
from domain.paths import join_inside
from ports.clock import Clock

if TYPE_CHECKING:  # nfs-rs is an optional extra; it ships its own type stubs, which type this adapter
    from nfs_rs import Client as NfsClient
    from nfs_rs import FileInfo

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

NFS_VERSIONS = ("4.1", "4.0", "3")
# Over NFS the server applies the mode it is sent, with no umask: send what a 022 umask leaves of 0777,
# which is what the mount-based adapter creates under the usual umask.
_NEW_DIR_MODE = 0o755
_STATE_LOST = frozenset(
    {"NFS4ERR_STALE", "NFS3ERR_STALE", "NFS4ERR_BADSESSION", "NFS4ERR_DEADSESSION", "NFS4ERR_STALE_CLIENTID",
     "NFS4ERR_EXPIRED", "NFS4ERR_BAD_STATEID", "NFS4ERR_STALE_STATEID", "NFS4ERR_CONN_NOT_BOUND_TO_SESSION"}
)
_NO_SPACE = frozenset({"NFS4ERR_NOSPC", "NFS3ERR_NOSPC", "NFS4ERR_DQUOT", "NFS3ERR_DQUOT"})
_KINDS = {"directory": DIRECTORY, "file": FILE, "symlink": SYMLINK}
# How a server says a path is not of the kind a call needs: a link or a file on the way (LOOKUP never follows a
# link), or an OPEN of what is no regular file (a link, a FIFO, a device: refused, never opened).
_OBSTACLES = frozenset(
    {"NFS4ERR_SYMLINK", "NFS4ERR_NOTDIR", "NFS3ERR_NOTDIR", "NFS4ERR_WRONG_TYPE", "NFS4ERR_ISDIR", "NFS3ERR_ISDIR"}
)


def _is_obstacle(err: Exception) -> bool:
    code = str(getattr(err, "code_name", "") or "")
    return code in _OBSTACLES or isinstance(err, (NotADirectoryError, IsADirectoryError))


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


# Mount options that decide how the userspace client reaches a share, and those it cannot honour; the others tune
# the kernel's client (caching, timeouts, buffer sizes) and mean nothing to it.
_REACH = {"vers", "nfsvers", "minorversion", "port", "mountport", "sec", "xprtsec", "proto", "mountproto",
          "resvport", "noresvport"}  # fmt: skip
_ACCEPTED = {("sec", "sys"), ("xprtsec", "none"), ("proto", "tcp"), ("proto", "tcp6"), ("mountproto", "tcp"),
             ("mountproto", "tcp6")}  # fmt: skip


def client_options(base: NfsClientOptions, mount_options: Sequence[str]) -> tuple[NfsClientOptions, tuple[str, ...]]:
    """The client options for a share the controller mounts with ``mount_options`` (--share-mount-options), over
    the flags' (--nfs-version, --nfs-port, ...), and the options that mean nothing to this client. ValueError for
    one it cannot honour: Kerberos (sec=krb5*), TLS (xprtsec=tls/mtls), UDP or RDMA, or an NFS version it does
    not speak."""
    given = {name: value for name, _, value in (option.partition("=") for option in mount_options)}
    options, ignored = base, tuple(o for o in mount_options if o.partition("=")[0] not in _REACH)
    for name, value in given.items():
        if name in ("sec", "xprtsec", "proto", "mountproto") and (name, value) not in _ACCEPTED:
            raise ValueError(f"{name}={value} cannot be spoken by the userspace NFS client (--storage mount can)")
    versions = _versions(given.get("vers") or given.get("nfsvers"), given.get("minorversion"))
    if versions is not None:
        options = dataclasses.replace(options, versions=versions)
    if "port" in given:
        options = dataclasses.replace(options, port=_port(given["port"], "port"))
    if "mountport" in given:
        options = dataclasses.replace(options, mount_port=_port(given["mountport"], "mountport"))
    if "resvport" in given or "noresvport" in given:
        options = dataclasses.replace(options, reserved_port="resvport" in given)
    return options, ignored


def _versions(version: str | None, minor: str | None) -> tuple[str, ...] | None:
    """vers= (or nfsvers=) and minorversion= as the client's versions; None when neither is given."""
    if version is None and minor is None:
        return None
    major = version or "4"
    if major == "4":
        versions: tuple[str, ...] = (f"4.{minor}",) if minor is not None else ("4.1", "4.0")
    elif minor is not None and major != f"4.{minor}":
        raise ValueError(f"vers={major} and minorversion={minor} disagree")
    else:
        versions = (major,)
    unknown = [v for v in versions if v not in NFS_VERSIONS]
    if unknown:
        raise ValueError(f"NFS version {unknown[0]} is not spoken by the userspace client ({', '.join(NFS_VERSIONS)})")
    return versions


def _port(value: str, name: str) -> int | None:
    if not re.fullmatch(r"[0-9]{1,5}", value) or int(value) > 65535:
        raise ValueError(f"{name}={value} is not a port")
    return int(value) or None


Connector = Callable[[ShareRef, NfsClientOptions], "NfsClient"]


def connect_with_nfs_rs(share: ShareRef, options: NfsClientOptions) -> NfsClient:
    """Open an nfs-rs client on the share; every call it makes is bounded by ``options.timeout``."""
    try:
        import nfs_rs
    except ImportError as err:
        raise FailedPrecondition("the userspace NFS client is missing: nfs-csi-driver[userspace] (nfs-rs)") from err
    return nfs_rs.Client.connect(
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


class _ConnectionLost(Unavailable):
    """The share's connection broke; the next try reconnects."""


class NfsRsFileSystem(ShareFileSystem):
    """One NFS client per share, opened on first use and reused; nothing is mounted. LOOKUP never follows a link, so
    a link on the way fails the call (NFS4ERR_SYMLINK). Every NFS call is bounded by --nfs-timeout; long work runs
    on the caller's thread within its deadline. A call whose connection was lost is tried again on a new one (all
    are idempotent); long work then starts over (a half archive is a temporary, a half fill is emptied first). A
    client no call has used for ``share_idle_timeout`` is closed, with its threads (see HeldShares), and at most
    ``max_shares_held`` idle ones stay open."""

    def __init__(
        self,
        options: NfsClientOptions = NfsClientOptions(),
        connect: Connector = connect_with_nfs_rs,
        snapshot_timeout: float = 600.0,
        share_options: Iterable[tuple[ShareRef, tuple[str, ...]]] = (),
        clock: Clock = SystemClock(),
        share_idle_timeout: float = 300.0,
        max_shares_held: int = 32,
    ) -> None:
        self._options = options
        self._share_options: dict[ShareRef, NfsClientOptions] = {}
        for share, mount_options in share_options:  # checked when the flags were read: ValueError here is a bug
            self._share_options[share], ignored = client_options(options, mount_options)
            log.info(
                "share %s: userspace NFS %s, port %s (from --share-mount-options; %s mean nothing to this client)",
                share.source(), ",".join(self._share_options[share].versions),
                self._share_options[share].port or "default", ",".join(ignored) or "no others",
            )
        self._connect = connect
        self._snapshot_timeout = snapshot_timeout
        self._guard = threading.Lock()
        self._clients: HeldShares[NfsClient] = HeldShares(
            clock, self._close_aside, share_idle_timeout, max_shares_held, "NFS client"
        )
        self._closers: list[threading.Thread] = []
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(options.attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=1.0),
            retry=tenacity.retry_if_exception_type(_ConnectionLost),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        log.info(
            "controller storage: userspace NFS %s, port %s, AUTH_SYS uid %s gid %s (None: its own), %s s a call",
            ",".join(options.versions), options.port or "default", options.uid, options.gid, options.timeout,
        )

    def reach(self, share: ShareRef) -> None:
        with self._clients.using(share):
            self._client(share)

    def held(self) -> int:
        return self._clients.held()

    def release_idle(self) -> int:
        """Close the clients idle for too long, or beyond the most held (the background thread does it too)."""
        return self._clients.release_idle()

    def _client(self, share: ShareRef) -> NfsClient:
        """The share's client, connected on first use, by a call using it (so never closed under that call)."""
        client = self._clients.handle(share)
        if client is not None:
            return client
        if "?" in share.share or "#" in share.share:
            raise InvalidArgument(f"share {share.share!r}: the userspace NFS client cannot reach a path with '?' or '#'")
        with self._clients.lock(share):
            client = self._clients.handle(share)
            if client is None:
                try:
                    client = self._connect(share, self._share_options.get(share, self._options))
                except DomainError:
                    raise
                except Exception as err:  # noqa: BLE001 - every nfs-rs failure becomes a domain error
                    raise self._connect_error(share, err) from err
                self._clients.hold(share, client)
                log.info("connected to share %s over NFS %s from user space", share.source(), self._options.versions)
            return client

    def _connect_error(self, share: ShareRef, err: Exception) -> DomainError:
        where, used = share.source(), self._share_options.get(share, self._options)
        how = (
            f"(over NFS {','.join(used.versions)}, port {used.port or 'default'}: --nfs-version and --nfs-port, "
            f"or vers= and port= for this share in --share-mount-options)"
        )
        if isinstance(err, TimeoutError):
            return DeadlineExceeded(f"connecting to {where} took longer than {self._options.timeout} s {how}")
        if isinstance(err, FileNotFoundError):
            return NotFound(f"share {where} is not exported by {share.server}")
        if isinstance(err, ConnectionError):
            return _ConnectionLost(f"cannot reach the NFS server of {where} {how}: {err}")
        if isinstance(err, ValueError):
            return InvalidArgument(f"cannot address share {where}: {err}")
        return StorageFailed(f"cannot connect to {where}: {err}")

    def _drop(self, share: ShareRef, client: NfsClient) -> None:
        """Forget a broken client, and close it aside."""
        if self._clients.forget(share, client):
            self._close_aside(share, client)

    def _close_aside(self, share: ShareRef, client: NfsClient) -> None:
        """Close a client no call uses (broken, or idle) on a thread of its own, since closing waits up to a timeout
        on a dead server; the client's own threads end once nothing refers to it."""

        def close() -> None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - the connection is already gone
                log.debug("closing a client of %s failed", share.source(), exc_info=True)

        closer = threading.Thread(target=close, name="nfs-close", daemon=True)
        with self._guard:
            self._closers = [t for t in self._closers if t.is_alive()] + [closer]
        closer.start()

    def run(self, share: ShareRef, what: str, work: Callable[[ShareFiles], T]) -> T:
        with self._clients.using(share):
            return self._retried(share, what, lambda client: work(NfsShareFiles(client, share)))

    def run_long(
        self, share: ShareRef, what: str, work: Callable[[ShareFiles, ShareFiles, Deadline], T], source: ShareRef
    ) -> T:
        deadline = Deadline(self._snapshot_timeout, f"{what} on {share.source()}")  # one for every try

        def attempt(client: NfsClient) -> T:
            reader = self._client(source)
            try:
                return work(NfsShareFiles(client, share), NfsShareFiles(reader, source), deadline)
            except SourceFailed as failed:
                raise self._operation_error(source, reader, what, failed.error) from failed.error

        with self._clients.using(share, source):
            return self._retried(share, what, attempt)

    def _retried(self, share: ShareRef, what: str, operation: Callable[[NfsClient], T]) -> T:
        """operation with the share's client, again on a new one when it was lost; NFS failures as domain errors."""
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
        import nfs_rs

        where, code = f"{what} on {share.source()}", str(getattr(err, "code_name", "") or "")
        if isinstance(err, TimeoutError):
            self._drop(share, client)
            return DeadlineExceeded(f"{where} took longer than {self._options.timeout} s")
        if code in _NO_SPACE or getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return ResourceExhausted(f"{where}: no space left on the share ({err})")
        if _is_obstacle(err):
            return Obstructed(f"{where}: a path on the way is not a plain directory, or not a regular file ({err})")
        if isinstance(err, PermissionError):  # the server's answer to this AUTH_SYS identity, as EPERM is a mount's
            return FailedPrecondition(f"{where}: the NFS server refuses it to this client's identity ({err})")
        # The client's connection, session or state is gone (a server restart shows as a retryable protocol
        # error that the same client keeps returning): start again with a new client. Every operation here is
        # idempotent, so repeating one whose outcome was uncertain is safe.
        lost = (
            ConnectionError, nfs_rs.NfsClientClosedError, nfs_rs.NfsStateLostError, nfs_rs.NfsRetryableError,
            nfs_rs.NfsOperationOutcomeError, nfs_rs.NfsRpcError,
        )
        if isinstance(err, lost) or code in _STATE_LOST or any(isinstance(e, lost) for e in getattr(err, "errors", ())):
            self._drop(share, client)
            return _ConnectionLost(f"{where}: the connection to the NFS server was lost: {err}")
        return StorageFailed(f"{where} failed: {err}")

    def close(self) -> None:
        clients = self._clients.close()
        with self._guard:
            closers, self._closers = self._closers, []
        # No thread may still be inside nfs-rs when the interpreter ends: a daemon thread unwound there at exit
        # crashes the process. Each closer is itself bounded by the client's timeout.
        for closer in closers:
            closer.join(self._options.timeout + 1.0)
        for share, client in clients:
            try:
                client.close()
                log.info("disconnected from share %s", share.source())
            except Exception:  # noqa: BLE001 - shutdown goes on for the other shares
                log.exception("could not close the NFS client of share %s", share.source())


def _obstacles_refused(
    method: Callable[Concatenate[NfsShareFiles, str, P], T],
) -> Callable[Concatenate[NfsShareFiles, str, P], T]:
    """What the server refuses for a path's kind (a link or a file on the way, a FIFO opened), raised as Obstructed
    from the method itself, so the storage core can tell "not here" from a failure inside its work."""

    def refusing(self: NfsShareFiles, path: str, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, path, *args, **kwargs)
        except Exception as err:
            if isinstance(err, DomainError) or not _is_obstacle(err):
                raise
            raise Obstructed(f"{path!r} on {self._share.source()}: not a plain directory on the way, or not the kind "
                             f"of file needed ({err})") from err

    functools.update_wrapper(refusing, method)
    return refusing


class NfsShareFiles(ShareFiles):
    """A share's files through its NFS client; the server never follows a link on the way (LOOKUP does not). Owners
    are set where the server lets the AUTH_SYS identity chown (uid 0 on an export without root squashing): after
    the first refusal, no more are tried."""

    def __init__(self, client: NfsClient, share: ShareRef) -> None:
        self._client, self._share, self._may_chown = client, share, True

    def _path(self, path: str) -> str:
        join_inside(self._share.share, path)  # lexical containment, again, at the edge
        return path

    def _entry(self, path: str, info: FileInfo) -> Entry:
        """What nfs-rs says is at path, as archive's kinds: the one place its type is read."""
        kind = _KINDS.get(info.type.value, OTHER)
        size, target = info.size if kind == FILE else 0, self._client.readlink(path) if kind == SYMLINK else ""
        return Entry(posixpath.basename(path), kind, info.mode & 0o7777, info.uid, info.gid, info.mtime, size, target)

    @_obstacles_refused
    def make_dir(self, path: str, mode: int | None = None) -> None:
        self._client.mkdir(self._path(path), _NEW_DIR_MODE if mode is None else mode)

    @_obstacles_refused
    def stat(self, path: str) -> Entry:
        return self._entry(path, self._client.stat(self._path(path)))

    @_obstacles_refused
    def list(self, path: str) -> list[Entry]:
        try:
            found = list(self._client.scandir(self._path(path)))
        except FileNotFoundError:
            return []
        return [self._entry(posixpath.join(path, e.name), e.info) for e in found if e.name not in (".", "..")]

    @_obstacles_refused
    def chmod(self, path: str, mode: int) -> None:
        self._client.chmod(self._path(path), mode)  # SETATTR on what LOOKUP found: a link is not followed

    @_obstacles_refused
    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        remote = self._path(path)
        if uid is None or gid is None:  # SETATTR sets both: the part left alone is what is there now
            now = self._client.stat(remote)
            uid, gid = now.uid if uid is None else uid, now.gid if gid is None else gid
        self._client.chown(remote, uid, gid)  # on what LOOKUP found: a link is not followed

    @_obstacles_refused
    def set_attributes(self, path: str, entry: Entry) -> None:
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

    @_obstacles_refused
    def rename(self, path: str, name: str) -> None:
        self._client.rename(self._path(path), self._path(posixpath.join(posixpath.dirname(path), name)))

    @_obstacles_refused
    def move(self, path: str, new_path: str) -> None:
        self._client.rename(self._path(path), self._path(new_path))

    @_obstacles_refused
    def read(self, path: str, limit: int) -> bytes | None:
        try:  # LOOKUP never follows a link: a link (or a FIFO) is seen as one, and refused before any OPEN
            kind = self.stat(path).kind
        except FileNotFoundError:
            return None
        if kind != FILE:
            raise Obstructed(f"{path!r} is a {kind}, not a regular file")
        with self._client.open(path, "rb") as handle:
            return handle.read(limit)

    @_obstacles_refused
    def open(self, path: str) -> BinaryIO | None:
        try:  # looked at first, as read does: what is no regular file is never opened (over NFSv3 too)
            kind = self.stat(path).kind
            if kind != FILE:
                raise Obstructed(f"{path!r} is a {kind}, not a regular file")
            return io.BufferedReader(self._client.open(self._path(path), "rb"), CHUNK)
        except FileNotFoundError:
            return None

    def write(
        self, path: str, fill: Callable[[BinaryIO], object], mode: int, exclusive: bool = False, durable: bool = True
    ) -> int:
        if exclusive and self._client.exists(self._path(path)):  # nfs-rs has no exclusive create: look, then write
            raise FileExistsError(errno.EEXIST, "exists", path)
        with self._client.open(self._path(path), "wb") as raw:  # returns once the bytes are stable on the server
            out = io.BufferedWriter(raw, CHUNK)
            fill(out)
            out.flush()
            size = out.tell()
            out.detach()
        return size

    def write_atomically(self, path: str, data: bytes, mode: int) -> None:
        # A name of its own each time: nfs-rs trips over creating again a name it has just renamed away.
        temporary = f"{path}.tmp{os.getpid()}.{uuid.uuid4().hex[:12]}"
        try:
            self.write(temporary, lambda out: out.write(data), mode)
            self.rename(temporary, posixpath.basename(path))
        except Exception as err:
            if not isinstance(err, (TimeoutError, ConnectionError)):  # a dead server would only time out again
                with contextlib.suppress(Exception):
                    self._client.remove(temporary, missing_ok=True)
            raise

    @_obstacles_refused
    def symlink(self, path: str, target: str) -> None:
        self._client.symlink(target, self._path(path))

    @_obstacles_refused
    def remove(self, path: str) -> None:
        try:
            self._client.remove(self._path(path), missing_ok=True)
        except FileNotFoundError:
            pass
        except IsADirectoryError as err:
            raise Obstructed(f"{path!r} is a directory; refusing to remove it") from err

    @_obstacles_refused
    def remove_tree(self, path: str) -> None:
        try:
            kind = self.stat(path).kind
        except FileNotFoundError:
            return
        if kind != DIRECTORY:
            raise Obstructed(f"{path!r} is a {kind}, not a directory; refusing to remove it")
        pending: list[tuple[str, bool]] = [(path, False)]  # depth first; a link, a FIFO inside go by REMOVE, unopened
        while pending:
            directory, listed = pending.pop()
            if listed:
                try:
                    self._client.rmdir(directory)
                except FileNotFoundError:
                    pass
                continue
            try:
                entries = self.list(directory)
            except Obstructed:
                if directory == path:
                    raise
                self._client.remove(directory, missing_ok=True)  # swapped for a non-directory since it was listed
                continue
            pending.append((directory, True))
            for entry in entries:
                child = posixpath.join(directory, entry.path)
                if entry.kind == DIRECTORY:
                    pending.append((child, False))
                else:
                    self._client.remove(child, missing_ok=True)

    def free_bytes(self) -> int:
        return self._client.fs_stat().available_bytes  # FSSTAT (v3) / space_avail (v4), bounded by the client
