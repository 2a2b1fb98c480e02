"""The project's imports, read from the source with `ast`, obey design.md's layers.

Every `import` of a project module counts, wherever it stands (module level, inside a function, under
`TYPE_CHECKING`). The tests fail naming the modules: on an import cycle, on an import that runs upward
against the layers, on a module other than the command line importing a `*cli*` module, on an import
inside a function that puts off no heavy optional dependency (or, for a project module, does not say which in a
comment), and on an import by a literal name (`importlib.import_module("...")`) that hides from these checks.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
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
    def __init__(self, importer: str, target: str, line: int, in_function: bool, third_party: str | None = None,
                 guarded: bool = False, reason: bool = False):
        self.importer, self.target, self.line, self.in_function = importer, target, line, in_function
        self.third_party = third_party
        self.guarded = guarded
        """Inside a `try:` whose handler catches ImportError (or broader): a dependency that may be absent."""
        self.reason = reason
        """A comment says why: on the statement, on the line above, or on the import it directly follows."""

    def __repr__(self) -> str:
        return f"{self.importer} -> {self.target or self.third_party} (line {self.line})"


CATCHES_IMPORT_ERROR = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _guarded(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """Whether `node` sits in the body of a `try:` that catches a failed import (up to its function)."""
    child, parent = node, parents.get(id(node))
    while parent is not None and not isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if handler.type is None or any(isinstance(t, ast.Name) and t.id in CATCHES_IMPORT_ERROR
                                               for t in types):
                    return True
        child, parent = parent, parents.get(id(parent))
    return False


def _comment_lines(source: str) -> tuple[set[int], set[int]]:
    """(lines holding a comment, lines that are only a comment)."""
    any_, only = set(), set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            any_.add(tok.start[0])
            if not tok.line[:tok.start[1]].strip():
                only.add(tok.start[0])
    return any_, only


def imports_of(name: str, source: str, is_package: bool = False) -> list[Import]:
    """The import statements of the module `name` (its `source`), resolved to project modules (or a third-party
    top name)."""
    out: list[Import] = []
    tree = ast.parse(source)
    commented, comment_only = _comment_lines(source)
    package = name if is_package else name.rpartition(".")[0]
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(node) for fn in functions for node in ast.walk(fn) if node is not fn}
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    explained: dict[int, bool] = {}  # the last line of an import statement -> whether a comment explains it
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))),
                       key=lambda n: n.lineno):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in `base`
        reason = (any(line in commented for line in range(node.lineno, node.end_lineno + 1))
                  or node.lineno - 1 in comment_only or explained.get(node.lineno - 1, False))
        explained[node.end_lineno] = reason
        in_function, guarded = id(node) in inside, _guarded(node, parents)
        for imported in names:
            target = project_module(imported)
            if target is None:
                out.append(Import(name, "", node.lineno, in_function, imported.split(".")[0], guarded, reason))
            elif target != name:
                out.append(Import(name, target, node.lineno, in_function, None, guarded, reason))
    return out


@lru_cache(maxsize=1)
def imports() -> list[Import]:
    """Every import statement of every project module."""
    return [imp for name, path in modules().items()
            for imp in imports_of(name, path.read_text(), path.name == "__init__.py")]


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


@lru_cache(maxsize=1)
def _loads() -> dict[str, tuple[set[str], set[str]]]:
    """module -> (the project modules importing it loads directly: its module-level imports and their packages'
    `__init__`s; the heavy dependencies it imports itself at module level)."""
    out: dict[str, tuple[set[str], set[str]]] = {m: (set(), set()) for m in modules()}
    for imp in imports():
        if imp.in_function:
            continue
        deps, heavy = out[imp.importer]
        if imp.third_party in HEAVY:
            heavy.add(imp.third_party)
        if imp.target:
            parts = imp.target.split(".")
            deps.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return out


@lru_cache(maxsize=None)
def heavy_deps(module: str) -> frozenset[str]:
    """The heavy optional dependencies that importing `module` loads (its module-level imports, its packages'
    `__init__`s and theirs, transitively)."""
    loads = _loads()
    found: set[str] = set()
    seen, todo = {module}, [module]
    while todo:
        deps, heavy = loads.get(todo.pop(), (set(), set()))
        found |= heavy
        for dep in deps - seen:
            seen.add(dep)
            todo.append(dep)
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


def allowed_in_function(imp: Import) -> bool:
    """An import inside a function puts off a heavy optional dependency: the dependency itself (`import torch`:
    obvious), or a project module that loads one the importing module does not load already, with a comment that
    says so; or it sits in a `try:` that handles a failed import (a dependency that may be absent)."""
    if imp.guarded or imp.third_party in HEAVY:
        return True
    return bool(imp.target) and imp.reason and bool(heavy_deps(imp.target) - heavy_deps(imp.importer))


OPENING_A_RUN = {("evolve.run.run_lock", "RunLock"), ("evolve.store", "check_run_dir"), ("agent.policy", "load_policy"),
                 ("evolve.policies", "RunsRoot")}
"""What opens a run or builds a policy by hand: the library does it (`evolve.run.opening`, the commands' `open_*`
functions, `evolve.policies.load_policies`), the same way for every command."""


def test_command_modules_leave_opening_runs_and_loading_policies_to_the_library():
    """A `*cli*` module parses arguments, calls the library and prints: it takes no run lock, checks no run
    directory and loads no policy itself."""
    bad = []
    for name, path in modules().items():
        if "cli" not in name.rpartition(".")[2]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                bad += [f"{name} (line {node.lineno}): {node.module}.{a.name}" for a in node.names
                        if (node.module, a.name) in OPENING_A_RUN]
    assert not bad, "command modules doing the library's work:\n" + "\n".join(bad)


def test_imports_inside_functions_only_put_off_heavy_dependencies():
    bad = [imp for imp in imports() if imp.in_function and not allowed_in_function(imp)]
    assert not bad, "imports inside functions that put off no heavy dependency, or do not say which:\n" + \
        "\n".join(dict.fromkeys(map(repr, bad)))


def test_the_in_function_import_rule_flags_what_it_should():
    def check(source: str) -> list[Import]:
        return [i for i in imports_of("evolve.run_cli", source) if i.in_function]

    light = check("def f():\n    import json\n")
    assert light and not allowed_in_function(light[0])  # stdlib: belongs at the top
    heavy = check("def f():\n    import torch\n")
    assert allowed_in_function(heavy[0])
    silent = check("def f():\n    from evolve.train.sft import train_sft\n")
    assert not allowed_in_function(silent[0])  # puts torch off, but does not say so
    said = check("def f():\n    from evolve.train.sft import train_sft  # loads torch\n"
                 "    from evolve.train.modeling import LoraSettings\n")
    assert all(allowed_in_function(i) for i in said)  # the comment covers the block it heads
    above = check("def f():\n    # loads torch: only when training\n    from evolve.train.sft import train_sft\n")
    assert allowed_in_function(above[0])
    light_project = check("def f():\n    from evolve.store import RunStore  # a comment is not enough\n")
    assert not allowed_in_function(light_project[0])  # the store loads nothing heavy: import it at the top
    optional = check("def f():\n    try:\n        import gguf\n    except ImportError:\n        return None\n")
    assert allowed_in_function(optional[0])


def test_no_import_hides_from_this_test():
    """`importlib.import_module("pkg.mod")` or `__import__("mod")` with a literal name is an import this test
    cannot see: write the import statement."""
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id == "__import__")):
                bad.append(f"{name} (line {node.lineno}): {node.args[0].value}")
    assert not bad, "imports by name:\n" + "\n".join(bad)


def test_the_tui_and_the_store_load_no_orchestration():
    """`import evolve.store` (through `evolve/__init__`) and the TUI's modules load records and the store (with its
    token totals, `evolve.store_tokens`) only."""
    code = ("import sys, evolve.store, tui.source, tui.summary, tui.stats; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{PACKAGES!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    ours = set(loaded.stdout.split())
    assert {"evolve.store", "tui.source"} <= ours
    # `agent` itself (its __init__ only sets OpenMP's wait policy), none of its modules
    allowed = {"evolve", "evolve.store", "evolve.store_tokens", "agent"} | {
        m for m in ours if m.split(".")[0] in ("records", "tui")}
    assert ours <= allowed, sorted(ours - allowed)


def test_the_command_line_loads_no_heavy_dependency():
    """`import evolve.cli` (every command's module) loads no heavy optional dependency: each loads when a command
    needs it, and `HF_HUB_OFFLINE` is set before anything reads it."""
    code = f"import sys, evolve.cli; print(' '.join(sorted(m for m in {sorted(HEAVY | {'huggingface_hub'})!r} "\
           "if m in sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []
