"""csi-driver-nfs's volumes as its v4.13 controller leaves them, for tests: its handle, the PV's volumeAttributes and
the directory on the share. Written from reading its CreateVolume (pkg/nfs/controllerserver.go: newNFSVolume,
getVolumeIDFromNfsVol) and the external-provisioner's PV, not from its code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# What the external-provisioner adds to the volumeAttributes of every PV it makes (its own identity, a timestamp
# and the driver's name).
PROVISIONER_IDENTITY = "storage.kubernetes.io/csiProvisionerIdentity"
_METADATA = {
    "csi.storage.k8s.io/pvc/namespace": "${pvc.metadata.namespace}",
    "csi.storage.k8s.io/pvc/name": "${pvc.metadata.name}",
    "csi.storage.k8s.io/pv/name": "${pv.metadata.name}",
}


@dataclass(frozen=True)
class TheirVolume:
    handle: str
    context: dict[str, str]
    subdir: str


def provision(
    share_dir: Path, name: str, parameters: dict[str, str], default_on_delete: str = "delete", mount_permissions: int = 0
) -> TheirVolume:
    """CreateVolume as csi-driver-nfs answers it, with ``parameters`` as the external-provisioner passes them (the
    StorageClass's, and with --extra-create-metadata the PVC's and PV's names), on the share at ``share_dir``.

    The directory: ``<share>/<subDir>`` made with its parents at 0777 less the umask, then chmod to mountPermissions
    when that is not 0. The handle: ``server#share#subDir#uuid#onDelete``, outer slashes trimmed, uuid the volume's
    name when the StorageClass sets subDir, onDelete written only for retain and archive.
    """
    lowered = {key.lower(): value for key, value in parameters.items()}
    replacements = {placeholder: parameters[key] for key, placeholder in _METADATA.items() if key in parameters}
    sub_dir, uuid = lowered.get("subdir", ""), ""
    if sub_dir:
        for placeholder, value in replacements.items():
            sub_dir = sub_dir.replace(placeholder, value)
        uuid = name
    else:
        sub_dir = name
    on_delete = lowered.get("ondelete") or default_on_delete
    written_on_delete = on_delete if on_delete.lower() in ("retain", "archive") else ""
    handle = "#".join(
        (lowered["server"].strip("/"), lowered["share"].strip("/"), sub_dir.strip("/"), uuid, written_on_delete)
    )
    directory = share_dir / sub_dir
    os.makedirs(directory, 0o777, exist_ok=True)
    mode = int(lowered.get("mountpermissions") or "0", 8) or mount_permissions
    if mode:
        os.chmod(directory, mode)
    context = dict(parameters)
    key = next((k for k in context if k.lower() == "subdir"), "subdir")
    context[key] = sub_dir
    context[PROVISIONER_IDENTITY] = "1767225600000-9216-nfs.csi.k8s.io"
    return TheirVolume(handle, context, sub_dir)
