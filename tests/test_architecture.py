"""Imports flow one way: locoprop (primitives, LocoProp) <- baselines <- benchmarks <- scripts.

Parsed with `ast`, so a forbidden import fails here before it can turn into a cycle:
- a package imports only packages at its level or below (locoprop 0, baselines 1, benchmarks 2,
  scripts 3); locoprop and baselines use the standard library and torch only;
- project modules are imported at module level, never inside a function (which would hide a cycle);
- no two modules import each other, directly or through others;
- the report scripts (figures, summary, report) see results only through `benchmarks.results`; the
  other benchmarks modules they use read no runs or studies (READS_NO_RESULTS: statistics, the
  mean-image plateau of the data, the figure files' settings).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEVELS = {"locoprop": 0, "baselines": 1, "benchmarks": 2, "scripts": 3}
TORCH_ONLY = ("locoprop", "baselines")
REPORTS = ("scripts.figures", "scripts.summary", "scripts.report")
READS_NO_RESULTS = {"benchmarks.figure_files", "benchmarks.statistics", "benchmarks.plateau"}


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for package in LEVELS for p in sorted((REPO / package).glob("*.py"))}


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
    level = LEVELS[name.split(".")[0]]
    for target, at_top in imports(name, path):
        root = target.split(".")[0]
        if root in LEVELS:
            assert LEVELS[root] <= level, f"{name} imports {target}, a package above it"
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


@pytest.mark.parametrize("report", REPORTS)
def test_report_scripts_read_results_through_one_module(report):
    used = {t for t in project_edges()[report] if t.startswith("benchmarks")} - READS_NO_RESULTS
    assert used == {"benchmarks.results"}, f"{report} reaches into {sorted(used - {'benchmarks.results'})}"


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rules bite: a locoprop module importing benchmarks, inside a function, is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from benchmarks.results import load_runs\n")
    assert ("benchmarks.results", False) in imports("locoprop.bad", bad)
    assert LEVELS["benchmarks"] > LEVELS["locoprop"]
