"""StorageClass parameters: parsing, defaults and subDir templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from domain.errors import InvalidArgument
from domain.model import OnDelete, ShareRef
from domain.paths import relative_subpath

PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"
RESERVED_PREFIX = "csi.storage.k8s.io/"

_TEMPLATES = {
    "pvc.metadata.name": PVC_NAME,
    "pvc.metadata.namespace": PVC_NAMESPACE,
    "pv.metadata.name": PV_NAME,
}
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_KNOWN = {"server", "share", "subdir", "ondelete", "mountpermissions"}


@dataclass(frozen=True)
class ProvisionDefaults:
    on_delete: OnDelete = OnDelete.DELETE
    mount_permissions: int = 0


def parse_mode(value: str, what: str) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", value):
        raise InvalidArgument(f"{what} {value!r} must be an octal mode such as 0777")
    return int(value, 8)


@dataclass(frozen=True)
class VolumeParameters:
    """The parameters of one CreateVolume, validated; keys are matched case-insensitively."""

    share: ShareRef
    subdir_template: str
    on_delete: OnDelete
    mount_permissions: int

    @classmethod
    def parse(cls, raw: Mapping[str, str], defaults: ProvisionDefaults) -> VolumeParameters:
        own: dict[str, str] = {}
        for key, value in raw.items():
            if key.startswith(RESERVED_PREFIX):
                continue  # Kubernetes' own keys (--extra-create-metadata); read by templates only.
            if key.lower() not in _KNOWN:
                raise InvalidArgument(
                    f"unknown parameter {key!r}; known: server, share, subDir, onDelete, mountPermissions"
                )
            if key.lower() in own:
                raise InvalidArgument(f"parameter {key!r} is given twice")
            own[key.lower()] = value
        return cls(
            share=ShareRef.parse(own.get("server", ""), own.get("share", "")),
            subdir_template=own.get("subdir", ""),
            on_delete=OnDelete.parse(own["ondelete"]) if "ondelete" in own else defaults.on_delete,
            mount_permissions=(
                parse_mode(own["mountpermissions"], "mountPermissions")
                if "mountpermissions" in own
                else defaults.mount_permissions
            ),
        )

    def resolve_subdir(self, name: str, raw: Mapping[str, str]) -> str:
        """The volume's directory below the share: subDir with templates filled, or the name."""
        if not self.subdir_template:
            if "/" in name:
                raise InvalidArgument(f"volume name {name!r} must not contain '/' when it names the directory")
            return relative_subpath(name, "volume name")

        def fill(match: re.Match[str]) -> str:
            key = _TEMPLATES.get(match.group(1))
            if key is None:
                raise InvalidArgument(
                    f"subDir placeholder ${{{match.group(1)}}} is unknown; known: "
                    + ", ".join(f"${{{t}}}" for t in _TEMPLATES)
                )
            value = raw.get(key, "")
            if not value or "/" in value:
                raise InvalidArgument(
                    f"subDir uses ${{{match.group(1)}}} but {key} is missing or invalid "
                    "(run the provisioner with --extra-create-metadata)"
                )
            return value

        filled = _PLACEHOLDER.sub(fill, self.subdir_template)
        if "${" in _PLACEHOLDER.sub("", self.subdir_template):
            raise InvalidArgument(f"subDir {self.subdir_template!r} has a '${{' without its closing '}}'")
        return relative_subpath(filled, "subDir")

    def as_record(self, subdir: str) -> dict[str, str]:
        """The parameters that make two requests for one name compatible, as stored."""
        return {
            "server": self.share.server,
            "share": self.share.share,
            "subDir": subdir,
            "onDelete": self.on_delete.value,
            "mountPermissions": format(self.mount_permissions, "04o"),
        }


MOUNT_PERMISSIONS = "mountPermissions"
_MUTABLE = {MOUNT_PERMISSIONS.lower(): MOUNT_PERMISSIONS}


def parse_mutable(raw: Mapping[str, str]) -> dict[str, str]:
    """Mutable parameters (a VolumeAttributesClass), validated whole before any is applied, in their stored form.

    Only ``mountPermissions``: the controller applies it to the volume's directory at once. Mount options are not
    mutable here: they reach a node only through the PersistentVolume, which the driver cannot change, so storing
    them would promise what no mount would honour. ``onDelete`` is part of the volume id, which never changes.
    """
    parsed: dict[str, str] = {}
    for key, value in raw.items():
        canonical = _MUTABLE.get(key.lower())
        if canonical is None:
            raise InvalidArgument(f"mutable parameter {key!r} is not supported; supported: {MOUNT_PERMISSIONS}")
        if canonical in parsed:
            raise InvalidArgument(f"mutable parameter {key!r} is given twice")
        mode = parse_mode(value, f"mutable parameter {key}")
        if mode == 0:
            raise InvalidArgument(f"mutable parameter {key} must not be 0 (no one could use the volume); e.g. 0775")
        parsed[canonical] = format(mode, "04o")
    return parsed


def effective_mode(parameters: Mapping[str, str], mutable: Mapping[str, str]) -> int:
    """The mode a volume's directory should have: the mutable value if set, else the StorageClass's (0: leave it)."""
    return parse_mode(mutable.get(MOUNT_PERMISSIONS) or parameters.get(MOUNT_PERMISSIONS, "0"), MOUNT_PERMISSIONS)
