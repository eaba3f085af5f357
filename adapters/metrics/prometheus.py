"""Prometheus metrics from one registry: CSI calls, the mount helper, provisioning and node state."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters.mount.observer import MountObserver
from adapters.usage.walker import UsageObserver
from domain.events import Event
from ports.events import EventSink

CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
MOUNT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
WALK_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300)
FILLED_LEVELS = ("0.8", "0.9", "1")  # shares of a volume's capacity that nfs_csi_volumes_filled counts volumes at

_EVENT_COUNTERS = {
    Event.VOLUME_CREATED: ("nfs_csi_volumes_created_total", "Volumes CreateVolume made (a repeated call counts once)."),
    Event.VOLUME_ADOPTED: (
        "nfs_csi_volumes_adopted_total",
        "Existing directories CreateVolume took over with adoptExisting (a repeated call counts once).",
    ),
    Event.VOLUME_DELETED: ("nfs_csi_volumes_deleted_total", "Volumes DeleteVolume removed (onDelete: delete)."),
    Event.VOLUME_ARCHIVED: ("nfs_csi_volumes_archived_total", "Volumes DeleteVolume archived (onDelete: archive)."),
    Event.VOLUME_RETAINED: ("nfs_csi_volumes_retained_total", "Volumes DeleteVolume retained (onDelete: retain)."),
    Event.SNAPSHOT_CREATED: ("nfs_csi_snapshots_created_total", "Snapshots CreateSnapshot archived (a retry counts once)."),
    Event.SNAPSHOT_DELETED: ("nfs_csi_snapshots_deleted_total", "Snapshots DeleteSnapshot removed."),
    Event.STALE_HANDLE_RECOVERED: (
        "nfs_csi_stale_handle_recoveries_total",
        "Publish targets found stale (ESTALE) and mounted again.",
    ),
}


class PrometheusTelemetry(EventSink, MountObserver, UsageObserver):
    """Every metric the driver exports. Labels are bounded: method, code, kind, result; never a volume id."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("csi_calls", "CSI calls by method and gRPC status code.", ["method", "code"], registry=r)
        self.call_seconds = Histogram(
            "csi_call_duration_seconds", "CSI call duration by method.", ["method"], buckets=CALL_BUCKETS, registry=r
        )
        self.calls_in_flight = Gauge("csi_calls_in_flight", "CSI calls being served, by method.", ["method"], registry=r)
        self.mount_operations = Counter(
            "nfs_csi_mount_operations",
            "mount.nfs and umount runs by kind (mount, umount) and result (ok, error, timeout).",
            ["kind", "result"],
            registry=r,
        )
        self.mount_seconds = Histogram(
            "nfs_csi_mount_duration_seconds", "mount.nfs and umount run time by kind.", ["kind"], buckets=MOUNT_BUCKETS, registry=r
        )
        self.mount_retries = Counter("nfs_csi_mount_retries", "Transient mount failures tried again, by kind.", ["kind"], registry=r)
        self.mount_timeouts = Counter(
            "nfs_csi_mount_timeouts", "mount.nfs and umount runs killed at their timeout, by kind.", ["kind"], registry=r
        )
        self.mount_children = Gauge("nfs_csi_mount_children", "mount.nfs and umount processes running now.", registry=r)
        self.share_mounts = Gauge(
            "nfs_csi_share_mounts", "Shares the controller holds open: mounts, or userspace NFS connections.", registry=r
        )
        self.published_volumes = Gauge("nfs_csi_published_volumes", "Volumes this node has published.", registry=r)
        self.volumes_filled = Gauge(
            "nfs_csi_volumes_filled",
            "Volumes published on this node whose own usage is at least this share of their requested capacity "
            "(last measured; volumes of unknown capacity not counted).",
            ["at_least"],
            registry=r,
        )
        self.usage_walks = Counter(
            "nfs_csi_volume_usage_walks",
            "Walks of a volume's tree for its usage, by result (complete, limited: stopped at a bound, failed).",
            ["result"],
            registry=r,
        )
        self.usage_walk_seconds = Histogram(
            "nfs_csi_volume_usage_walk_duration_seconds", "Time one walk of a volume's tree took.", buckets=WALK_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge(
            "nfs_csi_build_info", "Always 1; labels name the version, driver name and mode.", ["version", "driver", "mode"], registry=r
        )
        self.events = {
            event: Counter(name.removesuffix("_total"), help_text, registry=r)
            for event, (name, help_text) in _EVENT_COUNTERS.items()
        }
        for kind in ("mount", "umount"):
            for result in ("ok", "error", "timeout"):
                self.mount_operations.labels(kind, result)
            self.mount_retries.labels(kind)
            self.mount_timeouts.labels(kind)
        for result in ("complete", "limited", "failed"):
            self.usage_walks.labels(result)

    # CSI calls (the gRPC interceptor reports here)
    def call_started(self, method: str) -> None:
        self.calls_in_flight.labels(method).inc()

    def call_finished(self, method: str, code: str, seconds: float) -> None:
        self.calls_in_flight.labels(method).dec()
        self.calls.labels(method, code).inc()
        self.call_seconds.labels(method).observe(seconds)

    # Domain events
    def emit(self, event: Event) -> None:
        counter = self.events.get(event)
        if counter is not None:
            counter.inc()

    # Mount helper
    def operation(self, kind: str, result: str, seconds: float) -> None:
        self.mount_operations.labels(kind, result).inc()
        self.mount_seconds.labels(kind).observe(seconds)
        if result == "timeout":
            self.mount_timeouts.labels(kind).inc()

    def retry(self, kind: str) -> None:
        self.mount_retries.labels(kind).inc()

    def child_started(self) -> None:
        self.mount_children.inc()

    def child_finished(self) -> None:
        self.mount_children.dec()

    # Volume usage walks
    def walk(self, result: str, seconds: float) -> None:
        self.usage_walks.labels(result).inc()
        self.usage_walk_seconds.observe(seconds)

    # State read at scrape time, so it is right after a restart too
    def watch(
        self,
        share_mounts: Callable[[], int] | None,
        published: Callable[[], int] | None,
        filled: Callable[[float], int] | None = None,
    ) -> None:
        if share_mounts is not None:
            self.share_mounts.set_function(lambda: float(share_mounts()))
        if published is not None:
            self.published_volumes.set_function(lambda: float(published()))
        if filled is not None:
            for level in FILLED_LEVELS:
                self.volumes_filled.labels(level).set_function(_counting(filled, float(level)))


def _counting(filled: Callable[[float], int], share: float) -> Callable[[], float]:
    return lambda: float(filled(share))
