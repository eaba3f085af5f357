"""Operation locks, on the real server: a second call on a volume that is busy is ABORTED at once, and released after."""

from __future__ import annotations

import concurrent.futures
import time

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import (
    SERVER,
    Lab,
    code_of,
    create_request,
    publish_request,
    release_hung_mounts,
    standin_pids,
    volume_id_for,
    wait_for,
)

pytestmark = pytest.mark.integration


def aborted_at_once(call: object) -> None:
    started = time.monotonic()
    assert code_of(call) == grpc.StatusCode.ABORTED  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.5


class TestNodeLocks:
    def test_a_second_call_on_a_volume_and_target_in_flight_is_aborted_at_once_and_the_lock_is_released(
        self, lab: Lab
    ) -> None:
        driver = lab.start("--mount-timeout", "2", "--mount-attempts", "1", mount_command="mount.nfs-hang", mode="node")
        lab.mark(f"{SERVER}.hung")
        target = lab.tmp / "target"
        volume = volume_id_for("pvc-1")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(driver.node.NodePublishVolume, publish_request(volume, target), timeout=30)
            wait_for(lambda: standin_pids("mount.nfs-hang"), 10, "the first publish to reach mount.nfs")
            # keyed by id and target
            aborted_at_once(lambda: driver.node.NodePublishVolume(publish_request(volume, target), timeout=5))
            unpublish = csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target))
            aborted_at_once(lambda: driver.node.NodeUnpublishVolume(unpublish, timeout=5))
            # and by target: another volume cannot be published there meanwhile
            other = publish_request(volume_id_for("pvc-2"), target)
            aborted_at_once(lambda: driver.node.NodePublishVolume(other, timeout=5))
            # the same volume at another target is another operation
            assert code_of(lambda: driver.node.NodePublishVolume(publish_request(volume, lab.tmp / "t2"), timeout=30)) == (
                grpc.StatusCode.DEADLINE_EXCEEDED
            )
            with pytest.raises(grpc.RpcError) as timed_out:
                first.result()
            assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # After the timeout, the lock is free: the unpublish goes through
        release_hung_mounts(lab)
        driver.node.NodeUnpublishVolume(unpublish, timeout=10)
        assert not target.exists()
        assert driver.stop() == 0


class TestControllerLocks:
    def test_a_second_create_or_delete_of_a_volume_in_flight_is_aborted_at_once(self, lab: Lab) -> None:
        # Given a CreateVolume blocked on a share that does not answer
        driver = lab.start("--fs-timeout", "1", "--mount-timeout", "0.5", mount_command="mount.nfs-hungfs", mode="controller")
        lab.mark(f"{SERVER}.hung")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(driver.controller.CreateVolume, create_request("pvc-1"), timeout=30)
            time.sleep(0.5)
            # keyed by name: the same name with another subDir is the same operation
            aborted_at_once(lambda: driver.controller.CreateVolume(create_request("pvc-1", subDir="elsewhere"), timeout=5))
            # keyed by id: another name for the same directory, and a delete of it
            aborted_at_once(lambda: driver.controller.CreateVolume(create_request("pvc-9", subDir="pvc-1"), timeout=5))
            delete = csi.DeleteVolumeRequest(volume_id=volume_id_for("pvc-1"))
            aborted_at_once(lambda: driver.controller.DeleteVolume(delete, timeout=5))
            with pytest.raises(grpc.RpcError) as timed_out:
                first.result()
            assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Then after its timeout the lock is released: a retry is not ABORTED
        assert code_of(lambda: driver.controller.DeleteVolume(delete, timeout=30)) in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE,
        )
        assert driver.stop() == 0
