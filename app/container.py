"""The dependency-injector container: the one place that knows every concrete class."""

from __future__ import annotations

from dependency_injector import containers, providers

from adapters.clock import SystemClock
from adapters.metrics.prometheus import PrometheusTelemetry
from adapters.grpc.servicers import ControllerServicer, IdentityServicer, NodeServicer, StagingNodeServicer
from adapters.grpc.snapshots import SnapshotUseCases
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter
from adapters.state.publications import JsonFilePublicationStore
from adapters.storage.mounted import MountedShareStorage
from adapters.storage.userspace import NfsClientOptions, UserspaceShareStorage
from domain.controller import DeleteVolume, ProvisionVolume, ValidateVolumeCapabilities
from domain.identity import CONTROLLER_CAPABILITIES, PLUGIN_CAPABILITIES, PluginInfo, Probe, node_capabilities
from domain.locks import VolumeLocks
from domain.model import OnDelete, mount_option_allowlist
from domain.node import Publish, Unpublish
from domain.stage import Stage, Unstage
from domain.stats import GetVolumeStats
from domain.volumes import ExpandVolume, GetCapacity, GetVolume, ListVolumes, ModifyVolume
from domain.parameters import ProvisionDefaults, parse_mode
from domain.snapshots import CreateSnapshot, DeleteSnapshot, GetSnapshot, ListSnapshots


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
    mounted_storage = providers.ThreadSafeSingleton(
        MountedShareStorage,
        mounter=mounter,
        working_dir=config.working_mount_dir,
        fs_timeout=config.fs_timeout,
        snapshot_timeout=config.snapshot_timeout,
    )
    userspace_storage = providers.ThreadSafeSingleton(
        UserspaceShareStorage,
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
    )
    # --storage: mount each share (the default), or speak NFS from user space (an unprivileged controller).
    storage = providers.Selector(config.storage.kind, mount=mounted_storage, userspace=userspace_storage)
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
    provision = providers.Factory(
        ProvisionVolume, storage=storage, locks=locks, defaults=defaults, events=telemetry, mount_options=mount_options
    )
    delete = providers.Factory(DeleteVolume, storage=storage, locks=locks, clock=clock, events=telemetry)
    validate = providers.Factory(
        ValidateVolumeCapabilities, storage=storage, defaults=defaults, mount_options=mount_options
    )
    snapshots = providers.Factory(
        SnapshotUseCases,
        create=providers.Factory(CreateSnapshot, storage=storage, locks=locks, clock=clock, events=telemetry),
        delete=providers.Factory(DeleteSnapshot, storage=storage, locks=locks, events=telemetry),
        get=providers.Factory(GetSnapshot, storage=storage),
        list=providers.Factory(ListSnapshots, storage=storage, shares=config.shares),
    )
    list_volumes = providers.Factory(ListVolumes, storage=storage, shares=config.shares)
    get_volume = providers.Factory(GetVolume, storage=storage)
    get_capacity = providers.Factory(GetCapacity, storage=storage, defaults=defaults, mount_options=mount_options)
    expand = providers.Factory(ExpandVolume, storage=storage, locks=locks, mount_options=mount_options)
    modify = providers.Factory(ModifyVolume, storage=storage, locks=locks)
    publish = providers.Factory(
        Publish,
        mounter=mounter,
        publications=publications,
        locks=locks,
        events=telemetry,
        mount_options=mount_options,
        inline_volumes=config.inline_volumes,
        stagings=stagings_in_use,
    )
    unpublish = providers.Factory(Unpublish, mounter=mounter, publications=publications, locks=locks, events=telemetry)
    stage = providers.Factory(
        Stage, mounter=mounter, stagings=stagings, locks=locks, events=telemetry, mount_options=mount_options
    )
    unstage = providers.Factory(Unstage, mounter=mounter, stagings=stagings, locks=locks)
    # One instance: it remembers each volume's last usage, reported with an abnormal condition.
    volume_stats = providers.ThreadSafeSingleton(
        GetVolumeStats, mounter=mounter, publications=publications, stagings=stagings_in_use
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
        provision=provision,
        delete=delete,
        validate=validate,
        capabilities=providers.Object(CONTROLLER_CAPABILITIES),
        snapshots=snapshots,
        list_volumes=list_volumes,
        get_volume=get_volume,
        get_capacity=get_capacity,
        expand=expand,
        modify=modify,
    )
    node_capabilities = providers.Callable(
        node_capabilities, providers.Callable(lambda answer: answer == "yes", config.node_stage)
    )
    direct_node_servicer = providers.Factory(
        NodeServicer,
        publish=publish,
        unpublish=unpublish,
        stats=volume_stats,
        node_id=config.node_id,
        capabilities=node_capabilities,
        max_volumes_per_node=config.max_volumes_per_node,
    )
    staging_node_servicer = providers.Factory(
        StagingNodeServicer,
        publish=publish,
        unpublish=unpublish,
        stats=volume_stats,
        node_id=config.node_id,
        capabilities=node_capabilities,
        stage=stage,
        unstage=unstage,
        max_volumes_per_node=config.max_volumes_per_node,
    )
    node_servicer = providers.Selector(config.node_stage, yes=staging_node_servicer, no=direct_node_servicer)
