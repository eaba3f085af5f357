"""Snapshot value objects: ids, the record kept beside each archive, VolumeSnapshotClass parameters, list tokens."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Mapping
from urllib.parse import quote, unquote

from domain.errors import InvalidArgument, InvalidToken
from domain.model import METADATA_DIR, ShareRef
from domain.parameters import RESERVED_PREFIX

SNAPSHOT_DIR = f"{METADATA_DIR}/snapshots"
"""Below a share's root: each snapshot is ``<leaf>.<format>`` (the archive) and ``<leaf>.json`` (its record)."""

FORMATS = ("tar.gz", "tar")
_SAFE_LEAF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_HASHED_LEAF = re.compile(r"h\.[0-9a-f]{64}")
_KNOWN = {"server", "share", "format"}


def snapshot_leaf(name: str) -> str:
    """The file name stem of snapshot ``name``: the name itself when it is a plain word, else ``h.<sha256>``.

    A plain name has no '.', so a hashed leaf can never equal one; the record keeps the name, so two names that
    shared a leaf would still be told apart.
    """
    if _SAFE_LEAF.fullmatch(name):
        return name
    return "h." + hashlib.sha256(name.encode("utf-8", errors="surrogatepass")).hexdigest()


def is_leaf(value: str) -> bool:
    return bool(_SAFE_LEAF.fullmatch(value) or _HASHED_LEAF.fullmatch(value))


@dataclass(frozen=True)
class SnapshotId:
    """Where a snapshot lives, in a versioned string: ``nfs1snap#<server>#<share>#<leaf>``, parts percent-encoded."""

    share: ShareRef
    leaf: str

    PREFIX = "nfs1snap"

    def __str__(self) -> str:
        parts = (self.share.server, self.share.share, self.leaf)
        return "#".join((self.PREFIX, *(quote(p, safe="/:[]") for p in parts)))

    @classmethod
    def parse(cls, value: str) -> SnapshotId | None:
        """The id, or None when it is not one of ours (malformed or foreign)."""
        parts = value.split("#")
        if len(parts) != 4 or parts[0] != cls.PREFIX:
            return None
        try:
            server, share, leaf = (unquote(p, errors="strict") for p in parts[1:])
            snapshot = cls(ShareRef.parse(server, share), leaf)
        except (InvalidArgument, ValueError, UnicodeDecodeError):
            return None
        if not is_leaf(snapshot.leaf):
            return None
        return snapshot if str(snapshot) == value else None


@dataclass(frozen=True)
class PackedSnapshot:
    """What packing a volume made: the archive's bytes, and the bytes of file content in it (what a restore writes)."""

    archive_bytes: int
    content_bytes: int


@dataclass(frozen=True)
class SnapshotRecord:
    """Written after the archive is in place: a snapshot exists, complete, exactly when its record does.

    ``size_bytes`` is the restore size (the CSI snapshot's size_bytes, Kubernetes' restoreSize): the source's
    capacity, or its content when that is larger. Records of drivers before this one hold the archive's size
    there; ``archive_bytes`` (0 in those) is the archive's size now.
    """

    name: str
    source_volume_id: str
    size_bytes: int
    created_ns: int
    format: str
    ready_to_use: bool = True
    version: int = 1
    archive_bytes: int = 0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SnapshotRecord:
        data = json.loads(raw)
        record = cls(
            name=str(data["name"]),
            source_volume_id=str(data["source_volume_id"]),
            size_bytes=int(data["size_bytes"]),
            created_ns=int(data["created_ns"]),
            format=str(data["format"]),
            ready_to_use=bool(data.get("ready_to_use", True)),
            version=int(data.get("version", 1)),
            archive_bytes=int(data.get("archive_bytes", 0)),
        )
        if record.format not in FORMATS:
            raise ValueError(f"unknown archive format {record.format!r}")
        return record


def archive_name(leaf: str, fmt: str) -> str:
    return f"{leaf}.{fmt}"


def record_file(leaf: str) -> str:
    return f"{leaf}.json"


@dataclass(frozen=True)
class SnapshotParameters:
    """VolumeSnapshotClass parameters: where the archive goes (``server`` + ``share``) and ``format``."""

    share: ShareRef | None = None
    format: str = "tar.gz"

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> SnapshotParameters:
        own: dict[str, str] = {}
        seen: set[str] = set()
        for key, value in raw.items():
            if key.startswith(RESERVED_PREFIX):
                continue  # Kubernetes' own keys (the snapshotter's --extra-create-metadata); not ours to judge.
            if key.lower() not in _KNOWN:
                raise InvalidArgument(f"unknown snapshot parameter {key!r}; known: server, share, format")
            if key.lower() in seen:
                raise InvalidArgument(f"snapshot parameter {key!r} is given twice")
            seen.add(key.lower())
            if value != "":  # as in a StorageClass: an empty value is not given
                own[key.lower()] = value
        fmt = own.get("format", "tar.gz").lower()
        if fmt not in FORMATS:
            raise InvalidArgument(f"snapshot parameter format {own['format']!r} is not one of {', '.join(FORMATS)}")
        if ("server" in own) != ("share" in own):
            raise InvalidArgument("snapshot parameters server and share are given together or not at all")
        share = ShareRef.parse(own["server"], own["share"]) if "server" in own else None
        return cls(share, fmt)


def check_starting_token(token: str) -> str:
    """A token is the id of the last entry of the previous page; entries after it come next, so it stays valid
    when that entry is deleted."""
    if token and SnapshotId.parse(token) is None:
        raise InvalidToken(f"starting_token {token[:80]!r} was not issued by this driver")
    return token
