"""Exact metric values, read from the registry after use cases and the mount helper run against fakes."""

from __future__ import annotations

import pytest

from adapters.metrics.prometheus import PrometheusTelemetry
from adapters.mount.process import CommandTimedOut, Completed
from adapters.mount.subprocess_mounter import RetryPolicy, SubprocessMounter, TransientMountError
from domain.errors import DeadlineExceeded
from domain.locks import VolumeLocks
from domain.model import AccessMode, CapacityRange, VolumeCapability
from domain.parameters import ProvisionDefaults
from domain.usecases.controller import CreateVolume, CreateVolumeCommand, DeleteVolume, DeleteVolumeCommand
from domain.usecases.node import NodePublishVolume, NodePublishVolumeCommand, NodeUnpublishVolume, NodeUnpublishVolumeCommand
from tests.fakes import FakeClock, FakeMounter, FakePublicationStore, FakeShareStorage

RWX = (VolumeCapability(AccessMode.MULTI_NODE_MULTI_WRITER),)
PARAMS = {"server": "nfs.example", "share": "/exports"}


@pytest.fixture
def telemetry() -> PrometheusTelemetry:
    return PrometheusTelemetry()


def value(telemetry: PrometheusTelemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


class TestProvisioningMetrics:
    def test_created_deleted_and_archived_volumes_are_counted_once_each(self, telemetry: PrometheusTelemetry) -> None:
        storage, locks = FakeShareStorage(), VolumeLocks()
        provision = CreateVolume(storage, locks, ProvisionDefaults(), events=telemetry)
        delete = DeleteVolume(storage, locks, FakeClock(), events=telemetry)
        a = provision(CreateVolumeCommand("a", RWX, CapacityRange(1), PARAMS))
        provision(CreateVolumeCommand("a", RWX, CapacityRange(1), PARAMS))  # a retry creates nothing
        b = provision(CreateVolumeCommand("b", RWX, CapacityRange(1), {**PARAMS, "onDelete": "archive"}))
        delete(DeleteVolumeCommand(str(a.volume_id)))
        delete(DeleteVolumeCommand(str(a.volume_id)))  # already gone: nothing deleted
        delete(DeleteVolumeCommand(str(b.volume_id)))
        assert value(telemetry, "nfs_csi_volumes_created_total") == 2
        assert value(telemetry, "nfs_csi_volumes_deleted_total") == 1
        assert value(telemetry, "nfs_csi_volumes_archived_total") == 1
        assert value(telemetry, "nfs_csi_volumes_retained_total") == 0


class TestNodeMetrics:
    def test_published_volumes_follow_the_publication_store(self, telemetry: PrometheusTelemetry) -> None:
        mounter, store, locks = FakeMounter(), FakePublicationStore(), VolumeLocks()
        telemetry.watch(share_mounts=None, published=store.count)
        publish, unpublish = NodePublishVolume(mounter, store, locks, telemetry), NodeUnpublishVolume(mounter, store, locks, telemetry)
        volume = "nfs1#nfs.example#/exports#v#delete"
        for target in ("/pods/a/mount", "/pods/b/mount"):
            publish(NodePublishVolumeCommand(volume, target, RWX[0]))
        assert value(telemetry, "nfs_csi_published_volumes") == 2
        unpublish(NodeUnpublishVolumeCommand(volume, "/pods/a/mount"))
        assert value(telemetry, "nfs_csi_published_volumes") == 1


class TestMountHelperMetrics:
    def runner(self, outcomes: list[object]):  # type: ignore[no-untyped-def]
        def run(argv, timeout):  # type: ignore[no-untyped-def]
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return run

    def test_attempts_results_and_retries_are_counted(self, telemetry: PrometheusTelemetry) -> None:
        transient = Completed(("mount.nfs",), 32, "", "mount.nfs: Connection timed out")
        ok = Completed(("mount.nfs",), 0, "", "")
        mounter = SubprocessMounter(
            mount_command="/bin/true",
            retry=RetryPolicy(attempts=3, initial_wait=0, max_wait=0),
            runner=self.runner([transient, transient, ok]),
            observer=telemetry,
        )
        mounter.mount("h:/x", "/t", [])
        assert value(telemetry, "nfs_csi_mount_operations_total", kind="mount", result="error") == 2
        assert value(telemetry, "nfs_csi_mount_operations_total", kind="mount", result="ok") == 1
        assert value(telemetry, "nfs_csi_mount_retries_total", kind="mount") == 2
        assert value(telemetry, "nfs_csi_mount_duration_seconds_count", kind="mount") == 3
        assert value(telemetry, "nfs_csi_mount_children") == 0

    def test_a_timeout_is_counted_as_such(self, telemetry: PrometheusTelemetry) -> None:
        mounter = SubprocessMounter(
            mount_command="/bin/true",
            retry=RetryPolicy(attempts=1),
            runner=self.runner([CommandTimedOut(["mount.nfs"], 1.0)]),
            observer=telemetry,
        )
        with pytest.raises(DeadlineExceeded):
            mounter.mount("h:/x", "/t", [])
        assert value(telemetry, "nfs_csi_mount_timeouts_total", kind="mount") == 1
        assert value(telemetry, "nfs_csi_mount_operations_total", kind="mount", result="timeout") == 1

    def test_retries_stop(self, telemetry: PrometheusTelemetry) -> None:
        transient = Completed(("mount.nfs",), 32, "", "Connection refused")
        mounter = SubprocessMounter(
            mount_command="/bin/true",
            retry=RetryPolicy(attempts=2, initial_wait=0, max_wait=0),
            runner=self.runner([transient, transient]),
            observer=telemetry,
        )
        with pytest.raises(TransientMountError):
            mounter.mount("h:/x", "/t", [])
        assert value(telemetry, "nfs_csi_mount_retries_total", kind="mount") == 1


class TestCallMetrics:
    def test_calls_are_counted_by_method_and_code_and_in_flight_returns_to_zero(self, telemetry: PrometheusTelemetry) -> None:
        telemetry.call_started("CreateVolume")
        assert value(telemetry, "csi_calls_in_flight", method="CreateVolume") == 1
        telemetry.call_finished("CreateVolume", "ALREADY_EXISTS", 0.002)
        assert value(telemetry, "csi_calls_in_flight", method="CreateVolume") == 0
        assert value(telemetry, "csi_calls_total", method="CreateVolume", code="ALREADY_EXISTS") == 1
        assert value(telemetry, "csi_call_duration_seconds_bucket", method="CreateVolume", le="0.0025") == 1
