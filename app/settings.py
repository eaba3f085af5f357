"""Command-line flags, named like the reference NFS driver's where they overlap."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Sequence

from adapters.storage.userspace import NfsClientOptions, client_options
from domain.errors import InvalidArgument
from domain.model import ShareRef, mount_option_allowlist, parse_share_list, parse_share_mount_options

DEFAULT_DRIVER_NAME = "nfs.csi.ownedstorage.dev"
VERSION = "0.1.0"


@dataclass(frozen=True)
class Settings:
    endpoint: str
    node_id: str
    driver_name: str
    mode: str
    working_mount_dir: str
    default_ondelete_policy: str
    mount_permissions: str
    metrics_address: str
    mount_command: str
    umount_command: str
    mount_timeout: float
    mount_attempts: int
    state_dir: str
    workers: int
    grace_period: float
    log_level: str
    storage: str = "mount"
    nfs_versions: tuple[str, ...] = ("4.1",)
    nfs_port: int = 0
    nfs_mount_port: int = 0
    nfs_uid: int = -1
    nfs_gid: int = -1
    nfs_reserved_port: bool = False
    nfs_timeout: float = 30.0
    fs_timeout: float = 30.0
    max_concurrent_mounts: int = 8
    allowed_mount_options: str = ""
    inline_volumes: bool = False
    shares: tuple[ShareRef, ...] = ()
    node_stage: bool = False
    max_volumes_per_node: int = 0
    snapshot_timeout: float = 600.0
    manage_csi_driver_nfs_volumes: bool = False
    csi_driver_nfs_default_ondelete_policy: str = "delete"
    csi_driver_nfs_remove_archived_volume_path: bool = False
    share_mount_options: tuple[tuple[ShareRef, tuple[str, ...]], ...] = ()
    volume_usage_interval: float = 300.0
    volume_usage_timeout: float = 120.0
    volume_usage_max_entries: int = 1_000_000
    volume_usage_rate: float = 10_000.0
    share_idle_timeout: float = 300.0
    max_shares_held: int = 32

    def storage_config(self) -> dict[str, object]:
        """The container's ``storage`` section: which ShareStorage the controller uses, and how it reaches NFS."""
        return {
            "kind": self.storage,
            "nfs_versions": self.nfs_versions,
            "nfs_port": self.nfs_port or None,
            "nfs_mount_port": self.nfs_mount_port or None,
            "nfs_uid": None if self.nfs_uid < 0 else self.nfs_uid,
            "nfs_gid": None if self.nfs_gid < 0 else self.nfs_gid,
            "nfs_reserved_port": self.nfs_reserved_port,
            "nfs_timeout": self.nfs_timeout,
        }

    @property
    def serves_controller(self) -> bool:
        return self.mode in ("controller", "all")

    @property
    def serves_node(self) -> bool:
        return self.mode in ("node", "all")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nfs-csi-driver", description="CSI driver for NFS")
    p.add_argument("--endpoint", default="unix:///csi/csi.sock", help="unix:///path or tcp://host:port")
    p.add_argument("--nodeid", default=os.uname().nodename, help="this node's id (NodeGetInfo)")
    p.add_argument("--drivername", default=DEFAULT_DRIVER_NAME)
    p.add_argument("--mode", choices=("controller", "node", "all"), default="all")
    p.add_argument("--working-mount-dir", default="/tmp/nfs-csi", help="where the controller mounts shares")
    p.add_argument("--default-ondelete-policy", choices=("delete", "retain", "archive"), default="delete")
    p.add_argument("--mount-permissions", default="0", help="octal mode for new volume directories; 0 leaves it")
    p.add_argument("--metrics-address", default="", help="host:port for /metrics; empty disables it")
    p.add_argument("--mount-command", default="mount.nfs", help="mount.nfs name on PATH, or a path")
    p.add_argument("--umount-command", default="umount", help="umount name on PATH, or a path")
    p.add_argument("--mount-timeout", type=float, default=60.0, help="seconds before a mount or umount is killed")
    p.add_argument("--mount-attempts", type=int, default=3, help="tries for a transient mount failure")
    p.add_argument("--state-dir", default="/var/lib/nfs-csi", help="node-local state (publications)")
    p.add_argument("--workers", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--grace-period", type=float, default=30.0, help="seconds SIGTERM waits for calls in flight")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--storage", choices=("mount", "userspace"), default="mount",
        help="how the controller reaches shares: mount them (needs privilege) or speak NFS from user space",
    )
    p.add_argument("--nfs-version", default="4.1", help="userspace storage: 4.1, 4.0 or 3, or a fallback list like 4.1,4.0")
    p.add_argument("--nfs-port", type=int, default=0, help="userspace storage: NFS server port; 0 is the protocol's default")
    p.add_argument("--nfs-mount-port", type=int, default=0, help="userspace storage, NFSv3: MOUNT port; 0 asks the portmapper")
    p.add_argument("--nfs-uid", type=int, default=-1, help="userspace storage: AUTH_SYS uid; -1 is this process's")
    p.add_argument("--nfs-gid", type=int, default=-1, help="userspace storage: AUTH_SYS gid; -1 is this process's")
    p.add_argument(
        "--nfs-reserved-port", action="store_true",
        help="userspace storage: send from a port below 1024 (needs CAP_NET_BIND_SERVICE), for exports marked secure",
    )
    p.add_argument("--nfs-timeout", type=float, default=30.0, help="userspace storage: seconds to connect and per operation")
    p.add_argument(
        "--fs-timeout", type=float, default=30.0,
        help="seconds for each filesystem call on a share or a publish target (stat, mkdir, rename, delete, ...)",
    )
    p.add_argument(
        "--max-concurrent-mounts", type=int, default=8,
        help="mount.nfs processes that may run at once (each costs memory); more wait, up to --mount-timeout",
    )
    p.add_argument(
        "--allowed-mount-options", default="",
        help="comma-separated mount option names a StorageClass or volume may ask for; empty: the built-in list",
    )
    p.add_argument(
        "--enable-inline-volumes", action="store_true",
        help="serve CSI inline ephemeral volumes (anyone who can create a pod may then mount any export it names); "
        "the CSIDriver must list Ephemeral in volumeLifecycleModes",
    )
    p.add_argument(
        "--shares", default="",
        help="comma-separated server:/path list of the shares the controller serves; ListVolumes and ListSnapshots "
        "list what is on them (a share a StorageClass names still works without being listed)",
    )
    p.add_argument(
        "--node-stage", action="store_true",
        help="mount each volume once per node at kubelet's staging path (NodeStageVolume) and bind-mount it into "
        "each pod; default: mount every publish directly",
    )
    p.add_argument(
        "--max-volumes-per-node", type=int, default=0,
        help="most volumes the scheduler may place on this node (NodeGetInfo); 0: no limit",
    )
    p.add_argument(
        "--snapshot-timeout", type=float, default=600.0,
        help="seconds for packing a snapshot, restoring one or cloning a volume, as a whole, counted from the call; "
        "a retry while one runs is ABORTED",
    )
    p.add_argument(
        "--manage-csi-driver-nfs-volumes", action="store_true",
        help="DeleteVolume of a volume csi-driver-nfs provisioned deletes, archives or retains its directory as its "
        "handle's onDelete says, as csi-driver-nfs would; off: OK, and the directory is left untouched",
    )
    p.add_argument(
        "--csi-driver-nfs-default-ondelete-policy", choices=("delete", "retain", "archive"), default="delete",
        help="with --manage-csi-driver-nfs-volumes, for a handle with no onDelete: what csi-driver-nfs's own "
        "--default-ondelete-policy was (its default: delete)",
    )
    p.add_argument(
        "--csi-driver-nfs-remove-archived-volume-path", action="store_true",
        help="with --manage-csi-driver-nfs-volumes, replace an archived-<subDir> already there when archiving, as "
        "csi-driver-nfs's --remove-archived-volume-path; off: such an archive is FAILED_PRECONDITION",
    )
    p.add_argument(
        "--share-mount-options", default="",
        help="the options the controller mounts (or, with --storage userspace, reaches) each share with, as "
        "'server:/path=opt,opt;server:/path=opt' (each option on the allowlist); a share not named is mounted "
        "with none",
    )
    p.add_argument(
        "--volume-usage-interval", type=float, default=300.0,
        help="node: seconds before a volume's own usage (walked in the background) is walked again when asked for; "
        "0 reports the share's statvfs instead, as before",
    )
    p.add_argument(
        "--volume-usage-timeout", type=float, default=120.0,
        help="node: seconds one walk of a volume may take; it then stops and reports at least what it counted",
    )
    p.add_argument(
        "--volume-usage-max-entries", type=int, default=1_000_000,
        help="node: entries one walk of a volume counts at most; it then stops and reports at least that",
    )
    p.add_argument(
        "--volume-usage-rate", type=float, default=10_000.0,
        help="node: entries a second one walk looks at, at most (each is an lstat, to the NFS server)",
    )
    p.add_argument(
        "--share-idle-timeout", type=float, default=300.0,
        help="seconds a share no call uses stays mounted (or its userspace client connected) before it is let go",
    )
    p.add_argument(
        "--max-shares-held", type=int, default=32,
        help="most idle shares the controller keeps mounted (or connected); past it the least recently used go",
    )
    p.add_argument("--version", action="version", version=VERSION)
    return p


