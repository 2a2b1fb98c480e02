"""Grading runs no code the agent planted to change how the tests run.

A patch is graded by running the repository's tests on it, so a patch can try to win by changing the
tests' machinery instead of the code: a `conftest.py` hook that turns failures into passes, a pytest
configuration (`pytest.ini`, `tox.ini [pytest]`, `setup.cfg [tool:pytest]`, `pyproject.toml
[tool.pytest...]`) or a `pytest11` entry point that loads such a plugin, a `sitecustomize.py` / `.pth`
file that runs at interpreter start, a new top-level module that shadows an installed one (`pytest.py`
next to `python -m pytest`), or the runner script the eval script's test command names (sympy's
`bin/test`). Under GRPO that verdict is a reward, so the policy would learn to do it.

After the patch is applied in the fresh grading sandbox, `guard` looks at every file it touched (the
patch's own paths and whatever `git status` shows changed) and restores (to the base commit, or deletes)
each one that can change how tests run, before the eval script starts; files under `.git` (a hook that
the eval script's `git checkout` would run) count too, and the eval script runs with git hooks off; so does
installed-distribution metadata (`*.dist-info`, `*.egg-info`: a `pytest11` entry point there is a plugin pytest
autoloads). Changed code that stays is scanned (`code_flags`): newly reaching into the test machinery
(`_pytest`, pytest hooks, unittest's result classes, `sys.modules` or builtins patching, `os._exit`) is flagged,
not restored (it may be the fix's own file). Those are recorded as `tampering`, and a tampered patch is never
resolved. The scan reads text and is easily evaded; `tasks.witness` checks what actually ran. Files that are
only test code (new test files, files in the test patch's test directories, which the eval script resets
anyway) are restored too, without blame: tests the agent wrote do not grade it. `review` is the pure
decision (unit-tested without a sandbox); `guard` gathers what it needs from the sandbox and restores.
"""

from __future__ import annotations

import configparser
import json
import logging
import posixpath
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Callable

from sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

PYTEST_CONFIG_FILES = {"pytest.ini", ".pytest.ini", "pytest.toml", ".pytest.toml"}
"""Files whose mere presence changes pytest's configuration (and its rootdir)."""
SECTIONED_CONFIG_FILES = {"tox.ini", "setup.cfg", "pyproject.toml", "setup.py"}
"""Files that configure pytest (or register its plugins) in one section among others."""
STARTUP_FILES = {"sitecustomize.py", "usercustomize.py"}
"""Modules Python imports at start-up by themselves."""
TEST_DIRS = {"test", "tests", "testing"}
"""Directory names that hold tests."""
TEST_FILE = re.compile(r"(^test_.*\.py$)|(.*_test\.py$)|(^tests\.py$)")
"""File names of test modules (pytest's defaults, and Django's `tests.py`)."""
METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg", ".egg-link")
"""Path components that are installed-distribution metadata (found by plugin autoloading and `importlib.metadata`)."""
CODE_FLAGS = {
    "references the test framework's internals (`_pytest`, `pluggy`)": re.compile(r"\b(?:_pytest|pluggy)\b"),
    "implements or registers pytest hooks": re.compile(
        r"\bdef\s+pytest_\w+\s*\(|\bhookimpl\b|\bhookwrapper\b|\bpytest_plugins\b|\bpluginmanager\b"),
    "references unittest's result machinery": re.compile(
        r"\b(?:TestResult|TextTestResult|_TextTestResult|TextTestRunner|addFailure|addError|addSuccess|addSkip|"
        r"addExpectedFailure|addUnexpectedSuccess|wasSuccessful)\b|\bunittest\.(?:result|runner|case)\b"),
    "patches `sys.modules`": re.compile(
        r"\bsys\.modules\s*(?:\[[^\]\n]*\]\s*)?=(?!=)|\bsys\.modules\.(?:update|setdefault|pop|popitem|clear|"
        r"__setitem__|__delitem__)\b|\bdel\s+sys\.modules\b|\bsetattr\(\s*sys\.modules\b"),
    "patches builtins": re.compile(
        r"\b(?:builtins|__builtin__|__builtins__)\.\w+\s*=(?!=)|\bsetattr\(\s*(?:builtins|__builtins__|__builtin__)\b"
        r"|\b__builtins__\s*\[[^\]\n]*\]\s*=(?!=)|\b__builtins__\.update\b"),
    "ends the interpreter without cleanup (`os._exit`), before pytest can report": re.compile(
        r"\bos\._exit\b|\bimport\s+_exit\b|\b_exit\s+as\b"),
}
"""What code under test has no business doing; a changed non-test `.py` file that does it, where it did not
before, is flagged (the first two are allowed where the repository is pytest itself)."""
PYTEST_OWNED = tuple(CODE_FLAGS)[:2]


