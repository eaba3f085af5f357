"""The dependency-injector container: the one place that knows every concrete class."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.grpc.servicers import ControllerServicer, IdentityServicer, NodeServicer, StagingNodeServicer
from adapters.grpc.snapshots import SnapshotUseCases
from adapters.metrics.prometheus import PrometheusTelemetry
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter
from adapters.state.publications import JsonFilePublicationStore
from adapters.storage.mounted import MountedFileSystem
from adapters.storage.share_storage import FileShareStorage
from adapters.storage.userspace import NfsClientOptions, NfsRsFileSystem
from adapters.usage.walker import TreeWalker, WalkLimits
from domain.identity import CONTROLLER_CAPABILITIES, PLUGIN_CAPABILITIES, PluginInfo, node_capabilities
from domain.locks import VolumeLocks
from domain.model import OnDelete, mount_option_allowlist
from domain.parameters import CsiDriverNfsVolumes, ProvisionDefaults, parse_mode
from domain.usecases.controller import CreateVolume, DeleteVolume, ValidateVolumeCapabilities
from domain.usecases.node import NodePublishVolume, NodeUnpublishVolume
from domain.usecases.probe import Probe
from domain.usecases.snapshots import CreateSnapshot, DeleteSnapshot, GetSnapshot, ListSnapshots
from domain.usecases.stage import NodeStageVolume, NodeUnstageVolume
from domain.usecases.stats import NodeExpandVolume, NodeGetVolumeStats
from domain.usecases.volumes import ControllerExpandVolume, ControllerGetVolume, ControllerModifyVolume, GetCapacity, ListVolumes


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True, default={"storage": {"kind": "mount"}})

    telemetry = providers.ThreadSafeSingleton(PrometheusTelemetry)
    clock = providers.Singleton(SystemClock)
    locks = providers.ThreadSafeSingleton(VolumeLocks)
    mounter = providers.ThreadSafeSingleton(
        SubprocessMounter,
        mount_command=config.mount_command,
        umount_command=config.umount_command,
        timeout=config.mount_timeout,
        retry=providers.Factory(RetryPolicy, attempts=config.mount_attempts),
        observer=telemetry,
        max_concurrent_mounts=config.max_concurrent_mounts,
        fs_timeout=config.fs_timeout,
    )
    mounted_files = providers.ThreadSafeSingleton(
        MountedFileSystem,
        mounter=mounter,
        working_dir=config.working_mount_dir,
        share_options=config.share_mount_options,
        fs_timeout=config.fs_timeout,
        snapshot_timeout=config.snapshot_timeout,
        clock=clock,
        share_idle_timeout=config.share_idle_timeout,
        max_shares_held=config.max_shares_held,
    )
    userspace_files = providers.ThreadSafeSingleton(
        NfsRsFileSystem,
        options=providers.Factory(
            NfsClientOptions,
            versions=config.storage.nfs_versions,
            port=config.storage.nfs_port,
            mount_port=config.storage.nfs_mount_port,
            uid=config.storage.nfs_uid,
            gid=config.storage.nfs_gid,
            reserved_port=config.storage.nfs_reserved_port,
            timeout=config.storage.nfs_timeout,
        ),
        snapshot_timeout=config.snapshot_timeout,
        share_options=config.share_mount_options,
        clock=clock,
        share_idle_timeout=config.share_idle_timeout,
        max_shares_held=config.max_shares_held,
    )
    # --storage: mount each share (the default), or speak NFS from user space (an unprivileged controller); the
    # driver's rules on a share are the same over either.
    storage = providers.ThreadSafeSingleton(
        FileShareStorage, files=providers.Selector(config.storage.kind, mount=mounted_files, userspace=userspace_files)
    )
    publications = providers.ThreadSafeSingleton(JsonFilePublicationStore, state_dir=config.state_dir)
    stagings = providers.ThreadSafeSingleton(JsonFilePublicationStore, state_dir=config.state_dir, kind="stagings")
    # --node-stage: "yes" stages each volume once per node and bind-mounts it into targets; "no" mounts directly.
    stagings_in_use = providers.Selector(config.node_stage, yes=stagings, no=providers.Object(None))

    defaults = providers.Factory(
        ProvisionDefaults,
        on_delete=providers.Factory(OnDelete, config.default_ondelete_policy),
        mount_permissions=providers.Callable(parse_mode, config.mount_permissions, "--mount-permissions"),
    )
    mount_options = providers.Singleton(mount_option_allowlist, config.allowed_mount_options)
    # --manage-csi-driver-nfs-volumes and its companions: what DeleteVolume does with csi-driver-nfs's volumes.
    csi_driver_nfs_volumes = providers.Factory(
        CsiDriverNfsVolumes,
        manage=config.csi_driver_nfs.manage,
        default_on_delete=providers.Factory(OnDelete, config.csi_driver_nfs.default_ondelete_policy),
        remove_archived=config.csi_driver_nfs.remove_archived,
    )
    # One provider per RPC, named after it.
    create_volume = providers.Factory(
        CreateVolume, storage=storage, locks=locks, defaults=defaults, events=telemetry, mount_options=mount_options
    )
    delete_volume = providers.Factory(
        DeleteVolume, storage=storage, locks=locks, clock=clock, events=telemetry, theirs=csi_driver_nfs_volumes
    )
    validate_volume_capabilities = providers.Factory(
        ValidateVolumeCapabilities, storage=storage, defaults=defaults, mount_options=mount_options
    )
    snapshots = providers.Factory(
        SnapshotUseCases,
        create_snapshot=providers.Factory(CreateSnapshot, storage=storage, locks=locks, clock=clock, events=telemetry),
        delete_snapshot=providers.Factory(DeleteSnapshot, storage=storage, locks=locks, events=telemetry),
        get_snapshot=providers.Factory(GetSnapshot, storage=storage),
        list_snapshots=providers.Factory(ListSnapshots, storage=storage, shares=config.shares),
    )
    list_volumes = providers.Factory(ListVolumes, storage=storage, shares=config.shares)
    controller_get_volume = providers.Factory(ControllerGetVolume, storage=storage)
    get_capacity = providers.Factory(GetCapacity, storage=storage, defaults=defaults, mount_options=mount_options)
    controller_expand_volume = providers.Factory(
        ControllerExpandVolume, storage=storage, locks=locks, mount_options=mount_options
    )
    controller_modify_volume = providers.Factory(ControllerModifyVolume, storage=storage, locks=locks)
    node_publish_volume = providers.Factory(
        NodePublishVolume,
        mounter=mounter,
        publications=publications,
        locks=locks,
        events=telemetry,
        mount_options=mount_options,
        inline_volumes=config.inline_volumes,
        stagings=stagings_in_use,
    )
    node_unpublish_volume = providers.Factory(
        NodeUnpublishVolume, mounter=mounter, publications=publications, locks=locks, events=telemetry, stagings=stagings
    )
    node_stage_volume = providers.Factory(
        NodeStageVolume, mounter=mounter, stagings=stagings, locks=locks, events=telemetry, mount_options=mount_options
    )
    node_unstage_volume = providers.Factory(
        NodeUnstageVolume, mounter=mounter, stagings=stagings, locks=locks, publications=publications
    )
    # Walks each published volume's tree in the background, bounded, for its own usage (--volume-usage-*).
    usage_meter = providers.ThreadSafeSingleton(
        TreeWalker,
        limits=providers.Factory(
            WalkLimits,
            interval=config.volume_usage.interval,
            timeout=config.volume_usage.timeout,
            max_entries=config.volume_usage.max_entries,
            rate=config.volume_usage.rate,
        ),
        observer=telemetry,
    )
    # One instance: it remembers each volume's last usage, reported with an abnormal condition.
    node_get_volume_stats = providers.ThreadSafeSingleton(
        NodeGetVolumeStats,
        mounter=mounter,
        publications=publications,
        stagings=stagings_in_use,
        meter=providers.Selector(config.volume_usage.on, yes=usage_meter, no=providers.Object(None)),
    )
    node_expand_volume = providers.Factory(
        NodeExpandVolume, publications=publications, locks=locks, stagings=stagings_in_use, mount_options=mount_options
    )
    probe = providers.Factory(
        Probe, mounter=providers.Selector(config.probe_mount_helper, yes=mounter, no=providers.Object(None))
    )
    plugin_info = providers.Factory(PluginInfo, name=config.driver_name, version=config.version)

    identity_servicer = providers.Factory(
        IdentityServicer, info=plugin_info, probe=probe, capabilities=providers.Object(PLUGIN_CAPABILITIES)
    )
    controller_servicer = providers.Factory(
        ControllerServicer,
        create_volume=create_volume,
        delete_volume=delete_volume,
        validate_volume_capabilities=validate_volume_capabilities,
        capabilities=providers.Object(CONTROLLER_CAPABILITIES),
        snapshots=snapshots,
        list_volumes=list_volumes,
        controller_get_volume=controller_get_volume,
        get_capacity=get_capacity,
        controller_expand_volume=controller_expand_volume,
        controller_modify_volume=controller_modify_volume,
    )
    node_capabilities = providers.Callable(
        node_capabilities, providers.Callable(lambda answer: answer == "yes", config.node_stage)
    )
    direct_node_servicer = providers.Factory(
        NodeServicer,
        node_publish_volume=node_publish_volume,
        node_unpublish_volume=node_unpublish_volume,
        node_get_volume_stats=node_get_volume_stats,
        node_expand_volume=node_expand_volume,
        node_id=config.node_id,
        capabilities=node_capabilities,
        max_volumes_per_node=config.max_volumes_per_node,
    )
    staging_node_servicer = providers.Factory(
        StagingNodeServicer,
        node_publish_volume=node_publish_volume,
        node_unpublish_volume=node_unpublish_volume,
        node_get_volume_stats=node_get_volume_stats,
        node_expand_volume=node_expand_volume,
        node_id=config.node_id,
        capabilities=node_capabilities,
        node_stage_volume=node_stage_volume,
        node_unstage_volume=node_unstage_volume,
        max_volumes_per_node=config.max_volumes_per_node,
    )
    node_servicer = providers.Selector(config.node_stage, yes=staging_node_servicer, no=direct_node_servicer)
