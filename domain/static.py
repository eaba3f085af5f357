"""Volumes described by their volume context: static PersistentVolumes and inline ephemeral volumes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from domain.errors import InvalidArgument
from domain.model import DEFAULT_ALLOWLIST, MountOptionAllowlist, ShareRef, VolumeId
from domain.paths import relative_subpath

EPHEMERAL = "csi.storage.k8s.io/ephemeral"
CAPACITY = "capacityBytes"
"""In the volume context CreateVolume returns (and a static volume's attributes may give): the requested capacity,
so the node can report a volume's use against it."""
_KNOWN = {"server", "share", "subdir", "mountoptions", "mountpermissions", "ondelete", CAPACITY.lower()}
MAX_CAPACITY = (1 << 63) - 1  # an int64, as CSI's capacity fields are
# Keys Kubernetes adds to a volume context: --extra-create-metadata and pod info (csi.storage.k8s.io/), and the
# external-provisioner's csiProvisionerIdentity on every dynamic PV (storage.kubernetes.io/).
RESERVED_CONTEXT_PREFIXES = ("csi.storage.k8s.io/", "storage.kubernetes.io/")


def own_context(context: Mapping[str, str]) -> dict[str, str]:
    """The context without the keys Kubernetes adds to it."""
    return {key: value for key, value in context.items() if not key.startswith(RESERVED_CONTEXT_PREFIXES)}


@dataclass(frozen=True)
class ContextVolume:
    """server:/share[/subDir] and its mount options, validated like StorageClass parameters."""

    share: ShareRef
    subdir: str
    mount_options: tuple[str, ...]

    @property
    def source(self) -> str:
        return self.share.source(self.subdir)

    @classmethod
    def from_context(
        cls, context: Mapping[str, str], allowlist: MountOptionAllowlist = DEFAULT_ALLOWLIST
    ) -> ContextVolume | None:
        """The volume the context names, or None when it names no share; hostile values are INVALID_ARGUMENT."""
        own = {key.lower(): value for key, value in own_context(context).items()}
        if "server" not in own and "share" not in own:
            return None
        unknown = sorted(set(own) - _KNOWN)
        if unknown:
            raise InvalidArgument(
                f"unknown volume attribute(s) {', '.join(unknown)}; known: server, share, subDir, mountOptions, "
                f"{CAPACITY}"
            )
        share = ShareRef.parse(own.get("server", ""), own.get("share", ""))
        subdir = relative_subpath(own["subdir"], "subDir") if own.get("subdir") else ""
        options = tuple(
            allowlist.check(option.strip(" ")) for option in own.get("mountoptions", "").split(",") if option.strip(" ")
        )
        return cls(share, subdir, options)


def context_capacity(context: Mapping[str, str]) -> int:
    """The capacity a volume context states (``capacityBytes``, decimal bytes); 0 when it states none."""
    raw = next((value for key, value in context.items() if key.lower() == CAPACITY.lower()), "")
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]{1,19}", raw) or int(raw) > MAX_CAPACITY:
        raise InvalidArgument(f"volume attribute {CAPACITY} {raw[:40]!r} must be a number of bytes")
    return int(raw)


def is_ephemeral(context: Mapping[str, str]) -> bool:
    """kubelet writes "true" or "false" (Go's FormatBool), nothing else: any other value is refused, never read as
    either (as one kind it would slip past the rule for the other)."""
    value = context.get(EPHEMERAL, "false")
    if value not in ("true", "false"):
        raise InvalidArgument(f"volume_context {EPHEMERAL} {value[:40]!r} must be \"true\" or \"false\"")
    return value == "true"


def describes_volume(volume_id: str, context: Mapping[str, str]) -> bool:
    """Whether the id is one of ours or the context names a share (an id of another format is then fine)."""
    return VolumeId.parse(volume_id) is not None or ContextVolume.from_context(context) is not None
