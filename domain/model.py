"""Value objects: shares, volume ids, parameters, capabilities and the volume record."""

from __future__ import annotations

import enum
import ipaddress
import json
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Mapping
from urllib.parse import quote, unquote

from domain.errors import InvalidArgument, OutOfRange
from domain.paths import absolute_path, check_characters, relative_subpath

# Patterns are applied with fullmatch: "$" would also match before a final "\n".
_SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]+\]")


class OnDelete(str, enum.Enum):
    DELETE = "delete"
    RETAIN = "retain"
    ARCHIVE = "archive"

    @classmethod
    def parse(cls, value: str) -> OnDelete:
        try:
            return cls(value.lower())
        except ValueError:
            raise InvalidArgument(
                f"onDelete {value!r} is not one of {', '.join(p.value for p in cls)}"
            ) from None


class AccessMode(enum.IntEnum):
    """CSI VolumeCapability.AccessMode.Mode, by wire value."""

    UNKNOWN = 0
    SINGLE_NODE_WRITER = 1
    SINGLE_NODE_READER_ONLY = 2
    MULTI_NODE_READER_ONLY = 3
    MULTI_NODE_SINGLE_WRITER = 4
    MULTI_NODE_MULTI_WRITER = 5
    SINGLE_NODE_SINGLE_WRITER = 6
    SINGLE_NODE_MULTI_WRITER = 7

    @property
    def read_only(self) -> bool:
        return self in (AccessMode.SINGLE_NODE_READER_ONLY, AccessMode.MULTI_NODE_READER_ONLY)


SUPPORTED_ACCESS_MODES = frozenset(AccessMode) - {AccessMode.UNKNOWN}


@dataclass(frozen=True)
class ShareRef:
    """An NFS export: server and absolute share path, both validated."""

    server: str
    share: str

    @classmethod
    def parse(cls, server: str, share: str) -> ShareRef:
        server = _bracketed(server)
        if not server:
            raise InvalidArgument("parameter 'server' is required")
        if not _SERVER.fullmatch(server):
            raise InvalidArgument(
                f"server {server!r} must be a host name or IP address "
                "(no commas, whitespace, NUL, slashes or leading '-')"
            )
        if not share:
            raise InvalidArgument("parameter 'share' is required")
        return cls(server, absolute_path(share, "share"))

    def source(self, subdir: str = "") -> str:
        """The mount.nfs source for this share, or for a directory below it."""
        path = self.share.rstrip("/") + "/" + subdir if subdir else self.share
        return f"{self.server}:{path}"


def _bracketed(server: str) -> str:
    """An IPv6 address written without brackets gets them, as mount.nfs needs (csi-driver-nfs does the same)."""
    if ":" not in server or server.startswith("["):
        return server
    try:
        ipaddress.IPv6Address(server)
    except ValueError:
        return server
    return f"[{server}]"


@dataclass(frozen=True)
class ExportPath:
    """An NFS mount source, ``server:/path``, in one spelling, so that two spellings of it compare equal.

    The server loses its brackets, its case and a trailing dot; an IP address takes its compressed form (a name is
    never resolved: a name and an address never match). The path loses runs of slashes and a trailing slash.
    """

    server: str
    path: str

    @classmethod
    def parse(cls, source: str) -> ExportPath | None:
        """The export and directory ``source`` names, or None when it is no ``server:/path`` (a local device, a
        path with '.' or '..', an address in brackets that is none)."""
        if source.startswith("["):
            end = source.find("]:")
            try:
                server = ipaddress.IPv6Address(source[1:end]).compressed if end > 0 else ""
            except ValueError:
                return None
            path = source[end + 2 :]
        else:
            host, _, path = source.partition(":")
            host = host.lower().removesuffix(".")
            try:
                server = ipaddress.ip_address(host).compressed
            except ValueError:
                server = host
        names = [name for name in path.split("/") if name]
        if not server or not path.startswith("/") or any(name in (".", "..") for name in names):
            return None
        return cls(server, "/" + "/".join(names))


