"""StorageClass parameters: parsing, defaults and subDir templates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from domain.errors import InvalidArgument
from domain.model import OnDelete, Owner, ShareRef
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
_KNOWN = {
    "server", "share", "subdir", "ondelete", "mountpermissions", "uid", "gid", "archiveondelete", "pathpattern",
    "adoptexisting",
}  # fmt: skip
_KNOWN_NAMES = "server, share, subDir, onDelete, mountPermissions, uid, gid, adoptExisting; archiveOnDelete, pathPattern"
UID, GID = "uid", "gid"
MAX_ID = 2147483647
"""The largest uid or gid a parameter may name: Kubernetes' own bound on runAsUser and fsGroup (2^31 - 1)."""
# nfs-subdir-external-provisioner's pathPattern placeholders this driver can fill: the external-provisioner passes a
# CSI driver the PVC's name and namespace (--extra-create-metadata), never its labels or annotations.
_PATH_PATTERN = {".PVC.namespace": "${pvc.metadata.namespace}", ".PVC.name": "${pvc.metadata.name}"}
# Go's strconv.ParseBool, which nfs-subdir-external-provisioner reads archiveOnDelete with.
_GO_BOOL = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


@dataclass(frozen=True)
class ProvisionDefaults:
    on_delete: OnDelete = OnDelete.DELETE
    mount_permissions: int = 0


@dataclass(frozen=True)
class CsiDriverNfsVolumes:
    """What DeleteVolume does with a volume csi-driver-nfs provisioned: nothing unless ``manage``
    (--manage-csi-driver-nfs-volumes); then what its handle's onDelete says, or, when the handle has none,
    ``default_on_delete`` (csi-driver-nfs's own --default-ondelete-policy, whose default is delete). An archive
    already there is replaced only with ``remove_archived`` (its --remove-archived-volume-path)."""

    manage: bool = False
    default_on_delete: OnDelete = OnDelete.DELETE
    remove_archived: bool = False


def parse_mode(value: str, what: str) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", value):
        raise InvalidArgument(f"{what} {value!r} must be an octal mode such as 0777")
    return int(value, 8)


def parse_id(value: str, what: str) -> int:
    """A uid or gid: a decimal number from 0 to MAX_ID, exactly as written (no sign, no spaces)."""
    if not re.fullmatch(r"[0-9]{1,10}", value) or int(value) > MAX_ID:
        raise InvalidArgument(f"{what} {value[:40]!r} must be a number from 0 to {MAX_ID}")
    return int(value)


