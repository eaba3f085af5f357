"""The layer rule, executable: app -> adapters -> domain/usecases -> ports -> the domain model; no import cycles.

import-linter checks the order between our packages (pyproject.toml). This checks what it cannot: that the domain
and the ports import nothing third-party, that its contract names every module of the domain model, and that no
module imports itself by way of others.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def modules(package: str) -> dict[str, Path]:
    """Module name -> file, for every module below package."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


USE_CASES = {name: path for name, path in modules("domain").items() if name.startswith("domain.usecases")}
MODEL = {name: path for name, path in modules("domain").items() if name not in USE_CASES and name != "domain"}


def foreign(files: dict[str, Path], allowed: set[str]) -> dict[str, set[str]]:
    """What the files import that is neither the standard library nor one of the allowed packages or modules."""
    found: dict[str, set[str]] = {}
    for path in files.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module}
            else:
                continue  # relative imports stay in their package, and none is used
            for name in names - {"__future__"}:
                if name.split(".")[0] not in sys.stdlib_module_names and not _within(name, allowed):
                    found.setdefault(str(path.relative_to(ROOT)), set()).add(name)
    return found


def _within(name: str, allowed: set[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


def test_the_domain_model_imports_only_the_standard_library_and_itself() -> None:
    assert foreign(MODEL, set(MODEL)) == {}


def test_ports_import_only_the_domain_model() -> None:
    assert foreign(modules("ports"), {"ports", *MODEL}) == {}


def test_use_cases_import_only_the_domain_model_the_ports_and_each_other() -> None:
    assert foreign(USE_CASES, {"domain", "ports"}) == {}


def test_the_layers_contract_names_every_module_of_the_domain_model() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert layers[:4] == ["app", "adapters", "domain.usecases", "ports"]
    assert {name.strip() for name in layers[4].split(":")} == set(MODEL)


def test_no_module_imports_itself_by_way_of_others() -> None:
    graph = grimp.build_graph("app", "adapters", "ports", "domain", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join((module, *back)))
    assert cycles == []