def parse_share_list(value: str) -> tuple[ShareRef, ...]:
    """``server:/path[,server:/path...]``: the shares an operator lists (ListVolumes, ListSnapshots look there)."""
    shares: list[ShareRef] = []
    for item in (part.strip(" ") for part in value.split(",")):
        if not item:
            continue
        server, sep, path = item.partition(":/")
        if not sep:
            raise InvalidArgument(f"share {item!r} must be written server:/path")
        share = ShareRef.parse(server, "/" + path)
        if share not in shares:
            shares.append(share)
    return tuple(shares)


METADATA_DIR = ".nfs-csi"
"""The driver's own directory at a share's root (indexes, snapshots); no volume subDir may start with '.'."""


@dataclass(frozen=True)
class VolumeId:
    """Everything DeleteVolume and NodePublish need, in a versioned, unambiguous string.

    Format: ``nfs1#<server>#<share>#<subdir>#<onDelete>``, each part percent-encoded so
    that '#' and '%' cannot occur inside a part.
    """

    share: ShareRef
    subdir: str
    on_delete: OnDelete

    PREFIX = "nfs1"

    def __str__(self) -> str:
        parts = (self.share.server, self.share.share, self.subdir, self.on_delete.value)
        return "#".join((self.PREFIX, *(quote(p, safe="/:[]") for p in parts)))

    @classmethod
    def parse(cls, value: str) -> VolumeId | None:
        """The id, or None when it is not one of ours (malformed or foreign)."""
        parts = value.split("#")
        if len(parts) != 5 or parts[0] != cls.PREFIX:
            return None
        try:
            decoded = [unquote(p, errors="strict") for p in parts[1:]]
            volume = cls(
                ShareRef.parse(decoded[0], decoded[1]),
                relative_subpath(decoded[2], "subdir", new=False),
                OnDelete(decoded[3]),
            )
        except (InvalidArgument, ValueError, UnicodeDecodeError):
            return None
        return volume if str(volume) == value else None


CSI_DRIVER_NFS_MAX_HANDLE = 16 << 10  # bytes: more than any handle csi-driver-nfs writes (server, share, subDir, PV)
_CSI_DRIVER_NFS_SLASHED = re.compile(r"([^/#]+)/(.*)/([^/]+)")  # its first format: server/baseDir/subDir
_PV_NAME = re.compile(r"[^/#]{0,253}")


@dataclass(frozen=True)
class CsiDriverNfsVolumeId:
    """A volume handle csi-driver-nfs (the reference NFS driver, ``nfs.csi.k8s.io``) wrote, read by this driver's rules.

    Its formats, as its CreateVolume writes them: ``server#baseDir#subDir#uuid#onDelete`` since v4.4 (v4.1:
    ``server#baseDir#subDir#uuid``; v3: ``server#baseDir#subDir``), baseDir and subDir with their outer slashes
    trimmed, empty fields kept (``10.0.0.4#exports#pvc-1f2e##``); uuid is the PV name when the StorageClass set a
    subDir; onDelete is written only for retain and archive, in the StorageClass's spelling. Its first format was
    ``server/baseDir/subDir``. The share is ``/baseDir``; an IPv6 server without brackets gets them.

    Read with this driver's path rules: a handle whose subDir is empty (the share's root), absolute or holds '..'
    (csi-driver-nfs's CVE-2026-3864), whose parts hold control or invisible characters, commas, whitespace or
    backslashes, whose onDelete is none of delete, retain and archive, or that has more than five fields, is none.
    """

    raw: str
    share: ShareRef
    subdir: str
    uuid: str
    on_delete: OnDelete | None
    """None: the field was empty, and csi-driver-nfs's ``--default-ondelete-policy`` decided."""

    def __str__(self) -> str:
        return self.raw

    @property
    def source(self) -> str:
        return self.share.source(self.subdir)

    @classmethod
    def parse(cls, value: str) -> CsiDriverNfsVolumeId | None:
        """The handle, or None when it is not one csi-driver-nfs could have written (or it breaks a path rule)."""
        if len(value.encode("utf-8", errors="surrogatepass")) > CSI_DRIVER_NFS_MAX_HANDLE:
            return None
        fields = value.split("#")
        if len(fields) == 1:
            slashed = _CSI_DRIVER_NFS_SLASHED.fullmatch(value)
            if slashed is None:
                return None
            fields = list(slashed.groups())
        if not 3 <= len(fields) <= 5:
            return None
        server, base_dir, subdir, uuid, on_delete = (*fields, "", "")[:5]
        if server != server.strip() or _PV_NAME.fullmatch(uuid) is None:
            return None
        try:
            check_characters(uuid, "uuid")
            return cls(
                value,
                ShareRef.parse(server, "/" + base_dir),
                relative_subpath(subdir, "subDir", new=False),
                uuid,
                OnDelete(on_delete.lower()) if on_delete else None,
            )
        except (InvalidArgument, ValueError):
            return None

    @property
    def archive_subdir(self) -> str:
        """Where csi-driver-nfs archives it: ``archived-<subDir>`` at the share's root (so ``a/b`` goes to
        ``archived-a/b``)."""
        return posixpath.normpath("archived-" + self.subdir)