@dataclass(frozen=True)
class VolumeParameters:
    """The parameters of one CreateVolume, validated; keys are matched case-insensitively."""

    share: ShareRef
    subdir_template: str
    on_delete: OnDelete
    mount_permissions: int
    adopt_existing: bool = False
    """An existing directory without a record is taken over (its record written, its content kept), not refused."""
    owner: Owner = Owner()

    @classmethod
    def parse(cls, raw: Mapping[str, str], defaults: ProvisionDefaults) -> VolumeParameters:
        own: dict[str, str] = {}
        seen: set[str] = set()  # every spelling, an empty one too: two spellings of one key are one too many
        for key, value in raw.items():
            if key.startswith(RESERVED_PREFIX):
                continue  # Kubernetes' own keys (--extra-create-metadata); read by templates only.
            if key.lower() not in _KNOWN:
                raise InvalidArgument(f"unknown parameter {key!r}; known: {_KNOWN_NAMES}")
            if key.lower() in seen:
                raise InvalidArgument(f"parameter {key!r} is given twice")
            seen.add(key.lower())
            if value != "":  # csi-driver-nfs's StorageClasses leave some empty: not given
                own[key.lower()] = value
        return cls(
            share=ShareRef.parse(own.get("server", ""), own.get("share", "")),
            subdir_template=_subdir_template(own),
            on_delete=_on_delete(own, defaults),
            mount_permissions=(
                parse_mode(own["mountpermissions"], "mountPermissions")
                if "mountpermissions" in own
                else defaults.mount_permissions
            ),
            adopt_existing=_flag(own.get("adoptexisting", "false"), "adoptExisting"),
            owner=Owner(
                parse_id(own[UID], "parameter uid") if UID in own else None,
                parse_id(own[GID], "parameter gid") if GID in own else None,
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
        """The parameters that make two requests for one name compatible, as stored. An owner only when asked
        for, so the record of a volume made without one is what it always was."""
        record = {
            "server": self.share.server,
            "share": self.share.share,
            "subDir": subdir,
            "onDelete": self.on_delete.value,
            "mountPermissions": format(self.mount_permissions, "04o"),
        }
        if self.owner.uid is not None:
            record[UID] = str(self.owner.uid)
        if self.owner.gid is not None:
            record[GID] = str(self.owner.gid)
        return record


def _on_delete(own: Mapping[str, str], defaults: ProvisionDefaults) -> OnDelete:
    """onDelete; else nfs-subdir-external-provisioner's archiveOnDelete (true: archive, false: delete), which its
    onDelete overrides as here; else the driver's default."""
    archive = _archive_on_delete(own["archiveondelete"]) if "archiveondelete" in own else None  # checked either way
    if "ondelete" in own:
        return OnDelete.parse(own["ondelete"])
    return archive or defaults.on_delete


def _archive_on_delete(value: str) -> OnDelete:
    if value not in _GO_BOOL:
        raise InvalidArgument(f"archiveOnDelete {value!r} must be true or false")
    return OnDelete.ARCHIVE if _GO_BOOL[value] else OnDelete.DELETE


def _subdir_template(own: Mapping[str, str]) -> str:
    """subDir, or nfs-subdir-external-provisioner's pathPattern written as a subDir template."""
    pattern = own.get("pathpattern")
    if pattern is None:
        return own.get("subdir", "")
    if "subdir" in own:
        raise InvalidArgument("give subDir or pathPattern (nfs-subdir-external-provisioner's), not both")

    def translate(match: re.Match[str]) -> str:
        placeholder = match.group(1)
        if placeholder in _PATH_PATTERN:
            return _PATH_PATTERN[placeholder]
        if placeholder.startswith((".PVC.labels.", ".PVC.annotations.")):
            raise InvalidArgument(
                f"pathPattern uses ${{{placeholder}}}, which this driver cannot fill: a CSI driver is given the PVC's "
                "name and namespace and the PV's name (external-provisioner --extra-create-metadata), never the "
                "PVC's labels or annotations; use ${.PVC.namespace} and ${.PVC.name}, or a subDir template"
            )
        raise InvalidArgument(
            f"pathPattern placeholder ${{{placeholder}}} is unknown; known: ${{.PVC.namespace}}, ${{.PVC.name}}"
        )

    return _PLACEHOLDER.sub(translate, pattern)


def _flag(value: str, what: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise InvalidArgument(f"{what} {value!r} must be true or false")
    return value.lower() == "true"


MOUNT_PERMISSIONS = "mountPermissions"
_MUTABLE = {MOUNT_PERMISSIONS.lower(): MOUNT_PERMISSIONS, UID: UID, GID: GID}


def parse_mutable(raw: Mapping[str, str]) -> dict[str, str]:
    """Mutable parameters (a VolumeAttributesClass), validated whole before any is applied, in their stored form.

    ``mountPermissions``, ``uid`` and ``gid``: the controller applies them to the volume's directory at once (its
    mode and owner, not its content's). Mount options are not mutable here: they reach a node only through the
    PersistentVolume, which the driver cannot change, so storing them would promise what no mount would honour.
    ``onDelete`` is part of the volume id, which never changes.
    """
    parsed: dict[str, str] = {}
    for key, value in raw.items():
        canonical = _MUTABLE.get(key.lower())
        if canonical is None:
            raise InvalidArgument(
                f"mutable parameter {key[:80]!r} is not supported; supported: {MOUNT_PERMISSIONS}, {UID}, {GID}"
            )
        if canonical in parsed:
            raise InvalidArgument(f"mutable parameter {key!r} is given twice")
        if canonical != MOUNT_PERMISSIONS:
            parsed[canonical] = str(parse_id(value, f"mutable parameter {key}"))
            continue
        mode = parse_mode(value, f"mutable parameter {key}")
        if mode == 0:
            raise InvalidArgument(f"mutable parameter {key} must not be 0 (no one could use the volume); e.g. 0775")
        parsed[canonical] = format(mode, "04o")
    return parsed


def effective_mode(parameters: Mapping[str, str], mutable: Mapping[str, str]) -> int:
    """The mode a volume's directory should have: the mutable value if set, else the StorageClass's (0: leave it)."""
    return parse_mode(mutable.get(MOUNT_PERMISSIONS) or parameters.get(MOUNT_PERMISSIONS, "0"), MOUNT_PERMISSIONS)


def effective_owner(parameters: Mapping[str, str], mutable: Mapping[str, str]) -> Owner:
    """The owner a volume's directory should have, each part the mutable value if set, else the StorageClass's."""
    uid, gid = mutable.get(UID) or parameters.get(UID), mutable.get(GID) or parameters.get(GID)
    return Owner(None if uid is None else parse_id(uid, UID), None if gid is None else parse_id(gid, GID))
