"""The project's imports, read from the source with `ast`, obey design.md's layers.

Every `import` of a project module counts, wherever it stands (module level, inside a function, under
`TYPE_CHECKING`). The tests fail naming the modules: on an import cycle, on an import that runs upward
against the layers, on a module other than the command line importing a `*cli*` module, and on an
in-function import of a project module that does not put off a heavy optional dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("records", "sandbox", "tasks", "rewards", "agent", "evolve", "tui")

MAY_IMPORT = {
    "records": set(),
    "sandbox": set(),
    "tasks": {"sandbox", "records"},
    "rewards": {"records"},
    "agent": {"sandbox", "tasks", "records"},
    "evolve": {"agent", "rewards", "tasks", "sandbox", "records"},
    "tui": {"records"},
}
"""design.md's table: the project packages each package may import (besides itself)."""

TUI_MAY_IMPORT = {"evolve.store"}
"""The TUI reads run stores: the one module of `evolve` it may import."""

COMMAND_LINE = "evolve.cli"
"""The command line: the one module that imports `*cli*` modules, and the one place that reaches up to `tui`."""

HEAVY = {"torch", "transformers", "ray", "vllm", "textual", "llama_cpp", "trl", "peft", "swebench", "datasets"}
"""Dependencies slow to import: the only reason a project import may sit inside a function (swebench imports
`datasets`, seconds, which reads `HF_HUB_OFFLINE` at import: the command line sets it first)."""


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Every project module by dotted name (a package by its own name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def project_module(name: str) -> str | None:
    """The project module `name` is or lives in (`pkg.mod.Name` -> `pkg.mod`); None outside the project."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


class Import:
    def __init__(self, importer: str, target: str, line: int, in_function: bool, third_party: str | None = None):
        self.importer, self.target, self.line, self.in_function = importer, target, line, in_function
        self.third_party = third_party

    def __repr__(self) -> str:
        return f"{self.importer} -> {self.target} (line {self.line})"


@lru_cache(maxsize=1)
def imports() -> list[Import]:
    """Every import statement of every project module, resolved to project modules (or a third-party top name)."""
    out: list[Import] = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(node) for fn in functions for node in ast.walk(fn) if node is not fn}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in `base`
            else:
                continue
            for imported in names:
                target = project_module(imported)
                if target is None:
                    out.append(Import(name, "", node.lineno, id(node) in inside, imported.split(".")[0]))
                elif target != name:
                    out.append(Import(name, target, node.lineno, id(node) in inside))
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in imports():
        if imp.target:
            edges[imp.importer].add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(imp: Import) -> bool:
    """Whether the import runs against design.md's layers."""
    src, dst = imp.importer.split(".")[0], imp.target.split(".")[0]
    if src == dst:
        return False
    if imp.importer == COMMAND_LINE and dst == "tui":
        return False
    if src == "tui" and imp.target in TUI_MAY_IMPORT:
        return False
    return dst not in MAY_IMPORT[src]


@lru_cache(maxsize=None)
def heavy_deps(module: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
    """The heavy optional dependencies that importing `module` loads (its module-level imports, its packages'
    `__init__`s and theirs, transitively)."""
    found: set[str] = set()
    for imp in imports():
        if imp.importer != module or imp.in_function:
            continue
        if imp.third_party in HEAVY:
            found.add(imp.third_party)
        if imp.target:
            parts = imp.target.split(".")
            for n in range(1, len(parts) + 1):
                dep = ".".join(parts[:n])
                if dep != module and dep not in seen:
                    found |= heavy_deps(dep, seen | {module})
    return frozenset(found)


def test_the_graph_is_read():
    edges = graph()
    assert "evolve.run.runner" in edges["evolve.run_cli"]  # a module-level import
    assert "tui.app" in edges["tui.cli"]  # an import inside a function
    assert len(modules()) > 100


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles between project modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_runs_upward_against_the_layers():
    bad = [imp for imp in imports() if imp.target and upward(imp)]
    assert not bad, "imports against design.md's layers:\n" + "\n".join(dict.fromkeys(map(repr, bad)))


def test_layer_rule_flags_an_upward_import():
    assert upward(Import("agent.graph", "evolve.store", 1, False))
    assert upward(Import("tui.app", "evolve.run.runner", 1, False))
    assert upward(Import("tasks.suite", "rewards.swe", 1, False))
    assert not upward(Import("tui.app", "evolve.store", 1, False))
    assert not upward(Import(COMMAND_LINE, "tui.cli", 1, False))
    assert upward(Import("evolve.run_cli", "tui.cli", 1, False))


def test_only_the_command_line_imports_cli_modules():
    bad = [imp for imp in imports() if imp.target and "cli" in imp.target.rpartition(".")[2]
           and imp.importer != COMMAND_LINE]
    assert not bad, "library modules importing CLI modules:\n" + "\n".join(dict.fromkeys(map(repr, bad)))


def test_imports_inside_functions_only_put_off_heavy_dependencies():
    """An in-function import of a project module is allowed only where the module loads a heavy optional
    dependency (torch, textual, ...) that the importing module itself does not load already."""
    bad = [imp for imp in imports() if imp.target and imp.in_function
           and not (heavy_deps(imp.target) - heavy_deps(imp.importer))]
    assert not bad, "project imports inside functions with no heavy dependency to put off:\n" + \
        "\n".join(dict.fromkeys(map(repr, bad)))


def test_the_tui_and_the_store_load_no_orchestration():
    """`import evolve.store` (through `evolve/__init__`) and the TUI's modules load records and the store only."""
    code = ("import sys, evolve.store, tui.source, tui.summary, tui.stats; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{PACKAGES!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    ours = set(loaded.stdout.split())
    assert {"evolve.store", "tui.source"} <= ours
    # `agent` itself (its __init__ only sets OpenMP's wait policy), none of its modules
    allowed = {"evolve", "evolve.store", "agent"} | {m for m in ours if m.split(".")[0] in ("records", "tui")}
    assert ours <= allowed, sorted(ours - allowed)


def test_the_command_line_loads_no_heavy_dependency():
    """`import evolve.cli` (every command's module) loads no heavy optional dependency: each loads when a command
    needs it, and `HF_HUB_OFFLINE` is set before anything reads it."""
    code = f"import sys, evolve.cli; print(' '.join(sorted(m for m in {sorted(HEAVY | {'huggingface_hub'})!r} "\
           "if m in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