def source_named_by(volume_id: str) -> str | None:
    """``server:/share/subdir`` a volume id names: one of this driver's, or one csi-driver-nfs wrote; else None."""
    ours = VolumeId.parse(volume_id)
    if ours is not None:
        return ours.share.source(ours.subdir)
    foreign = CsiDriverNfsVolumeId.parse(volume_id)
    return None if foreign is None else foreign.source


@dataclass(frozen=True)
class CapacityRange:
    required_bytes: int = 0
    limit_bytes: int = 0

    def __post_init__(self) -> None:
        if self.required_bytes < 0 or self.limit_bytes < 0:
            raise InvalidArgument("capacity range bytes must not be negative")
        if self.limit_bytes and self.required_bytes > self.limit_bytes:
            raise OutOfRange(
                f"required_bytes {self.required_bytes} exceeds limit_bytes {self.limit_bytes}"
            )

    @property
    def capacity_bytes(self) -> int:
        """NFS enforces no quota: the volume's nominal size is what was asked for (0 = unknown)."""
        return self.required_bytes or self.limit_bytes

    def admits(self, capacity_bytes: int) -> bool:
        if capacity_bytes < self.required_bytes:
            return False
        return not self.limit_bytes or capacity_bytes <= self.limit_bytes


@dataclass(frozen=True)
class VolumeCapability:
    access_mode: AccessMode
    block: bool = False
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()


def check_capabilities(
    capabilities: tuple[VolumeCapability, ...], allowlist: MountOptionAllowlist | None = None
) -> None:
    """Refuse, as INVALID_ARGUMENT, any capability NFS cannot serve."""
    if not capabilities:
        raise InvalidArgument("volume_capabilities must not be empty")
    for capability in capabilities:
        check_capability(capability, allowlist)


def check_capability(capability: VolumeCapability, allowlist: MountOptionAllowlist | None = None) -> None:
    if capability.block:
        raise InvalidArgument("block access is not supported by an NFS volume")
    if capability.access_mode not in SUPPORTED_ACCESS_MODES:
        raise InvalidArgument("access_mode is missing or unknown")
    if capability.fs_type not in ("", "nfs", "nfs4"):
        raise InvalidArgument(f"fs_type {capability.fs_type!r} is not supported; use nfs or leave it empty")
    if len(capability.mount_flags) > MAX_MOUNT_OPTIONS:
        raise InvalidArgument(f"at most {MAX_MOUNT_OPTIONS} mount options are accepted")
    for flag in capability.mount_flags:
        (allowlist or DEFAULT_ALLOWLIST).check(flag)


_MOUNT_OPTION = re.compile(r"[A-Za-z0-9_]+(?:=[A-Za-z0-9_.:/+\-]+)?")
ALLOWED_MOUNT_OPTIONS = frozenset(
    """
    ro rw sync async noatime atime nodiratime relatime strictatime lazytime nodev dev nosuid suid
    noexec exec hard soft intr nointr cto nocto ac noac fsc nofsc lock nolock acl noacl rdirplus
    nordirplus sharecache nosharecache resvport noresvport bg fg tcp udp rdma
    vers nfsvers minorversion proto port mountport mountproto timeo retrans retry rsize wsize
    acregmin acregmax acdirmin acdirmax actimeo sec lookupcache local_lock nconnect max_connect
    namlen clientaddr mounthost mountvers fsc softreval nosoftreval xprtsec
    """.split()
)