@dataclass
class Review:
    """What to do with a patch's files before grading."""

    tampering: list[str] = field(default_factory=list)
    """One line per file that changes how the tests run (the patch is then not resolved)."""
    ignored: list[str] = field(default_factory=list)
    """Test files the patch changed, restored without blame."""
    restore: list[str] = field(default_factory=list)
    """Every path to put back to the base commit (or delete, if new) before the tests run."""
    changed: list[str] = field(default_factory=list)
    """The paths that stay changed for the tests: the code under test."""
    owns_pytest: bool = False
    """The repository is pytest itself (its code is the test machinery)."""


def patch_paths(patch: str) -> list[str]:
    """Every path a patch touches (both sides of renames and copies), in order, without `a/`/`b/`."""
    found: list[str] = []

    def add(path: str) -> None:
        path = path.strip()
        if path.startswith('"') and path.endswith('"'):
            path = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        path = path.split("\t")[0]
        if path and path != "/dev/null" and path not in found:
            found.append(path)

    lines = patch.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("diff --git "):
            m = re.match(r'diff --git ("?a/.+"?) ("?b/.+"?)$', line)
            if m:
                for side in m.groups():
                    add(re.sub(r'^("?)[ab]/', r"\1", side))
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            for path in (line[4:], lines[i + 1][4:]):  # a file header, not a removed "-- ..." line
                if path.strip() != "/dev/null":
                    add(re.sub(r'^("?)[^/"]+/', r"\1", path, count=1))  # -p1, as git apply and patch do
        elif line.startswith("*** ") and i + 1 < len(lines) and lines[i + 1].startswith("--- ") \
                and not line.startswith("***************"):  # a context diff's file header (patch reads them)
            for path in (line[4:], lines[i + 1][4:]):
                if path.strip() != "/dev/null":
                    add(re.sub(r'^("?)[^/"]+/', r"\1", path, count=1))
        elif line.startswith("Index: "):
            add(line[7:])
        elif line.startswith(("rename from ", "rename to ", "copy from ", "copy to ")):
            add(line.split(" ", 2)[2])
    return [posixpath.normpath(p) for p in found]


def _pytest_settings(name: str, text: str | None) -> object:
    """The part of a config file that configures pytest or registers a pytest plugin (comparable; None
    when there is none, so a new file without such a part is no change)."""
    if text is None:
        return None
    try:
        return _settings(name, text) or None
    except (tomllib.TOMLDecodeError, configparser.Error, ValueError):
        return ("unparsed", text)


def _settings(name: str, text: str) -> object:
    """pytest sections and pytest11 entry points of one config file."""
    if name == "pyproject.toml":
        data = tomllib.loads(text)
        entry = data.get("project", {}).get("entry-points", {}).get("pytest11")
        found = {"tool.pytest": data.get("tool", {}).get("pytest"), "pytest11": entry}
        return {k: v for k, v in found.items() if v is not None}
    if name == "setup.py":
        return text.count("pytest11")
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(text)
    out = {s: dict(parser[s]) for s in parser.sections() if s in ("pytest", "tool:pytest")}
    if parser.has_option("options.entry_points", "pytest11"):
        out["pytest11"] = parser.get("options.entry_points", "pytest11")
    return out


def dirs_of_tests(test_patch_files: list[str]) -> list[str]:
    """Directories holding the test patch's files: up to the first `tests`-like component, else the parent."""
    roots = set()
    for f in test_patch_files:
        parts = f.split("/")[:-1]
        cut = next((i for i, p in enumerate(parts) if p in TEST_DIRS), None)
        roots.add("/".join(parts[:cut + 1] if cut is not None else parts))
    return sorted(roots)


def _under(path: str, root: str) -> bool:
    return root == "" or path == root or path.startswith(root + "/")


def runner_files(eval_script: str) -> set[str]:
    """Words of the eval script's test command (between swebench's output markers) that look like repository
    paths: a runner script such as sympy's `bin/test` or Django's `tests/runtests.py`."""
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT

    if START_TEST_OUTPUT not in eval_script:
        return set()
    section = eval_script.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0]
    out = set()
    for word in re.split(r"[\s;&|()<>=\"']+", section):
        if "/" in word or word.endswith((".py", ".sh")):
            out.add(posixpath.normpath(word.removeprefix("/testbed/")))
    return out


