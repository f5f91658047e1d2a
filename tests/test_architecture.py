"""The import graph is one-way: core -> meshing -> material -> fea -> risk -> osteofe."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Each package may import the ones before it (DESIGN.md 2; RULES: one-way imports).
LAYERS = ("core", "meshing", "material", "fea", "risk", "osteofe")


def _imports(package: str) -> dict[str, set[str]]:
    """First-party packages each module of ``package`` imports (also lazily, in functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & set(LAYERS)
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_no_package_imports_a_later_layer(package):
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    wrong = {module: sorted(names - allowed)
             for module, names in _imports(package).items() if names - allowed}
    assert wrong == {}, f"{package} imports later layers: {wrong}"


def test_the_check_sees_imports_inside_functions():
    # osteofe.pipeline imports fea.solver lazily inside run_strength: the walk must see it.
    assert "fea" in _imports("osteofe")["osteofe/pipeline.py"]