MAX_MOUNT_OPTIONS = 64
_OPTION_NAME = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class MountOptionAllowlist:
    """The mount option names a StorageClass or a capability may ask for (``--allowed-mount-options``)."""

    names: frozenset[str] = ALLOWED_MOUNT_OPTIONS

    @classmethod
    def parse(cls, text: str) -> MountOptionAllowlist:
        """Comma-separated option names, such as ``hard,nfsvers,rsize``."""
        names = frozenset(name.strip(" ") for name in text.split(",") if name.strip(" "))
        bad = sorted(name for name in names if not _OPTION_NAME.fullmatch(name))
        if bad:
            raise InvalidArgument(f"allowed mount option names must be letters, digits and '_': {bad[0]!r}")
        return cls(names)

    def check(self, option: str) -> str:
        """Accept one mount option only if it is allowlisted and cannot smuggle another option."""
        if len(option) > 256 or not _MOUNT_OPTION.fullmatch(option):
            raise InvalidArgument(
                f"mount option {option[:80]!r} is malformed (one option per flag: a name, or name=value; no commas)"
            )
        if option.split("=", 1)[0] not in self.names:
            raise InvalidArgument(f"mount option {option!r} is not on this driver's allowlist (--allowed-mount-options)")
        return option


DEFAULT_ALLOWLIST = MountOptionAllowlist()


def mount_option_allowlist(text: str) -> MountOptionAllowlist:
    """``--allowed-mount-options``: comma-separated names; empty keeps the built-in list."""
    return MountOptionAllowlist.parse(text) if text.strip() else DEFAULT_ALLOWLIST


def check_mount_option(option: str) -> str:
    """Accept one mount option only if it is on the default allowlist and cannot smuggle another option."""
    return DEFAULT_ALLOWLIST.check(option)


MAX_SHARE_OPTIONS_TEXT = 65536  # bytes of --share-mount-options: room for a thousand shares, a bound all the same


def parse_share_mount_options(
    text: str, allowlist: MountOptionAllowlist = DEFAULT_ALLOWLIST
) -> dict[ShareRef, tuple[str, ...]]:
    """``server:/path=opt,opt;server:/path=opt``: the options the controller mounts each share with
    (``--share-mount-options``). Each option passes the allowlist as a StorageClass's would; a share is named once;
    ``ro`` is refused, since the controller writes on every share it mounts."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_SHARE_OPTIONS_TEXT:
        raise InvalidArgument(f"is longer than {MAX_SHARE_OPTIONS_TEXT} bytes")
    found: dict[ShareRef, tuple[str, ...]] = {}
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        named, sep, options = item.partition("=")
        server, colon, path = named.strip().partition(":/")
        if not sep or not colon:
            raise InvalidArgument(f"{item[:120]!r} must be written server:/path=option,option")
        share = ShareRef.parse(server, "/" + path)
        if share in found:
            raise InvalidArgument(f"share {share.source()} is given twice")
        parsed = tuple(allowlist.check(option.strip()) for option in options.split(",") if option.strip())
        if not parsed:
            raise InvalidArgument(f"share {share.source()} is given no options")
        if len(parsed) > MAX_MOUNT_OPTIONS:
            raise InvalidArgument(f"share {share.source()}: at most {MAX_MOUNT_OPTIONS} mount options are accepted")
        if "ro" in parsed:
            raise InvalidArgument(f"share {share.source()}: the controller writes on its shares; 'ro' cannot be one")
        found[share] = tuple(dict.fromkeys(parsed))
    return found


CSI_STRING_BYTES = 128
"""The CSI spec's limit for a string ("Size Limits"), a volume's or a snapshot's name among them."""


def check_volume_name(name: str) -> str:
    """A CreateVolume or CreateSnapshot name: required, printable, at most CSI_STRING_BYTES bytes."""
    if not name:
        raise InvalidArgument("name is required")
    if len(name.encode("utf-8", errors="surrogatepass")) > CSI_STRING_BYTES:
        raise InvalidArgument(f"name is longer than {CSI_STRING_BYTES} bytes")
    check_characters(name, "name")
    return name


