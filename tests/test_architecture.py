"""Imports flow one way, floor by floor:

    locoprop (primitives, LocoProp) <- baselines <- benchmarks (core: data, models, runner, run files)
    <- benchmarks.tuning <- benchmarks.reporting <- benchmarks.orchestration <- scripts

Parsed with `ast`, so a forbidden import fails here before it can turn into a cycle:
- a module imports only modules on its floor or below; locoprop and baselines use the standard
  library and torch only;
- scripts/ holds entry points only: no module (a script included) imports a script;
- project modules are imported at module level, never inside a function (which would hide a cycle);
- no two modules import each other, directly or through others;
- reporting reads runs only through `benchmarks.results` and studies only through
  `benchmarks.tuning.studies` (never the run files' writer, the runner or Optuna itself).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = {"locoprop": 0, "baselines": 1, "benchmarks": 2, "benchmarks.tuning": 3, "benchmarks.reporting": 4,
          "benchmarks.orchestration": 5, "scripts": 6}
TORCH_ONLY = ("locoprop", "baselines")
REPORTING_NEVER = ("benchmarks.rundir", "benchmarks.train", "optuna")


def floor(module: str) -> int:
    """The floor of a module: its longest package prefix in FLOORS."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return FLOORS[".".join(parts[:n])]
    raise KeyError(module)


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for package in ("locoprop", "baselines", "benchmarks", "scripts") for p in sorted((REPO / package).rglob("*.py"))}


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement of a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                found += [(target if node.module else f"{base}.{a.name}", id(node) in top_level) for a in node.names]
            else:
                found += [(node.module, id(node) in top_level)]
                found += [(f"{node.module}.{a.name}", id(node) in top_level) for a in node.names
                          if f"{node.module}.{a.name}" in modules()]
    return found


def project_edges() -> dict[str, set[str]]:
    mods = modules()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for target, _ in imports(name, path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_point_down_and_sit_at_module_level(name):
    path = modules()[name]
    level = floor(name)
    for target, at_top in imports(name, path):
        root = target.split(".")[0]
        if root in FLOORS:
            assert floor(target) <= level, f"{name} imports {target}, a floor above it"
            assert root != "scripts", f"{name} imports {target}: scripts are entry points, never imported"
            assert at_top, f"{name} imports {target} inside a function (a hidden cycle?)"
        elif name.split(".")[0] in TORCH_ONLY:
            stdlib = root in sys.stdlib_module_names or root == "__future__"
            assert stdlib or root == "torch", f"{name} imports {target}: locoprop and baselines use torch only"


def test_no_import_cycles():
    edges = project_edges()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.startswith("benchmarks.reporting")))
def test_reporting_reads_runs_and_studies_through_their_readers(name):
    used = {target for target, _ in imports(name, modules()[name])}
    reached = sorted(t for t in used if t.startswith(REPORTING_NEVER))
    assert not reached, f"{name} reaches into {reached}: read runs with benchmarks.results, studies with benchmarks.tuning.studies"


def test_every_package_has_its_map():
    """Each sub-system package opens with a docstring that maps its modules."""
    for package in ("benchmarks.tuning", "benchmarks.reporting", "benchmarks.orchestration"):
        init = REPO / package.replace(".", "/") / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        listed = {p.stem for p in init.parent.glob("*.py")} - {"__init__"}
        missing = sorted(m for m in listed if m not in doc)
        assert not missing, f"{init} does not map {missing}"


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rules bite: a locoprop module importing benchmarks, inside a function, is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from benchmarks.results import load_runs\n")
    assert ("benchmarks.results", False) in imports("locoprop.bad", bad)
    assert floor("benchmarks.results") > floor("locoprop.bad")
    assert floor("benchmarks.orchestration.plan") > floor("benchmarks.tuning.search")