def parse(argv: Sequence[str] | None = None) -> Settings:
    args = parser().parse_args(argv)
    if not args.endpoint.startswith(("unix://", "tcp://")):
        parser().error("--endpoint must start with unix:// or tcp://")
    if args.mount_attempts < 1 or args.workers < 1 or args.mount_timeout <= 0:
        parser().error("--mount-attempts and --workers must be at least 1, --mount-timeout positive")
    if args.snapshot_timeout <= 0:
        parser().error("--snapshot-timeout must be positive")
    if args.fs_timeout <= 0 or args.max_concurrent_mounts < 1:
        parser().error("--fs-timeout must be positive, --max-concurrent-mounts at least 1")
    if args.share_idle_timeout < 0 or args.max_shares_held < 1:
        parser().error("--share-idle-timeout must not be negative, --max-shares-held at least 1")
    try:
        mount_option_allowlist(args.allowed_mount_options)
    except InvalidArgument as err:
        parser().error(f"--allowed-mount-options: {err}")
    try:
        shares = parse_share_list(args.shares)
    except InvalidArgument as err:
        parser().error(f"--shares: {err}")
    try:
        share_mount_options = parse_share_mount_options(
            args.share_mount_options, mount_option_allowlist(args.allowed_mount_options)
        )
    except InvalidArgument as err:
        parser().error(f"--share-mount-options: {err}")
    if args.volume_usage_interval < 0 or min(args.volume_usage_timeout, args.volume_usage_rate) <= 0:
        parser().error("--volume-usage-interval must be 0 (off) or more, --volume-usage-timeout and -rate positive")
    if args.volume_usage_max_entries < 1:
        parser().error("--volume-usage-max-entries must be at least 1")
    if args.max_volumes_per_node < 0:
        parser().error("--max-volumes-per-node must be 0 (no limit) or more")
    nfs_versions = tuple(v.strip() for v in args.nfs_version.split(","))
    if not all(v in ("4.1", "4.0", "3") for v in nfs_versions):
        parser().error("--nfs-version takes 4.1, 4.0 or 3, or a comma-separated fallback list of them")
    if not (0 <= args.nfs_port <= 65535 and 0 <= args.nfs_mount_port <= 65535) or args.nfs_timeout <= 0:
        parser().error("--nfs-port and --nfs-mount-port must be ports (0 for the default), --nfs-timeout positive")
    if args.storage == "userspace":
        for share, options in share_mount_options.items():
            try:
                client_options(NfsClientOptions(versions=nfs_versions), options)
            except ValueError as err:
                parser().error(f"--share-mount-options: share {share.source()}: {err}")
    return Settings(
        endpoint=args.endpoint,
        node_id=args.nodeid,
        driver_name=args.drivername,
        mode=args.mode,
        working_mount_dir=args.working_mount_dir,
        default_ondelete_policy=args.default_ondelete_policy,
        mount_permissions=args.mount_permissions,
        metrics_address=args.metrics_address,
        mount_command=args.mount_command,
        umount_command=args.umount_command,
        mount_timeout=args.mount_timeout,
        mount_attempts=args.mount_attempts,
        state_dir=args.state_dir,
        workers=args.workers,
        grace_period=args.grace_period,
        log_level=args.log_level,
        storage=args.storage,
        nfs_versions=nfs_versions,
        nfs_port=args.nfs_port,
        nfs_mount_port=args.nfs_mount_port,
        nfs_uid=args.nfs_uid,
        nfs_gid=args.nfs_gid,
        nfs_reserved_port=args.nfs_reserved_port,
        nfs_timeout=args.nfs_timeout,
        fs_timeout=args.fs_timeout,
        max_concurrent_mounts=args.max_concurrent_mounts,
        allowed_mount_options=args.allowed_mount_options,
        inline_volumes=args.enable_inline_volumes,
        shares=shares,
        node_stage=args.node_stage,
        max_volumes_per_node=args.max_volumes_per_node,
        snapshot_timeout=args.snapshot_timeout,
        manage_csi_driver_nfs_volumes=args.manage_csi_driver_nfs_volumes,
        csi_driver_nfs_default_ondelete_policy=args.csi_driver_nfs_default_ondelete_policy,
        csi_driver_nfs_remove_archived_volume_path=args.csi_driver_nfs_remove_archived_volume_path,
        share_mount_options=tuple(share_mount_options.items()),
        volume_usage_interval=args.volume_usage_interval,
        volume_usage_timeout=args.volume_usage_timeout,
        volume_usage_max_entries=args.volume_usage_max_entries,
        volume_usage_rate=args.volume_usage_rate,
        share_idle_timeout=args.share_idle_timeout,
        max_shares_held=args.max_shares_held,
    )