@dataclass(frozen=True)
class Owner:
    """The owner a volume's directory is given (``uid``/``gid`` parameters); None leaves that part as it is."""

    uid: int | None = None
    gid: int | None = None

    def __bool__(self) -> bool:
        return self.uid is not None or self.gid is not None


@dataclass(frozen=True)
class VolumeRecord:
    """The small metadata the driver keeps beside each volume directory."""

    name: str
    capacity_bytes: int
    parameters: Mapping[str, str] = field(default_factory=dict)
    version: int = 1
    mutable_parameters: Mapping[str, str] = field(default_factory=dict)
    """What ControllerModifyVolume (or CreateVolume's mutable_parameters) set; ``parameters`` never change."""

    def to_json(self) -> bytes:
        data = asdict(self)
        if not self.mutable_parameters:
            del data["mutable_parameters"]  # a record without them stays byte-for-byte what older drivers wrote
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> VolumeRecord:
        data = json.loads(raw)
        return cls(
            name=str(data["name"]),
            capacity_bytes=int(data["capacity_bytes"]),
            parameters={str(k): str(v) for k, v in data.get("parameters", {}).items()},
            version=int(data.get("version", 1)),
            mutable_parameters={str(k): str(v) for k, v in data.get("mutable_parameters", {}).items()},
        )


@dataclass(frozen=True, order=True)
class ListPosition:
    """Where a volume sits in its share's index: ordered by when its entry was made, then by entry name.

    New volumes sort after every existing one, so a paged listing picks them up on a later page; a position
    stays meaningful after its own volume is deleted, since it is compared, never looked up.
    """

    created_ns: int
    entry: str


@dataclass(frozen=True)
class ListedVolume:
    """One volume of a share's index: where it sits, its directory, and its record."""

    position: ListPosition
    subdir: str
    record: VolumeRecord


@dataclass(frozen=True)
class Publication:
    """What a node published at one target path, kept so a retry can be told from a conflict.

    ``single_writer``: published for a SINGLE_NODE_SINGLE_WRITER capability (a ReadWriteOncePod volume), so no
    other target of this node may hold the volume at the same time. ``capacity_bytes``: the volume's requested
    capacity as this node last learned it (its volume context, then NodeExpandVolume); 0 when unknown.
    """

    volume_id: str
    target: str
    source: str
    options: tuple[str, ...]
    single_writer: bool = False
    capacity_bytes: int = 0

    def same_mount(self, other: Publication) -> bool:
        """The same volume mounted the same way at the same path; what else is kept about it may differ: the access
        mode (a record written before it was kept, repeated with one) and the capacity (grown by NodeExpandVolume
        since the volume context, which a repeat brings again, was written)."""
        return (self.volume_id, self.target, self.source, self.options) == (
            other.volume_id, other.target, other.source, other.options
        )

    def to_json(self) -> bytes:
        data = asdict(self)
        for unset in [key for key in ("single_writer", "capacity_bytes") if not data[key]]:
            del data[unset]  # a record without them stays byte-for-byte what older drivers wrote
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Publication:
        data = json.loads(raw)
        return cls(
            str(data["volume_id"]), str(data["target"]), str(data["source"]), tuple(data["options"]),
            single_writer=data.get("single_writer", False) is True,
            capacity_bytes=max(0, int(data.get("capacity_bytes", 0))),
        )


@dataclass(frozen=True)
class TreeUsage:
    """What a walk of a volume's directory tree counted: bytes allocated and inodes, and how long ago.

    ``complete`` is False when the walk stopped at one of its limits (time, entries, depth): the figures are then
    what it counted, a lower bound.
    """

    used_bytes: int
    used_inodes: int
    age_seconds: float
    complete: bool = True


@dataclass(frozen=True)
class FilesystemUsage:
    """A mounted filesystem's size and use, in bytes and inodes (from statvfs)."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    total_inodes: int
    free_inodes: int
    used_inodes: int
