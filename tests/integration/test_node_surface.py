"""The node's wider surface over the real socket: volume stats, NodeGetInfo, and stage mode with real bind mounts."""

from __future__ import annotations

import errno
import os
import stat
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from adapters.mount.mountinfo import read_mountinfo
from tests.integration.conftest import SERVER, SHARE, STANDIN, Driver, create_request, mount_capability, start_driver
from tests.integration.prometheus_server import free_port

pytestmark = pytest.mark.integration

RPC = csi.NodeServiceCapability.RPC


def volume_id_for(name: str) -> str:
    return f"nfs1#{SERVER}#{SHARE}#{name}#delete"


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


def capabilities(driver: Driver) -> set[str]:
    answer = driver.node.NodeGetCapabilities(csi.NodeGetCapabilitiesRequest(), timeout=5)
    return {RPC.Type.Name(c.rpc.type) for c in answer.capabilities}


def mounts_at(path: Path) -> int:
    return sum(1 for e in read_mountinfo() if e.mount_point == str(path))


def counting_mount_helper(tmp_path: Path) -> tuple[Path, Path]:
    """A mount.nfs that logs each call, then is the stand-in: how many NFS mounts the driver made."""
    calls = tmp_path / "mount.nfs.calls"
    helper = tmp_path / "mount.nfs-counting"
    helper.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nexec {STANDIN} "$@"\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    return helper, calls


def nfs_mounts(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


class TestVolumeStats:
    def test_stats_of_a_published_volume_report_the_bytes_and_inodes_of_its_filesystem(
        self, driver: Driver, export_dir: Path, tmp_path: Path
    ) -> None:
        (export_dir / "pvc-1").mkdir()
        target = tmp_path / "target"
        volume = volume_id_for("pvc-1")
        driver.node.NodePublishVolume(
            csi.NodePublishVolumeRequest(volume_id=volume, target_path=str(target), volume_capability=mount_capability()),
            timeout=20,
        )
        (target / "data").write_bytes(b"x" * 4096)
        response = driver.node.NodeGetVolumeStats(
            csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=str(target)), timeout=5
        )
        expected = os.statvfs(export_dir)
        usage = {u.unit: u for u in response.usage}
        assert set(usage) == {csi.VolumeUsage.BYTES, csi.VolumeUsage.INODES}
        assert usage[csi.VolumeUsage.BYTES].total == expected.f_blocks * expected.f_frsize > 0
        assert 0 < usage[csi.VolumeUsage.BYTES].available <= usage[csi.VolumeUsage.BYTES].total
        assert usage[csi.VolumeUsage.BYTES].used == usage[csi.VolumeUsage.BYTES].total - expected.f_bfree * expected.f_frsize
        assert usage[csi.VolumeUsage.INODES].total == expected.f_files
        assert usage[csi.VolumeUsage.INODES].used > 0
        assert response.HasField("volume_condition") and not response.volume_condition.abnormal
        driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)))

    def test_a_path_where_the_volume_is_not_published_is_not_found_and_empty_fields_invalid(
        self, driver: Driver, tmp_path: Path
    ) -> None:
        volume = volume_id_for("pvc-1")
        for path in ("some/path", str(tmp_path), str(tmp_path / "missing")):
            request = csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=path)
            assert code_of(lambda: driver.node.NodeGetVolumeStats(request, timeout=5)) == grpc.StatusCode.NOT_FOUND
        for request in (
            csi.NodeGetVolumeStatsRequest(volume_path=str(tmp_path)),
            csi.NodeGetVolumeStatsRequest(volume_id=volume),
        ):
            assert code_of(lambda: driver.node.NodeGetVolumeStats(request, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


MIB = 1 << 20


def own_usage(driver: Driver, volume: str, target: Path) -> tuple[dict[int, csi.VolumeUsage], str]:
    response = driver.node.NodeGetVolumeStats(csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=str(target)), timeout=10)
    assert not response.volume_condition.abnormal, response.volume_condition.message
    return {u.unit: u for u in response.usage}, response.volume_condition.message


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        return str(response.read().decode())


class TestPerVolumeUsage:
    def test_bytes_written_into_one_volume_show_in_its_usage_and_not_in_the_others_of_the_same_share(
        self, tmp_path: Path, export_root: Path
    ) -> None:
        address = f"127.0.0.1:{free_port()}"
        running = start_driver(tmp_path / "driver", "--volume-usage-interval", "1", "--metrics-address", address)
        try:
            # Given two volumes of one share, each published with the context CreateVolume returned
            volumes, targets = {}, {}
            for name, capacity in (("pvc-a", 8 * MIB), ("pvc-b", 64 * MIB)):
                made = running.controller.CreateVolume(create_request(name, capacity=capacity), timeout=30).volume
                assert made.volume_context["capacityBytes"] == str(capacity)
                targets[name] = tmp_path / f"target-{name}"
                running.node.NodePublishVolume(
                    csi.NodePublishVolumeRequest(
                        volume_id=made.volume_id, target_path=str(targets[name]), volume_capability=mount_capability(),
                        volume_context=made.volume_context,
                    ),
                    timeout=20,
                )
                volumes[name] = made.volume_id
            # When 8 MiB are written into one
            (targets["pvc-a"] / "data").write_bytes(os.urandom(8 * MIB))
            # Then its own usage shows them, against its capacity, and the other's does not
            a, message = own_usage(running, volumes["pvc-a"], targets["pvc-a"])
            b, _ = own_usage(running, volumes["pvc-b"], targets["pvc-b"])
            assert 8 * MIB <= a[csi.VolumeUsage.BYTES].used < 9 * MIB and "measured" in message
            assert (a[csi.VolumeUsage.BYTES].total, a[csi.VolumeUsage.BYTES].available) == (8 * MIB, 0)
            assert a[csi.VolumeUsage.INODES].used == 2
            assert b[csi.VolumeUsage.BYTES].used < MIB and b[csi.VolumeUsage.BYTES].total == 64 * MIB
            assert b[csi.VolumeUsage.BYTES].available == 64 * MIB - b[csi.VolumeUsage.BYTES].used
            # and the node counts the full one, with no volume named
            metrics = scrape(address)
            assert 'nfs_csi_volumes_filled{at_least="1"} 1.0' in metrics
            assert 'nfs_csi_volumes_filled{at_least="0.8"} 1.0' in metrics and volumes["pvc-a"] not in metrics

            # When the other fills too, then once its figures are older than --volume-usage-interval, they follow
            (targets["pvc-b"] / "data").write_bytes(os.urandom(8 * MIB))
            deadline = time.monotonic() + 20
            while own_usage(running, volumes["pvc-b"], targets["pvc-b"])[0][csi.VolumeUsage.BYTES].used < 8 * MIB:
                assert time.monotonic() < deadline, "the second volume's usage never followed"
                time.sleep(0.2)

            # When the full one is expanded, then the node learns the new capacity from NodeExpandVolume
            expanded = running.controller.ControllerExpandVolume(
                csi.ControllerExpandVolumeRequest(
                    volume_id=volumes["pvc-a"], capacity_range=csi.CapacityRange(required_bytes=32 * MIB)
                ),
                timeout=20,
            )
            assert expanded.node_expansion_required
            running.node.NodeExpandVolume(
                csi.NodeExpandVolumeRequest(
                    volume_id=volumes["pvc-a"], volume_path=str(targets["pvc-a"]),
                    capacity_range=csi.CapacityRange(required_bytes=32 * MIB),
                ),
                timeout=20,
            )
            a, _ = own_usage(running, volumes["pvc-a"], targets["pvc-a"])
            assert a[csi.VolumeUsage.BYTES].total == 32 * MIB
            assert a[csi.VolumeUsage.BYTES].available == 32 * MIB - a[csi.VolumeUsage.BYTES].used
            for name, volume in volumes.items():
                running.node.NodeUnpublishVolume(
                    csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(targets[name]))
                )
        finally:
            assert running.stop() == 0, running.log.read_text()


