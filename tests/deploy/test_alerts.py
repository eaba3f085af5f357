"""The prod alerts: valid for promtool, firing when they should, and built on metrics the driver exports."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.deploy import manifests as m
from tests.deploy.conftest import Built
from tests.deploy.manifests import ROOT, Tools

ALERTS_TEST = Path(__file__).with_name("alerts-test.yaml")
BuildBroken = Callable[[str, dict[str, Any]], Built]


def write_rules(built: Built, directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(m.rules_file(built.objs), sort_keys=False))
    return path


def test_promtool_checks_the_alert_rules(built: dict[str, Built], tools: Tools, tmp_path: Path) -> None:
    rules = write_rules(built["prod"], tmp_path)

    result = m.run([str(tools.promtool), "check", "rules", str(rules)])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_alerts_fire_and_stay_quiet_as_their_unit_tests_expect(
    built: dict[str, Built], tools: Tools, tmp_path: Path
) -> None:
    write_rules(built["prod"], tmp_path)
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)

    result = m.run([str(tools.promtool), "test", "rules", ALERTS_TEST.name], cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_alert_expression_fails_promtool(build_broken: BuildBroken, tools: Tools, tmp_path: Path) -> None:
    broken = build_broken(
        "prod",
        {
            "patches": [
                {
                    "target": {"kind": "PrometheusRule"},
                    "patch": yaml.safe_dump(
                        [{"op": "replace", "path": "/spec/groups/0/rules/0/expr", "value": "rate(csi_calls_total[10m]"}]
                    ),
                }
            ]
        },
    )
    rules = write_rules(broken, tmp_path)

    result = m.run([str(tools.promtool), "check", "rules", str(rules)])

    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_every_metric_the_alerts_use_is_exported_by_the_driver(built: dict[str, Built], tmp_path: Path) -> None:
    # Given the driver in controller mode, as in the controller pod, serving /metrics
    port = free_port()
    argv = [sys.executable, "-m", "app", "--mode=controller", f"--endpoint=unix://{tmp_path}/csi.sock",
            f"--working-mount-dir={tmp_path}/shares", f"--metrics-address=127.0.0.1:{port}", "--log-level=warning"]  # fmt: skip
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, text = get(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert driver.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()
                time.sleep(0.1)
        # Then every metric name the alerts select is among those it declares (up comes from Prometheus)
        assert status == 200
        exported = set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                exported |= {name, f"{name}_total"} if kind == "counter" else {name}
                if kind == "histogram":
                    exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        used = m.alert_metrics(built["prod"].objs) - {"up"}
        assert {"csi_calls_total", "csi_call_duration_seconds_bucket", "nfs_csi_mount_timeouts_total",
                "nfs_csi_volumes_filled"} <= used  # fmt: skip
        assert used - exported == set()
        # And the paths the pods' probes ask are served there
        assert get(f"http://127.0.0.1:{port}/readyz")[0] in (200, 503)
    finally:
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(timeout=10)
