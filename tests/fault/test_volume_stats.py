"""NodeGetVolumeStats on mounts gone bad: a hung server and a stale handle are an abnormal condition, in bounded time.

What is real: the kernel blocks the statvfs of a FUSE mount whose server never answers, and answers ESTALE from one
that plays a restarted server (tests/standin/fusefs); the driver's threads, bounds and gRPC socket are its own.
"""

from __future__ import annotations

import time

import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.fault.conftest import SERVER, SHARE, Lab, fuse_pids, kill_all, publish_request, volume_id_for

pytestmark = pytest.mark.integration


def stats(driver: object, volume_id: str, path: str) -> tuple[csi.NodeGetVolumeStatsResponse, float]:
    started = time.monotonic()
    response = driver.node.NodeGetVolumeStats(  # type: ignore[attr-defined]
        csi.NodeGetVolumeStatsRequest(volume_id=volume_id, volume_path=path), timeout=20
    )
    return response, time.monotonic() - started


class TestStatsOfAHungMount:
    def test_is_abnormal_at_the_bound_then_at_once_while_the_first_stat_is_stuck(self, lab: Lab) -> None:
        # Given a published volume whose server stopped answering (a stat blocks in the kernel)
        driver = lab.start("--fs-timeout", "1", mount_command="mount.nfs-hungfs", mode="node")
        (lab.export / "pvc-1").mkdir()
        lab.mark(f"{SERVER}.hung")
        target = lab.tmp / "target"
        volume = volume_id_for("pvc-1")
        driver.node.NodePublishVolume(publish_request(volume, target), timeout=20)
        # When kubelet asks for its stats, then the answer is abnormal, not an error, within the bound
        response, took = stats(driver, volume, str(target))
        assert response.volume_condition.abnormal and "did not finish within 1 s" in response.volume_condition.message
        assert 1 <= took < 3, took
        threads_after_first = driver.threads()  # the stuck stat holds one thread of that server's stat pool
        # and while that stat is stuck, each later poll is answered abnormal at once and costs no thread
        for _ in range(5):
            response, took = stats(driver, volume, str(target))
            assert response.volume_condition.abnormal and "has not returned" in response.volume_condition.message
            assert took < 0.5, took
        assert driver.threads() <= threads_after_first + 1  # one of slack: gRPC starts its workers on demand
        # When the server's connection is gone, then the stat returns and the poll after it is answered again
        kill_all(fuse_pids(lab.root))
        time.sleep(0.3)
        response, took = stats(driver, volume, str(target))
        assert took < 3 and response.volume_condition.abnormal  # a dead FUSE connection answers ENOTCONN
        assert "has not returned" not in response.volume_condition.message
        assert driver.stop() == 0


    def test_a_volume_measured_against_its_capacity_is_abnormal_the_same_way_and_is_never_walked(self, lab: Lab) -> None:
        # Given a volume whose context gives its capacity (its usage is its own, from walks), on a hung server
        driver = lab.start("--fs-timeout", "1", mount_command="mount.nfs-hungfs", mode="node")
        (lab.export / "pvc-1").mkdir()
        lab.mark(f"{SERVER}.hung")
        target, volume = lab.tmp / "target", volume_id_for("pvc-1")
        sized = publish_request(volume, target, volume_context={"capacityBytes": str(1 << 30)})
        driver.node.NodePublishVolume(sized, timeout=20)
        # When kubelet polls it, then the answers are the stat's, abnormal in bounded time, as for any volume
        for bound in (3, 0.5, 0.5):
            response, took = stats(driver, volume, str(target))
            assert response.volume_condition.abnormal and took < bound, (took, response.volume_condition.message)
        # and no walk of its tree was started to block on the dead server (the stat comes first); a healthy volume's
        # is (the same debug line, so its absence above means something)
        kill_all(fuse_pids(lab.root))
        assert "volume usage: walking" not in driver.log_text()
        (lab.root / f"{SERVER}.hung").unlink()
        (lab.export / "pvc-2").mkdir()
        healthy = lab.tmp / "healthy"
        driver.node.NodePublishVolume(
            publish_request(volume_id_for("pvc-2"), healthy, volume_context={"capacityBytes": str(1 << 30)}), timeout=20
        )
        response, _ = stats(driver, volume_id_for("pvc-2"), str(healthy))
        assert not response.volume_condition.abnormal and "measured" in response.volume_condition.message
        assert f"volume usage: walking {healthy}" in driver.log_text()
        assert driver.stop() == 0


class TestStatsOfOneHungServerSpareTheOthers:
    def test_a_hung_servers_volumes_do_not_crowd_out_a_healthy_servers(self, lab: Lab) -> None:
        # Given more volumes of a hung server than its stat threads (4), each poll leaving a stat stuck
        driver = lab.start("--fs-timeout", "1", mount_command="mount.nfs-hungfs", mode="node")
        lab.mark(f"{SERVER}.hung")
        hung = []
        for n in range(5):
            (lab.export / f"pvc-{n}").mkdir()
            target = lab.tmp / f"hung-{n}"
            driver.node.NodePublishVolume(publish_request(volume_id_for(f"pvc-{n}"), target), timeout=20)
            hung.append((volume_id_for(f"pvc-{n}"), str(target)))
        for volume, target in hung:
            response, _ = stats(driver, volume, target)
            assert response.volume_condition.abnormal
        # and a volume of another server, healthy
        healthy_server = "10.9.9.9"
        (lab.root / healthy_server / SHARE.strip("/") / "pvc-ok").mkdir(parents=True)
        healthy = volume_id_for("pvc-ok", server=healthy_server)
        target = lab.tmp / "healthy"
        driver.node.NodePublishVolume(publish_request(healthy, target), timeout=20)
        # When kubelet polls the healthy volume, then it is answered normal, at once, with its usage
        response, took = stats(driver, healthy, str(target))
        assert not response.volume_condition.abnormal, response.volume_condition.message
        assert took < 0.5 and {u.unit for u in response.usage} == {csi.VolumeUsage.BYTES, csi.VolumeUsage.INODES}
        kill_all(fuse_pids(lab.root))
        assert driver.stop() == 0


class TestStatsOfAStaleMount:
    def test_is_abnormal_with_a_message_naming_the_stale_handle(self, lab: Lab) -> None:
        driver = lab.start(mount_command="mount.nfs-stale", mode="node")
        (lab.export / "pvc-1").mkdir()
        target = lab.tmp / "target"
        volume = volume_id_for("pvc-1")
        lab.mark(f"{SERVER}.stale")
        driver.node.NodePublishVolume(publish_request(volume, target), timeout=20)
        response, took = stats(driver, volume, str(target))
        assert response.volume_condition.abnormal and "Stale file handle" in response.volume_condition.message
        assert took < 2
        # and a publish again recovers it, after which the stats are healthy and carry usage
        driver.node.NodePublishVolume(publish_request(volume, target), timeout=20)
        response, _ = stats(driver, volume, str(target))
        assert not response.volume_condition.abnormal and {u.unit for u in response.usage} == {
            csi.VolumeUsage.BYTES, csi.VolumeUsage.INODES
        }
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)), timeout=30)
        assert driver.stop() == 0
