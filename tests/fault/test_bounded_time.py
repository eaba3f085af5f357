"""Bounded time: hung mounts, hung shares and hung unmounts cost one bound each, and the driver keeps answering."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import (
    SERVER,
    Lab,
    code_of,
    create_request,
    alive,
    error_of,
    fuse_pids,
    hang_pids,
    kill_all,
    mount_capability,
    mounts_under,
    publish_request,
    release_hung_mounts,
    standin_pids,
    volume_id_for,
    wait_for,
)

pytestmark = pytest.mark.integration


class TestHungMount:
    def test_a_hung_mount_is_deadline_exceeded_within_its_bound_and_its_process_group_is_killed(self, lab: Lab) -> None:
        # Given a server whose mount.nfs never returns
        driver = lab.start("--mount-timeout", "1", "--mount-attempts", "1", mount_command="mount.nfs-hang", mode="node")
        lab.mark(f"{SERVER}.hung")
        (lab.export / "pvc-1").mkdir()
        target = lab.tmp / "target"
        request = publish_request(volume_id_for("pvc-1"), target)
        # When a publish is sent, then it ends at the timeout, and no helper process survives it
        started = time.monotonic()
        error = error_of(lambda: driver.node.NodePublishVolume(request, timeout=20))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "did not finish within 1 s" in error.details()
        assert time.monotonic() - started < 4
        wait_for(lambda: hang_pids(lab.root) and not any(map(alive, hang_pids(lab.root))), 5, "its whole group to die")
        # and the lock was released: a retry is tried again (not ABORTED)
        assert code_of(lambda: driver.node.NodePublishVolume(request, timeout=20)) == grpc.StatusCode.DEADLINE_EXCEEDED
        # When the server answers again, then a later call to it works
        (lab.root / f"{SERVER}.hung").unlink()
        driver.node.NodePublishVolume(request, timeout=20)
        assert mounts_under(target) == [str(target)]
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=request.volume_id, target_path=str(target)))
        assert driver.stop() == 0

    def test_a_mount_that_fails_twice_then_succeeds_is_published_by_the_retries(self, lab: Lab) -> None:
        driver = lab.start("--mount-attempts", "3", mount_command="mount.nfs-flaky", mode="node", env={"NFS_STANDIN_FAILS": "2"})
        (lab.export / "pvc-1").mkdir()
        target = lab.tmp / "target"
        driver.node.NodePublishVolume(publish_request(volume_id_for("pvc-1"), target), timeout=30)
        assert mounts_under(target) == [str(target)]
        assert [len(p.read_text().split()) for p in (lab.root / ".attempts").iterdir()] == [3]
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume_id_for("pvc-1"), target_path=str(target)))
        assert driver.stop() == 0

    def test_a_server_down_for_good_is_unavailable_after_the_configured_attempts_and_leaves_nothing(self, lab: Lab) -> None:
        driver = lab.start("--mount-attempts", "2", mount_command="mount.nfs-down", mode="node")
        target = lab.tmp / "target"
        error = error_of(lambda: driver.node.NodePublishVolume(publish_request(volume_id_for("pvc-1"), target), timeout=30))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "Connection refused" in error.details()
        assert len((lab.root / ".attempts" / "down").read_text().splitlines()) == 2
        assert not target.exists() and mounts_under(target) == []
        assert list((driver.workdir / "state" / "publications").iterdir()) == []
        assert driver.stop() == 0

    def test_a_stage_that_fails_leaves_no_record_and_kubelets_staging_directory(self, lab: Lab) -> None:
        driver = lab.start("--mount-attempts", "1", "--node-stage", mount_command="mount.nfs-down", mode="node")
        staging = lab.tmp / "globalmount"
        staging.mkdir()  # kubelet makes it before NodeStageVolume, and removes it itself
        request = csi.NodeStageVolumeRequest(
            volume_id=volume_id_for("pvc-1"), staging_target_path=str(staging), volume_capability=mount_capability()
        )
        assert code_of(lambda: driver.node.NodeStageVolume(request, timeout=30)) == grpc.StatusCode.UNAVAILABLE
        assert staging.is_dir() and mounts_under(staging) == []
        assert list((driver.workdir / "state" / "stagings").iterdir()) == []
        assert driver.stop() == 0


class TestHungShare:
    def test_filesystem_calls_on_a_hung_share_are_bounded_and_the_share_is_used_again_once_it_answers(self, lab: Lab) -> None:
        # Given a share whose server stopped answering after the mount (calls block in the kernel)
        driver = lab.start("--fs-timeout", "0.5", mount_command="mount.nfs-hungfs", mode="controller")
        marker = lab.mark(f"{SERVER}.hung")
        # When CreateVolume is sent, then it ends at the filesystem bound, as DEADLINE_EXCEEDED
        started = time.monotonic()
        error = error_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"), timeout=20))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "did not finish within 0.5 s" in error.details()
        assert time.monotonic() - started < 3
        # and once every worker of that share is stuck, a retry is UNAVAILABLE at once, naming the share
        codes = [code_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"), timeout=20)) for _ in range(6)]
        assert codes[-1] == grpc.StatusCode.UNAVAILABLE
        started = time.monotonic()
        error = error_of(lambda: driver.controller.CreateVolume(create_request("pvc-1"), timeout=20))
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "does not answer" in error.details()
        assert time.monotonic() - started < 0.5
        # When the server comes back (its connection is reset), then the share is mounted again and works
        marker.unlink()
        kill_all(fuse_pids(lab.root))
        deadline = time.monotonic() + 15
        while True:
            try:
                driver.controller.CreateVolume(create_request("pvc-1"), timeout=20)
                break
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err.details()
                assert time.monotonic() < deadline, err.details()
        assert (lab.export / "pvc-1").is_dir()
        assert driver.stop() == 0


class TestUnmountEscalation:
    def test_a_hung_unmount_escalates_to_force_then_lazy_and_the_target_is_removed(self, lab: Lab) -> None:
        # Given a published target whose server stopped answering, with a pod's process blocked on it
        driver = lab.start("--mount-timeout", "1", mount_command="mount.nfs-hungfs", mode="node")
        (lab.export / "pvc-1").mkdir()
        lab.mark(f"{SERVER}.hung")
        target = lab.tmp / "target"
        volume = volume_id_for("pvc-1")
        driver.node.NodePublishVolume(publish_request(volume, target), timeout=20)
        blocked = subprocess.Popen(["stat", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        assert blocked.poll() is None
        # When it is unpublished
        started = time.monotonic()
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)), timeout=30)
        # Then umount hung and was killed at its bound, umount -f failed (busy), umount -l detached it
        took = time.monotonic() - started
        log = driver.log_text()
        assert "escalating to umount -f" in log and "escalating to umount -l" in log
        assert 1 <= took < 8, took
        assert mounts_under(target) == [] and not target.exists()
        blocked.wait(timeout=10)  # umount -f aborted the dead connection: the blocked process got its error
        assert driver.stop() == 0


class TestStuckWorkers:
    def test_probe_and_capability_calls_answer_within_a_second_while_every_worker_is_stuck_on_a_hung_mount(
        self, lab: Lab
    ) -> None:
        workers = 4
        driver = lab.start("--workers", str(workers), "--mount-timeout", "60", mount_command="mount.nfs-hang")
        lab.mark(f"{SERVER}.hung")
        (lab.export / "pvc-1").mkdir()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers + 2)
        try:
            # Given more hung publishes than there are gRPC workers
            calls = [
                pool.submit(driver.node.NodePublishVolume, publish_request(volume_id_for("pvc-1"), lab.tmp / f"t{i}"), timeout=90)
                for i in range(workers + 2)
            ]
            wait_for(lambda: len(standin_pids("mount.nfs-hang")) >= workers, 10, "every worker on a hung mount.nfs")
            time.sleep(0.3)
            # When the livenessprobe and the sidecars ask, then each answer comes within a second
            for call in (
                lambda: driver.identity.Probe(csi.ProbeRequest(), timeout=1),
                lambda: driver.identity.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=1),
                lambda: driver.identity.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest(), timeout=1),
                lambda: driver.controller.ControllerGetCapabilities(csi.ControllerGetCapabilitiesRequest(), timeout=1),
                lambda: driver.node.NodeGetCapabilities(csi.NodeGetCapabilitiesRequest(), timeout=1),
                lambda: driver.node.NodeGetInfo(csi.NodeGetInfoRequest(), timeout=1),
            ):
                started = time.monotonic()
                call()
                assert time.monotonic() - started < 1
            # while the publishes beyond the workers wait their turn (each is bounded), none refused
            assert not any(call.done() for call in calls)
        finally:
            release_hung_mounts(lab)
            pool.shutdown(wait=True)
        # the hung helpers were killed from outside (INTERNAL); the two that waited then mounted
        outcomes = sorted((c.exception().code() if c.exception() else grpc.StatusCode.OK).name for c in calls)
        assert outcomes == ["INTERNAL"] * workers + ["OK"] * 2
        assert driver.stop() == 0


class TestMountConcurrency:
    def test_no_more_mount_nfs_processes_run_at_once_than_max_concurrent_mounts(self, lab: Lab) -> None:
        driver = lab.start("--max-concurrent-mounts", "2", "--mount-timeout", "60", mount_command="mount.nfs-hang", mode="node")
        lab.mark(f"{SERVER}.hung")
        (lab.export / "pvc-1").mkdir()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=6)
        try:
            for i in range(6):
                pool.submit(driver.node.NodePublishVolume, publish_request(volume_id_for("pvc-1"), lab.tmp / f"t{i}"), timeout=90)
            wait_for(lambda: len(standin_pids("mount.nfs-hang")) == 2, 10, "two hung mount.nfs processes")
            seen = []
            for _ in range(40):
                seen.append(len(standin_pids("mount.nfs-hang")))
                time.sleep(0.025)
            assert max(seen) == 2, seen
        finally:
            release_hung_mounts(lab)
            pool.shutdown(wait=True)
        assert driver.stop() == 0