def review(paths: list[str], *, test_patch_files: list[str], existed: Callable[[str], bool],
           read: Callable[[str, bool], str | None], importable: set[str], path_roots: list[str],
           runners: set[str] = frozenset()) -> Review:
    """Decide, file by file. ``existed(path)``: the path is in the base commit; ``read(path, before)``:
    its text at the base commit (``before``) or after the patch (None when absent); ``importable``: top-level
    module names the test environment can import; ``path_roots``: directories of `/testbed` on its
    `sys.path`, relative ("" for `/testbed` itself, which `python -m pytest` puts first); ``runners``: paths
    the eval script's test command names (`runner_files`). Changed code (`.py` files kept) is checked by
    `code_flags`; the repository's own test framework (pytest's repository) may reference pytest's internals."""
    out = Review()
    roots = [r for r in dirs_of_tests(test_patch_files) if r]
    owns_pytest = out.owns_pytest = existed("src/_pytest") or existed("_pytest")
    for path in paths:
        name = posixpath.basename(path)
        testish = path in test_patch_files or any(_under(path, r) for r in roots)
        why = None
        if path in runners and path not in test_patch_files and not TEST_FILE.match(name):
            why = "the eval script's test command runs it"  # a runner script, even inside a test directory
        elif ".git" in path.split("/"):
            why = "inside .git (hooks and config run code during the eval script's git commands)"
        elif name == "conftest.py":
            why = "a conftest.py, which pytest runs before the tests (its hooks can rewrite their results)"
        elif name in PYTEST_CONFIG_FILES:
            why = "a pytest configuration file (it can load plugins or change what runs)"
        elif name in STARTUP_FILES or name.endswith(".pth"):
            why = "a file Python runs at start-up"
        elif any(part.endswith(METADATA_SUFFIXES) or part == "EGG-INFO" for part in path.split("/")):
            why = ("installed-distribution metadata (its entry points, e.g. `pytest11`, load plugins into "
                   "pytest)")
        elif name in SECTIONED_CONFIG_FILES and _pytest_settings(name, read(path, True)) != \
                _pytest_settings(name, read(path, False)):
            why = "its pytest configuration or pytest11 plugin entry point changed"
        else:
            for root in path_roots:
                if not _under(path, root):
                    continue
                top = (path[len(root) + 1:] if root else path).split("/")[0]
                module = top[:-3] if top.endswith(".py") else top.split(".")[0]
                if module in importable and not existed(posixpath.join(root, top)):
                    why = f"a new module `{module}` that shadows the installed one the tests import"
                    break
        if why:
            out.tampering.append(f"{path}: {why}")
            out.restore.append(path)
        elif testish or (TEST_FILE.match(name) and not existed(path)):
            out.ignored.append(path)
            out.restore.append(path)
        else:
            out.changed.append(path)
            if name.endswith(".py"):
                out.tampering += [f"{path}: {why}" for why in code_flags(read(path, True), read(path, False),
                                                                         owns_pytest=owns_pytest)]
    return out


def code_flags(before: str | None, after: str | None, *, owns_pytest: bool = False) -> list[str]:
    """Why the changed code ``after`` (``before``: the file at the base commit, None when new) tries to change
    how the tests run: each `CODE_FLAGS` kind it shows that ``before`` did not (a file that was already test
    infrastructure, such as Django's `django/test/runner.py`, may keep doing what it did)."""
    found = []
    for why, pattern in CODE_FLAGS.items():
        if owns_pytest and why in PYTEST_OWNED:
            continue
        if after and pattern.search(after) and not (before and pattern.search(before)):
            found.append(f"the code under test {why}")
    return found


PROBE = ("cd / && for py in /opt/miniconda3/envs/testbed/bin/python python3 python; do "
         "if command -v \"$py\" >/dev/null 2>&1; then exec \"$py\" -c {code}; fi; done; echo '{{}}'")
PROBE_CODE = ("import json, pkgutil, sys; print(json.dumps({'names': sorted({m.name for m in pkgutil.iter_modules()}"
              " | set(sys.builtin_module_names) | set(getattr(sys, 'stdlib_module_names', ()))),"
              " 'path': [p for p in sys.path if p == '/testbed' or p.startswith('/testbed/')]}))")