class TestSingleWriter:
    def test_a_restarted_node_still_refuses_a_second_target_of_a_single_writer_volume(
        self, tmp_path: Path, export_root: Path, export_dir: Path
    ) -> None:
        # Given a ReadWriteOncePod volume published at one target, and the node plugin restarted since
        (export_dir / "pvc-1").mkdir()
        volume, first, second = volume_id_for("pvc-1"), tmp_path / "first", tmp_path / "second"
        single = mount_capability(csi.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER)
        running = start_driver(tmp_path / "driver", mode="node")
        try:
            running.node.NodePublishVolume(
                csi.NodePublishVolumeRequest(volume_id=volume, target_path=str(first), volume_capability=single),
                timeout=20,
            )
        finally:
            assert running.stop() == 0
        running = start_driver(tmp_path / "driver", mode="node")
        try:
            # When a second pod asks for it at another target, then it waits: FAILED_PRECONDITION, nothing made
            request = csi.NodePublishVolumeRequest(volume_id=volume, target_path=str(second), volume_capability=single)
            with pytest.raises(grpc.RpcError) as refused:
                running.node.NodePublishVolume(request, timeout=20)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert str(first) in (refused.value.details() or "") and not second.exists()
            # And once the first target is unpublished, the second gets it
            running.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(first)))
            running.node.NodePublishVolume(request, timeout=20)
            assert mounts_at(second) == 1
            running.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(second)))
        finally:
            assert running.stop() == 0


