"""bench.walk, tiny: its figures are not judged here, only that every one is still produced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

FIGURES = ("walk_s", "entries_per_s", "paced_walk_s", "first_ask_ms", "kept_ask_p50_us", "kept_ask_p99_us")


def test_every_figure_is_produced_for_a_tree_that_was_walked_whole(tmp_path: Path) -> None:
    out = tmp_path / "walk.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.walk", "--files", "300", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["entries"] == 300 + 1 and figures["complete"] == 1.0  # the files and their directory
    assert all(isinstance(figures[name], float) and figures[name] > 0 for name in FIGURES), figures
    assert "later asks (kept)" in done.stdout
