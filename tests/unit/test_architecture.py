"""The layer rule, executable: domain imports only the standard library; ports only domain."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_top_levels(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):
                names = [package]  # relative import stays inside the package
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package,allowed", [("domain", {"domain"}), ("ports", {"domain", "ports"})])
def test_imports_point_inward_only(package: str, allowed: set[str]) -> None:
    foreign = {
        name: files
        for name, files in imported_top_levels(package).items()
        if name not in allowed and name not in sys.stdlib_module_names and name != "__future__"
    }
    assert foreign == {}, f"{package}/ imports outside its layer: {foreign}"