class TestNodeInfoAndCapabilities:
    def test_direct_mode_reports_stats_and_condition_no_staging_and_no_volume_limit(self, driver: Driver) -> None:
        assert capabilities(driver) == {"GET_VOLUME_STATS", "VOLUME_CONDITION", "SINGLE_NODE_MULTI_WRITER", "EXPAND_VOLUME"}
        info = driver.node.NodeGetInfo(csi.NodeGetInfoRequest(), timeout=5)
        assert info.node_id == "node-1" and info.max_volumes_per_node == 0
        request = csi.NodeStageVolumeRequest(
            volume_id=volume_id_for("pvc-1"), staging_target_path="/tmp/x", volume_capability=mount_capability()
        )
        assert code_of(lambda: driver.node.NodeStageVolume(request, timeout=5)) == grpc.StatusCode.UNIMPLEMENTED

    def test_stage_mode_adds_staging_and_the_configured_volume_limit(self, tmp_path: Path, export_root: Path) -> None:
        running = start_driver(tmp_path / "driver", "--node-stage", "--max-volumes-per-node", "17", mode="node")
        try:
            assert capabilities(running) == {
                "GET_VOLUME_STATS", "VOLUME_CONDITION", "SINGLE_NODE_MULTI_WRITER", "EXPAND_VOLUME", "STAGE_UNSTAGE_VOLUME"
            }
            info = running.node.NodeGetInfo(csi.NodeGetInfoRequest(), timeout=5)
            assert info.node_id == "node-1" and info.max_volumes_per_node == 17
        finally:
            assert running.stop() == 0


@pytest.fixture
def staging_node(tmp_path: Path, export_root: Path) -> Iterator[tuple[Driver, Path]]:
    helper, calls = counting_mount_helper(tmp_path)
    running = start_driver(tmp_path / "driver", "--node-stage", "--mount-command", str(helper), mode="node")
    yield running, calls
    assert running.stop() == 0, running.log.read_text()


def stage_request(volume: str, staging: Path, *flags: str) -> csi.NodeStageVolumeRequest:
    return csi.NodeStageVolumeRequest(
        volume_id=volume,
        staging_target_path=str(staging),
        volume_capability=mount_capability(csi.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER, *flags),
    )


def publish_request(volume: str, staging: Path, target: Path, readonly: bool = False) -> csi.NodePublishVolumeRequest:
    return csi.NodePublishVolumeRequest(
        volume_id=volume,
        staging_target_path=str(staging),
        target_path=str(target),
        volume_capability=mount_capability(),
        readonly=readonly,
    )


