"""A tiny run of bench/run: the benchmark's figures are not judged here, only that every one is still produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, in_private_namespace

pytestmark = pytest.mark.integration

PAIR_FIGURES = ("throughput_per_s", "p50_ms", "p95_ms", "p99_ms")


def number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, float]:
    if not in_private_namespace():
        pytest.fail("the benchmark smoke test needs root and a private mount namespace: run it with scripts/test")
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "bench.json"
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--json", str(out), "--deadline", "90"],
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(tmp)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"bench/run --quick failed:\n{result.stdout}\n{result.stderr}"
    return result, json.loads(out.read_text()), seconds


class TestBenchSmoke:
    def test_every_pair_figure_is_measured_at_every_concurrency(self, smoke) -> None:
        _, doc, _ = smoke
        f = doc["figures"]
        levels = {"create_delete": ("c1", "c16", "c64"), "publish_unpublish": ("c1", "c16")}
        for scenario, wanted in levels.items():
            assert sorted(f[scenario]) == sorted(wanted)
            for level in wanted:
                run = f[scenario][level]
                assert all(number(run[key]) for key in PAIR_FIGURES), (scenario, level, run)
                assert number(run["errors"]) and isinstance(run["error_codes"], dict)

    def test_the_burst_reports_every_result_and_its_p99(self, smoke) -> None:
        _, doc, _ = smoke
        burst = doc["figures"]["burst_create"]
        assert burst["size"] == 100
        assert len(burst["runs"][0]["results"]) == 100
        assert sum(burst["results"].values()) == burst["calls"] == 100
        assert number(burst["failures"]) and isinstance(burst["all_ok"], bool)
        assert number(burst["p99_ms"])

    def test_isolation_start_and_memory_figures_are_there(self, smoke) -> None:
        _, doc, _ = smoke
        f = doc["figures"]
        iso = f["isolation"]
        assert iso["hung_publish_stayed_hung"] is True
        assert all(number(iso[key]) for key in ("baseline_p50_ms", "hung_p50_ms", "ratio"))
        assert all(number(f[key]) for key in ("start_to_ready_s", "rss_idle_mib", "rss_after_ops_mib", "rss_at_end_mib"))
        assert f["ops_for_rss"] == doc["settings"]["ops"]
        assert all(number(v) for v in f["rss_idle_by_mode_mib"].values()) and len(f["rss_idle_by_mode_mib"]) == 3

    def test_floors_are_measured_in_the_same_run(self, smoke) -> None:
        _, doc, _ = smoke
        fl = doc["floors"]
        for key in ("grpc_empty_round_trip", "mkdir_rmdir", "mount_umount", "mount_alone", "umount_alone"):
            assert number(fl[key]["p50_ms"]), key
        assert all(number(fl[key]) for key in ("create_delete_pair_ms", "publish_unpublish_pair_ms", "grpc_empty_server_rss_idle_mib"))
        assert sorted(fl["grpc_empty_pairs"]) == ["c1", "c16", "c64"]

    def test_every_target_has_a_verdict_and_the_table_shows_it(self, smoke) -> None:
        result, doc, _ = smoke
        assert len(doc["targets"]) == 11
        assert all(isinstance(t["holds"], bool) for t in doc["targets"]), doc["targets"]
        assert "Targets (issues 8 and 15)" in result.stdout and "Floors (same machine, same run)" in result.stdout
        for t in doc["targets"]:
            assert t["target"] in result.stdout

    def test_the_busy_node_repeats_the_pairs_measures_stats_at_scale_and_memory(self, smoke) -> None:
        result, doc, _ = smoke
        busy = doc["figures"]["busy_node"]
        assert busy["mounts"] == doc["settings"]["busy_mounts"] > 0
        assert busy["mounts_in_table"] > busy["mounts"]  # the busy mounts were really there, beside the others
        for scenario, levels in (("create_delete", ("c1", "c16", "c64")), ("publish_unpublish", ("c1", "c16"))):
            assert sorted(busy[scenario]) == sorted(levels)
            for level in levels:
                assert all(number(busy[scenario][level][key]) for key in PAIR_FIGURES), (scenario, level)
        stats = busy["stats"]
        assert stats["published"] == stats["volumes"] == doc["settings"]["stats_volumes"]
        assert stats["stats"]["count"] + stats["stats"]["errors"] == stats["volumes"] * stats["rounds"]
        assert all(number(stats["stats"][key]) for key in ("p50_ms", "p99_ms", "throughput_per_s"))
        assert busy["calls_for_rss"] == doc["settings"]["ops"] and number(busy["rss_after_calls_mib"])
        assert "Busy node:" in result.stdout and "NodeGetVolumeStats" in result.stdout

    def test_nothing_is_left_mounted_and_it_stays_quick(self, smoke) -> None:
        _, doc, seconds = smoke
        assert doc["leaked_mounts"] == []
        assert seconds < 60, f"the smoke run took {seconds:.1f} s"


@pytest.fixture(scope="module")
def versus(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    """bench/run --quick with --versus: a second instance of our own driver stands in for another driver."""
    if not in_private_namespace():
        pytest.fail("the benchmark smoke test needs root and a private mount namespace: run it with scripts/test")
    tmp = tmp_path_factory.mktemp("versus")
    work, out, sock = tmp / "work", tmp / "bench.json", tmp / "other.sock"
    argv = [
        sys.executable, "-m", "app", "--endpoint", f"unix://{sock}", "--mode", "all", "--nodeid", "other",
        "--working-mount-dir", str(tmp / "other-shares"), "--state-dir", str(tmp / "other-state"),
        "--mount-command", str(ROOT / "tests" / "standin" / "mount.nfs"), "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, NFS_STANDIN_ROOT=str(work / "exports-root"))
    with open(tmp / "other.log", "wb") as log:
        other = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert other.poll() is None and time.monotonic() < deadline, (tmp / "other.log").read_text()
            time.sleep(0.05)
        result = subprocess.run(
            [str(ROOT / "bench" / "run"), "--quick", "--busy-mounts", "10", "--workdir", str(work), "--json", str(out),
             "--versus", f"unix://{sock}", "--versus-pid", str(other.pid), "--deadline", "120"],
            cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)), capture_output=True, text=True, timeout=150,
        )  # fmt: skip
    finally:
        other.terminate()
        other.wait(timeout=30)
    assert result.returncode == 0, f"bench/run --versus failed:\n{result.stdout}\n{result.stderr}"
    return result, json.loads(out.read_text())


class TestBenchVersus:
    def test_both_drivers_are_measured_in_every_pair_scenario_on_both_nodes(self, versus) -> None:
        result, doc = versus
        for figures in (doc["figures"], doc["versus"]):
            for node in (figures, figures["busy_node"]):
                for scenario in ("create_delete", "publish_unpublish"):
                    for run in node[scenario].values():
                        assert run["errors"] == 0 and all(number(run[key]) for key in PAIR_FIGURES), (scenario, run)
            assert number(figures["busy_node"]["rss_after_calls_mib"]) and number(figures["rss_idle_mib"])
            assert figures["busy_node"]["stats"]["stats"]["count"] == figures["busy_node"]["stats"]["volumes"]
        assert "Side by side:" in result.stdout

    def test_the_comparison_targets_have_a_verdict(self, versus) -> None:
        result, doc = versus
        compared = [t for t in doc["targets"] if t["target"].startswith("versus:")]
        assert len(compared) == 6 and all(isinstance(t["holds"], bool) for t in compared)
        assert all(t["target"] in result.stdout for t in compared)
