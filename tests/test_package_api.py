"""The library API the README promises, and imports that run one way (no cycle among qedge's modules)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_export_fold_is_the_function():
    import qedge.export
    from qedge.models import build
    from qedge.nn import QuaternionConv2d

    model = build("qcnn6", num_classes=3, width=0.125).eval()
    folded = qedge.export.fold(model)
    assert not any(isinstance(m, QuaternionConv2d) for m in folded.modules())
    x = torch.randn(1, 4, 32, 64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("package", ["qedge.export", "qedge.runtime", "qedge.calib"])
def test_package_all_names_exist(package):
    code = f"import {package} as p; missing = [n for n in p.__all__ if not hasattr(p, n)]; assert not missing, missing"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("export", "runtime", "calib"):
        parts = ["qedge", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """qedge modules ``path`` imports anywhere: at module level and inside functions (a lazy import
    only hides a cycle, it does not remove it), not under TYPE_CHECKING. ``from P import x`` counts
    as importing the submodule P.x when that is a module."""
    tree = ast.parse(path.read_text())
    hidden = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
              for sub in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("qedge")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            if target.startswith("qedge"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
    return {m for m in found if m in modules} - {name}


def test_no_import_cycle_even_through_lazy_imports():
    files = [p for d in ("qedge", "export", "runtime", "calib") for p in (REPO / d).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, _module_name(p), modules) for p in files}
    # a package's __init__ re-exporting its own submodules is not a cycle
    for mod, deps in graph.items():
        graph[mod] = {d for d in deps if not d.startswith(mod + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