class TestStageMode:
    def test_one_nfs_mount_serves_a_writable_and_a_read_only_publish(
        self, staging_node: tuple[Driver, Path], export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = staging_node
        (export_dir / "pvc-1").mkdir()
        volume = volume_id_for("pvc-1")
        staging, writer, reader = tmp_path / "globalmount", tmp_path / "pod-a", tmp_path / "pod-b"
        staging.mkdir()
        # Given a staged volume (staging again identically is OK)
        driver.node.NodeStageVolume(stage_request(volume, staging), timeout=20)
        driver.node.NodeStageVolume(stage_request(volume, staging), timeout=20)
        # When it is published twice, once read-only (and each publish repeated)
        for _ in range(2):
            driver.node.NodePublishVolume(publish_request(volume, staging, writer), timeout=20)
            driver.node.NodePublishVolume(publish_request(volume, staging, reader, readonly=True), timeout=20)
        # Then mount.nfs ran once; each target is one bind of it
        assert len(nfs_mounts(calls)) == 1 and nfs_mounts(calls)[0].startswith(f"{SERVER}:{SHARE}/pvc-1 {staging}")
        assert (mounts_at(staging), mounts_at(writer), mounts_at(reader)) == (1, 1, 1)
        # and the writable one writes to the volume, the read-only one really refuses writes but reads
        (writer / "hello").write_text("from pod a")
        assert (export_dir / "pvc-1" / "hello").read_text() == "from pod a"
        assert (reader / "hello").read_text() == "from pod a"
        with pytest.raises(OSError) as refused:
            (reader / "other").write_text("from pod b")
        assert refused.value.errno == errno.EROFS
        # and stats answer for every path of the volume
        for path in (staging, writer, reader):
            stats = driver.node.NodeGetVolumeStats(
                csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=str(path)), timeout=5
            )
            assert not stats.volume_condition.abnormal and stats.usage[0].total > 0
        # When both are unpublished and the volume unstaged (each twice), then nothing is mounted, targets gone
        for _ in range(2):
            for target in (writer, reader):
                driver.node.NodeUnpublishVolume(
                    csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)), timeout=20
                )
            assert mounts_at(staging) == 1
        for _ in range(2):
            driver.node.NodeUnstageVolume(
                csi.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(staging)), timeout=20
            )
        assert (mounts_at(staging), mounts_at(writer), mounts_at(reader)) == (0, 0, 0)
        assert not writer.exists() and not reader.exists() and staging.is_dir()
        assert (export_dir / "pvc-1" / "hello").exists()
        assert len(nfs_mounts(calls)) == 1

    def test_restaging_with_other_arguments_is_already_exists(
        self, staging_node: tuple[Driver, Path], export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = staging_node
        (export_dir / "pvc-1").mkdir()
        volume, staging = volume_id_for("pvc-1"), tmp_path / "globalmount"
        driver.node.NodeStageVolume(stage_request(volume, staging), timeout=20)
        other = stage_request(volume, staging, "nfsvers=4.1")
        assert code_of(lambda: driver.node.NodeStageVolume(other, timeout=20)) == grpc.StatusCode.ALREADY_EXISTS
        assert mounts_at(staging) == 1 and len(nfs_mounts(calls)) == 1
        driver.node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(staging)))
        assert mounts_at(staging) == 0

    def test_publish_without_a_staging_path_or_before_staging_is_failed_precondition(
        self, staging_node: tuple[Driver, Path], export_dir: Path, tmp_path: Path
    ) -> None:
        driver, calls = staging_node
        (export_dir / "pvc-1").mkdir()
        volume, staging, target = volume_id_for("pvc-1"), tmp_path / "globalmount", tmp_path / "pod"
        no_staging = publish_request(volume, staging, target)
        no_staging.staging_target_path = ""
        assert code_of(lambda: driver.node.NodePublishVolume(no_staging, timeout=20)) == grpc.StatusCode.FAILED_PRECONDITION
        unstaged = publish_request(volume, staging, target)
        assert code_of(lambda: driver.node.NodePublishVolume(unstaged, timeout=20)) == grpc.StatusCode.FAILED_PRECONDITION
        assert not target.exists() and nfs_mounts(calls) == []
        # and unstaging what was never staged is OK
        driver.node.NodeUnstageVolume(csi.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(staging)))

    def test_a_restarted_node_finds_its_staging_and_publications_again(
        self, tmp_path: Path, export_root: Path, export_dir: Path
    ) -> None:
        helper, calls = counting_mount_helper(tmp_path)
        flags = ("--node-stage", "--mount-command", str(helper))
        driver = start_driver(tmp_path / "driver", *flags, mode="node")
        (export_dir / "pvc-1").mkdir()
        volume, staging, target = volume_id_for("pvc-1"), tmp_path / "globalmount", tmp_path / "pod"
        driver.node.NodeStageVolume(stage_request(volume, staging), timeout=20)
        driver.node.NodePublishVolume(publish_request(volume, staging, target), timeout=20)
        assert driver.stop() == 0
        # When the node plugin comes back, then kubelet's retries are OK and mount nothing more
        driver = start_driver(tmp_path / "driver", *flags, mode="node")
        try:
            driver.node.NodeStageVolume(stage_request(volume, staging), timeout=20)
            driver.node.NodePublishVolume(publish_request(volume, staging, target), timeout=20)
            assert len(nfs_mounts(calls)) == 1 and mounts_at(target) == 1
            stats = driver.node.NodeGetVolumeStats(
                csi.NodeGetVolumeStatsRequest(volume_id=volume, volume_path=str(target)), timeout=5
            )
            assert not stats.volume_condition.abnormal
            driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume, target_path=str(target)))
            driver.node.NodeUnstageVolume(
                csi.NodeUnstageVolumeRequest(volume_id=volume, staging_target_path=str(staging))
            )
            assert mounts_at(target) == 0 and mounts_at(staging) == 0
        finally:
            assert driver.stop() == 0

    def test_inline_volumes_still_mount_directly(self, tmp_path: Path, export_root: Path, export_dir: Path) -> None:
        helper, calls = counting_mount_helper(tmp_path)
        driver = start_driver(
            tmp_path / "driver", "--node-stage", "--enable-inline-volumes", "--mount-command", str(helper), mode="node"
        )
        target = tmp_path / "pod"
        request = csi.NodePublishVolumeRequest(
            volume_id="csi-inline-1",
            target_path=str(target),
            volume_capability=mount_capability(),
            volume_context={"csi.storage.k8s.io/ephemeral": "true", "server": SERVER, "share": SHARE},
        )
        try:
            driver.node.NodePublishVolume(request, timeout=20)
            assert mounts_at(target) == 1 and nfs_mounts(calls) == [f"{SERVER}:{SHARE} {target}"]
            driver.node.NodeUnpublishVolume(
                csi.NodeUnpublishVolumeRequest(volume_id="csi-inline-1", target_path=str(target))
            )
            assert mounts_at(target) == 0
        finally:
            assert driver.stop() == 0