def environment(sb: Sandbox) -> tuple[set[str], list[str]]:
    """Top-level module names the sandbox's Python imports (its environment's, else the system's), and the
    directories of `/testbed` on its `sys.path` (relative; always "")."""
    r = sb.exec(PROBE.format(code=shlex.quote(PROBE_CODE)), timeout=60, max_output=2_000_000)
    try:
        data = json.loads(r.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {}
    names = set(data.get("names") or []) | set(sys.stdlib_module_names) | {"pytest", "_pytest", "pluggy"}
    roots = {""} | {posixpath.relpath(p, "/testbed") if p != "/testbed" else "" for p in data.get("path") or []}
    return names, sorted(roots)


GIT_CONFIG_BACKUP = "/tmp/evolve-git-config"
EVAL_ENV = ("GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=core.hooksPath GIT_CONFIG_VALUE_0=/dev/null "
            "GIT_CONFIG_KEY_1=core.fsmonitor GIT_CONFIG_VALUE_1=false")
"""Prefix of the eval script's command: its git commands run no hooks and no fsmonitor command, whatever
`.git` holds (git >= 2.31 reads these variables; older gits ignore them)."""


def changed_paths(sb: Sandbox) -> set[str]:
    """Paths `git status` reports as changed or untracked (not ignored) in `/testbed`."""
    r = sb.exec("git status --porcelain=v1 -z --untracked-files=all", timeout=120, max_output=8_000_000)
    out, items = set(), r.output.split("\0")
    i = 0
    while i < len(items):
        entry = items[i]
        i += 1
        if len(entry) > 3:
            out.add(posixpath.normpath(entry[3:]))
            if entry[0] in "RC":  # a rename or copy: the next item is its source
                out.add(posixpath.normpath(items[i]))
                i += 1
    return out


def before_patch(sb: Sandbox) -> set[str]:
    """Call before the patch is applied: keeps `.git/config` aside and returns what `git status` reports already
    (an image's own untracked files are not the patch's)."""
    sb.exec(f"cp -p .git/config {GIT_CONFIG_BACKUP} 2>/dev/null", timeout=60)
    return changed_paths(sb)


def guard(sb: Sandbox, patch: str, test_patch_files: list[str], baseline: set[str] | None = None,
          eval_script: str = "") -> Review:
    """Review the applied ``patch`` in ``sb`` and restore what it must not change (see the module doc).
    ``baseline`` (from `before_patch`) adds what `git status` shows changed beyond it to the patch's own paths;
    ``eval_script`` names the runner scripts its test command runs."""
    paths = patch_paths(patch)
    if baseline is not None:
        paths += sorted(p for p in changed_paths(sb) - baseline if p not in paths)
    if not paths:
        return Review()
    names, roots = environment(sb)
    cache: dict[tuple[str, bool], str | None] = {}

    def read(path: str, before: bool) -> str | None:
        if (path, before) not in cache:
            q = shlex.quote(path)
            cmd = f"git show HEAD:{shlex.quote('./' + path)}" if before else f"cat -- {q}"
            r = sb.exec(cmd, timeout=60, max_output=4_000_000)
            cache[(path, before)] = r.output if r.exit_code == 0 else None
        return cache[(path, before)]

    def existed(path: str) -> bool:
        return sb.exec(f"git cat-file -e HEAD:{shlex.quote('./' + path)}", timeout=60).exit_code == 0

    result = review(paths, test_patch_files=test_patch_files, existed=existed, read=read, importable=names,
                    path_roots=roots, runners=runner_files(eval_script))
    for path in result.restore:
        q = shlex.quote(path)
        if path == ".git/config":
            cmd = f"cp -p {GIT_CONFIG_BACKUP} .git/config"
        elif ".git" in path.split("/"):
            cmd = f"rm -rf -- {q}"  # new files under .git (hooks); existing ones cannot be restored from HEAD
        else:
            cmd = (f"if git cat-file -e HEAD:{shlex.quote('./' + path)} 2>/dev/null; then "
                   f"rm -rf -- {q} && git checkout HEAD -- {q}; else rm -rf -- {q}; fi")
        r = sb.exec(cmd, timeout=60)
        if r.exit_code != 0:
            raise SandboxError(f"could not restore {path} before grading: {r.output[-300:]}")
    if result.tampering:
        log.warning("patch tampers with how tests run: %s", "; ".join(result.tampering))
    return result
