"""The code's shape, as ARCHITECTURE.md promises it: no import cycle, a small engine root, short functions,
one epoch loop, and one table of job kinds."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "workbench")
MAX_FUNCTION_LINES = 80
MAX_ENGINE_ROOT_MODULES = 6


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that ``name`` imports, at any depth of its code (function-level imports count:
    a cycle hidden in a function is still a cycle)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in known else module)
    return (found & known) - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_engine_or_workbench():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 100          # the walk sees the imports
    assert _cycles(graph) == []


def test_the_engine_root_holds_few_modules_and_never_imports_textual():
    root_modules = sorted(p.name for p in (ROOT / "engine").glob("*.py"))
    assert len(root_modules) <= MAX_ENGINE_ROOT_MODULES, root_modules
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "engine").rglob("*.py")
                 if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "textual" in ast.unparse(n)
                        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert offenders == []


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_epoch_loop_exists_once():
    """Only engine/train/loop.py walks steps: it alone reports a finished step and builds global batches
    (benchmarks may time steps on their own)."""
    walkers = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "engine").rglob("*.py")
                     if ".step_done(" in p.read_text(encoding="utf-8")
                     or "global_batches(" in p.read_text(encoding="utf-8").replace("def global_batches(", ""))
    assert walkers == ["engine/train/loop.py"]


def test_job_kinds_are_listed_in_one_table():
    from engine.jobs.registry import JOBS, app_jobs

    assert set(JOBS) == {"train-dsr", "finetune", "pretrain", "evaluate", "pipeline", "sweep", "export"}
    assert {action: spec.kind for action, spec in app_jobs().items()} == {
        "train": "train-dsr", "finetune": "finetune", "evaluate": "evaluate", "pipeline": "pipeline"}
    literal_tables = []
    for path in [*(ROOT / "engine").rglob("*.py"), *(ROOT / "workbench").rglob("*.py")]:
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                values = node.keys if isinstance(node, ast.Dict) else node.elts
                kinds = {v.value for v in values if isinstance(v, ast.Constant)} & {"train-dsr", "finetune",
                                                                                    "pipeline", "pretrain"}
                if len(kinds) >= 3:
                    literal_tables.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert literal_tables == []


MAX_APP_LINES = 300
MAX_WORKBENCH_MODULE_LINES = 400


def test_the_app_is_app_wide_only_and_no_workbench_module_is_long():
    """WorkbenchApp: at most MAX_APP_LINES lines and no mixins (the tabs own their keys and work); every module
    of workbench/ at most MAX_WORKBENCH_MODULE_LINES lines."""
    from textual.app import App

    from workbench.app.app import WorkbenchApp

    assert WorkbenchApp.__bases__ == (App,), WorkbenchApp.__bases__
    app_lines = len((ROOT / "workbench/app/app.py").read_text(encoding="utf-8").splitlines())
    assert app_lines <= MAX_APP_LINES, app_lines
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "workbench").rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_WORKBENCH_MODULE_LINES}
    assert not long, long


def test_each_key_is_bound_once_in_its_scope():
    """No key is bound twice in one scope (the app's, or one tab widget's), so no hand-written dispatch."""
    from workbench.app.key_map import APP_BINDINGS
    from workbench.app.main_screen import TAB_WIDGETS

    for scope, bindings in (("app", APP_BINDINGS), *((tab, w.BINDINGS) for tab, w in TAB_WIDGETS.items())):
        keys = [key for b in bindings for key in b.key.split(",")]
        assert len(keys) == len(set(keys)), (scope, sorted(k for k in keys if keys.count(k) > 1))
