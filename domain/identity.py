"""Identity and capability answers."""

from __future__ import annotations

from dataclasses import dataclass

from domain.needs import Mounting


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str


# Capabilities by their CSI enum names; only what is implemented and passes csi-sanity.
# Plugin capabilities describe the plugin "as a whole": the spec wants every instance to return the same set
# "regardless of ... which RPCs an instance is serving", so a node-only process reports CONTROLLER_SERVICE too.
# "VolumeExpansion.ONLINE": ControllerExpandVolume works while the volume is published (a recorded size only).
PLUGIN_CAPABILITIES: tuple[str, ...] = ("CONTROLLER_SERVICE", "VolumeExpansion.ONLINE")
CONTROLLER_CAPABILITIES: tuple[str, ...] = (
    "CREATE_DELETE_VOLUME",
    "LIST_VOLUMES",
    "GET_CAPACITY",
    "EXPAND_VOLUME",
    "GET_VOLUME",
    "VOLUME_CONDITION",
    "MODIFY_VOLUME",
)
NODE_CAPABILITIES: tuple[str, ...] = ()


class Probe:
    """Probe: ready when what this process depends on is present (mount.nfs, where it mounts)."""

    def __init__(self, mounter: Mounting | None) -> None:
        self._mounter = mounter

    def __call__(self) -> None:
        if self._mounter is not None:
            self._mounter.check_ready()
