"""Metrics, health endpoints and structured logs of the real driver process, scraped by a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from adapters.csi.v1 import csi_pb2 as csi
from tests.integration.conftest import Driver, create_request, mount_capability, start_driver
from tests.integration.prometheus_server import Prometheus, ensure_installed, free_port

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def observed(tmp_path: Path, export_root: Path) -> Iterator[tuple[Driver, str]]:
    address = f"127.0.0.1:{free_port()}"
    driver = start_driver(tmp_path / "driver", "--metrics-address", address)
    yield driver, address
    assert driver.stop() == 0


def lifecycle(driver: Driver, tmp_path: Path) -> None:
    """Two creates (one a retry), one refused create, a publish, an unpublish and a delete."""
    volume = driver.controller.CreateVolume(create_request()).volume
    driver.controller.CreateVolume(create_request())
    with pytest.raises(Exception):
        driver.controller.CreateVolume(create_request(unknown="1"))
    target = tmp_path / "target"
    driver.node.NodePublishVolume(
        csi.NodePublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target), volume_capability=mount_capability())
    )
    driver.node.NodeUnpublishVolume(csi.NodeUnpublishVolumeRequest(volume_id=volume.volume_id, target_path=str(target)))
    driver.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume.volume_id))


class TestHealthEndpoints:
    def test_healthz_and_readyz_answer_ok_when_serving(self, observed: tuple[Driver, str]) -> None:
        _, address = observed
        assert get(f"http://{address}/healthz") == (200, "ok\n")
        assert get(f"http://{address}/readyz") == (200, "ready\n")

    def test_readyz_is_503_when_the_mount_helper_is_missing(self, tmp_path: Path, export_root: Path) -> None:
        address = f"127.0.0.1:{free_port()}"
        driver = start_driver(tmp_path / "d", "--metrics-address", address, "--mount-command", "/nonexistent/mount.nfs")
        try:
            status, body = get(f"http://{address}/readyz")
            assert status == 503 and "mount.nfs" in body
            assert get(f"http://{address}/healthz")[0] == 200
        finally:
            assert driver.stop() == 0


    def test_an_ipv6_address_is_served(self, tmp_path: Path, export_root: Path) -> None:
        address = f"[::1]:{free_port()}"
        driver = start_driver(tmp_path / "d", "--metrics-address", address)
        try:
            assert get(f"http://{address}/healthz") == (200, "ok\n")
        finally:
            assert driver.stop() == 0


class TestMetricsEndpoint:
    def test_promtool_finds_the_exposition_clean(self, observed: tuple[Driver, str], tmp_path: Path) -> None:
        driver, address = observed
        lifecycle(driver, tmp_path)
        status, body = get(f"http://{address}/metrics")
        assert status == 200
        ensure_installed()
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "volume_id" not in body and "nfs1#" not in body
        assert 'nfs_csi_build_info{driver="nfs.csi.ownedstorage.dev",mode="all",version="0.1.0"} 1.0' in body


class TestRealPrometheus:
    def test_prometheus_scrapes_the_expected_series_and_values(self, observed: tuple[Driver, str], tmp_path: Path) -> None:
        driver, address = observed
        prometheus = Prometheus(tmp_path / "prometheus", address)
        try:
            lifecycle(driver, tmp_path)
            expectations = {
                'csi_calls_total{method="CreateVolume",code="OK"}': 2,
                'csi_calls_total{method="CreateVolume",code="INVALID_ARGUMENT"}': 1,
                'csi_calls_total{method="NodePublishVolume",code="OK"}': 1,
                'csi_calls_total{method="DeleteVolume",code="OK"}': 1,
                "nfs_csi_volumes_created_total": 1,
                "nfs_csi_volumes_deleted_total": 1,
                'nfs_csi_mount_operations_total{kind="mount",result="ok"}': 2,  # the share, then the publish
                "nfs_csi_share_mounts": 1,
                "nfs_csi_published_volumes": 0,
                "nfs_csi_mount_children": 0,
                'csi_calls_in_flight{method="CreateVolume"}': 0,
                'up{job="nfs-csi"}': 1,
            }
            seen = {query: prometheus.wait_for(query, expected) for query, expected in expectations.items()}
            assert seen == expectations, prometheus.log.read_text()[-1000:]
            p99 = prometheus.query('histogram_quantile(0.99, sum by (le) (csi_call_duration_seconds_bucket{method="CreateVolume"}))')
            assert len(p99) == 1 and 0 < float(p99[0]["value"][1]) < 10  # type: ignore[index]
        finally:
            prometheus.stop()


class TestStructuredLogs:
    def test_each_call_is_one_json_line_with_the_fields_an_operator_needs(self, observed: tuple[Driver, str], tmp_path: Path) -> None:
        driver, _ = observed
        lifecycle(driver, tmp_path)
        lines = [json.loads(line) for line in driver.log.read_text().splitlines() if line.startswith("{")]
        calls = [line for line in lines if line.get("method") == "CreateVolume" and "code" in line]
        assert {c["code"] for c in calls} == {"OK", "INVALID_ARGUMENT"}
        for call in calls:
            assert {"time", "level", "method", "volume_id", "duration_seconds", "code", "request_id"} <= set(call)
        refused = next(c for c in calls if c["code"] == "INVALID_ARGUMENT")
        assert refused["level"] == "warning" and "unknown parameter" in refused["error"]
        assert len({c["request_id"] for c in calls}) == len(calls)

    def test_create_volume_logs_the_id_it_made(self, observed: tuple[Driver, str], tmp_path: Path) -> None:
        driver, _ = observed
        volume = driver.controller.CreateVolume(create_request("pvc-traced")).volume
        lines = [json.loads(line) for line in driver.log.read_text().splitlines() if line.startswith("{")]
        created = next(line for line in lines if line.get("method") == "CreateVolume" and line.get("code") == "OK")
        assert created["volume_id"] == volume.volume_id and created["volume_name"] == "pvc-traced"

    def test_an_rpc_this_driver_does_not_offer_is_logged_without_a_traceback(self, observed: tuple[Driver, str]) -> None:
        driver, _ = observed
        for call in (
            lambda: driver.controller.ControllerPublishVolume(csi.ControllerPublishVolumeRequest(volume_id="v", node_id="n")),
            lambda: driver.node.NodeStageVolume(  # offered only with --node-stage
                csi.NodeStageVolumeRequest(volume_id="v", staging_target_path="/s", volume_capability=mount_capability())
            ),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED and "not offered" in (caught.value.details() or "")
        text = driver.log.read_text()
        assert "Traceback" not in text and '"level": "error"' not in text
        calls = [json.loads(line) for line in text.splitlines() if '"code": "UNIMPLEMENTED"' in line]
        assert [c["method"] for c in calls] == ["ControllerPublishVolume", "NodeStageVolume"]

    def test_a_hostile_value_is_logged_cut_to_a_bound_with_its_length(self, observed: tuple[Driver, str], tmp_path: Path) -> None:
        driver, _ = observed
        huge = "v" * (1 << 20)
        with pytest.raises(grpc.RpcError):
            driver.node.NodePublishVolume(
                csi.NodePublishVolumeRequest(
                    volume_id=huge, target_path=str(tmp_path / "t"), volume_capability=mount_capability(), volume_context={"k": huge}
                )
            )
        lines = driver.log.read_text().splitlines()
        assert max(len(line) for line in lines) < 16 * 1024  # today's --log-level debug, request dump included
        refused = next(json.loads(line) for line in lines if '"method": "NodePublishVolume"' in line and '"code"' in line)
        assert refused["code"] == "INVALID_ARGUMENT" and refused["volume_id"].endswith(f"[truncated, {1 << 20} chars in all]")
