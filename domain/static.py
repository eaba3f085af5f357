"""Volumes described by their volume context: static PersistentVolumes and inline ephemeral volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from domain.errors import InvalidArgument
from domain.model import DEFAULT_ALLOWLIST, MountOptionAllowlist, ShareRef, VolumeId
from domain.paths import relative_subpath

EPHEMERAL = "csi.storage.k8s.io/ephemeral"
_KNOWN = {"server", "share", "subdir", "mountoptions", "mountpermissions", "ondelete"}


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
        own = {key.lower(): value for key, value in context.items() if not key.startswith("csi.storage.k8s.io/")}
        if "server" not in own and "share" not in own:
            return None
        unknown = sorted(set(own) - _KNOWN)
        if unknown:
            raise InvalidArgument(f"unknown volume attribute(s) {', '.join(unknown)}; known: server, share, subDir, mountOptions")
        share = ShareRef.parse(own.get("server", ""), own.get("share", ""))
        subdir = relative_subpath(own["subdir"], "subDir") if own.get("subdir") else ""
        options = tuple(
            allowlist.check(option.strip(" ")) for option in own.get("mountoptions", "").split(",") if option.strip(" ")
        )
        return cls(share, subdir, options)


def is_ephemeral(context: Mapping[str, str]) -> bool:
    return context.get(EPHEMERAL, "").strip().lower() == "true"


def describes_volume(volume_id: str, context: Mapping[str, str]) -> bool:
    """Whether the id is one of ours or the context names a share (an id of another format is then fine)."""
    return VolumeId.parse(volume_id) is not None or ContextVolume.from_context(context) is not None
