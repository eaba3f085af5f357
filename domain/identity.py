"""What the driver says about itself: its name and version, and the capabilities it advertises."""

from __future__ import annotations

from dataclasses import dataclass


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
    "CREATE_DELETE_SNAPSHOT",
    "LIST_SNAPSHOTS",
    "GET_SNAPSHOT",
    "CLONE_VOLUME",
    "SINGLE_NODE_MULTI_WRITER",
)
# SINGLE_NODE_MULTI_WRITER, on both: the CO may then send SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod) apart from
# SINGLE_NODE_MULTI_WRITER (ReadWriteOnce); the node refuses a single-writer volume at a second target.
# EXPAND_VOLUME: nothing grows on a node, but NodeExpandVolume tells it the capacity its usage figures count against.
NODE_CAPABILITIES: tuple[str, ...] = ("GET_VOLUME_STATS", "VOLUME_CONDITION", "SINGLE_NODE_MULTI_WRITER", "EXPAND_VOLUME")
STAGE_CAPABILITY = "STAGE_UNSTAGE_VOLUME"


def node_capabilities(stage: bool) -> tuple[str, ...]:
    """STAGE_UNSTAGE_VOLUME only when the node stages (--node-stage): kubelet then stages before it publishes."""
    return (*NODE_CAPABILITIES, STAGE_CAPABILITY) if stage else NODE_CAPABILITIES
