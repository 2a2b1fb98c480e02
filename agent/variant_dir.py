"""Variant directories as small git repositories: copy one (a child starts as its parent), diff two, and run
a variant's own tests inside a sandbox.

Nothing here executes a variant's files on the host: copying and diffing read bytes; the tests are copied
into a sandbox and run there.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from agent.tools.base import ToolContext
from agent.tools.sandboxed import VARIANT_ROOT
from agent.variant import AgentVariant, VariantError
from sandbox import Sandbox

log = logging.getLogger(__name__)

GIT = ["git", "-c", "user.name=evolve", "-c", "user.email=evolve@localhost", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"]
"""git with a fixed identity and no hooks: a variant's repository never runs code of its own on the host."""
IGNORED = shutil.ignore_patterns(".git", "__pycache__", "*.pyc")


def _git(directory: Path, *args: str) -> str:
    r = subprocess.run([*GIT, *args], cwd=directory, capture_output=True, text=True)
    if r.returncode != 0:
        raise VariantError(f"git {' '.join(args)} failed in {directory}: {r.stderr.strip()[-300:]}")
    return r.stdout


def commit_variant(directory: str | Path, message: str = "variant") -> str:
    """`git init` (if needed) and commit everything in `directory`; returns the commit sha."""
    d = Path(directory)
    if not (d / ".git").exists():
        _git(d, "init", "-q")
    _git(d, "add", "-A")
    _git(d, "commit", "-q", "--allow-empty", "-m", message)
    return _git(d, "rev-parse", "HEAD").strip()


def copy_variant(source: str | Path, dest: str | Path, message: str = "") -> Path:
    """Copy the variant at `source` (validated first) to the new directory `dest`, as a fresh git repository
    with one commit. Returns `dest`."""
    src, out = Path(source), Path(dest)
    AgentVariant.load(src)
    if out.exists() and any(out.iterdir()):
        raise VariantError(f"{out} exists and is not empty; give a new directory for the copy")
    shutil.copytree(src, out, ignore=IGNORED, symlinks=True, dirs_exist_ok=True)
    commit_variant(out, message or f"copy of {src.resolve().name}")
    return out


def variant_diff(parent_dir: str | Path, child_dir: str | Path) -> str:
    """Unified diff (git format, `a/` and `b/` prefixes, binary files included) from the parent variant's files
    to the child's; `.git` and caches are left out. `git apply` in a copy of the parent applies it."""
    a, b = Path(parent_dir), Path(child_dir)
    for d in (a, b):
        if not d.is_dir():
            raise VariantError(f"{d} is not a directory")
    with tempfile.TemporaryDirectory(prefix="evolve-variant-diff-") as tmp:
        for src, name in ((a, "a"), (b, "b")):
            shutil.copytree(src, Path(tmp) / name, ignore=IGNORED, symlinks=True)
        r = subprocess.run([*GIT, "diff", "--no-index", "--no-color", "--no-ext-diff", "--binary",
                            "--src-prefix=", "--dst-prefix=", "a", "b"], cwd=tmp, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise VariantError(f"diff of {a} and {b} failed: {r.stderr.strip()[-300:]}")
    return r.stdout


class VariantTestCase(BaseModel):
    """One of a variant's tests, as it ran in a sandbox."""

    name: str
    """Path of the test in the variant (tests/test_...)."""
    passed: bool
    """Exit code 0 within the timeout."""
    exit_code: int
    """Exit status (-9 when killed at the timeout)."""
    output: str = ""
    """What it printed (head and tail)."""
    seconds: float = 0.0
    """Wall time in the sandbox."""


class VariantTestResult(BaseModel):
    """The outcome of a variant's own tests."""

    passed: bool
    """Every test passed (and there was at least one, when the variant has sandbox tools)."""
    cases: list[VariantTestCase] = Field(default_factory=list)
    """Each test, in order."""
    reason: str = ""
    """One line: why the tests did not pass (empty when they did)."""

    def summary(self) -> str:
        ok = sum(c.passed for c in self.cases)
        return f"{ok}/{len(self.cases)} variant tests passed" + (f": {self.reason}" if self.reason else "")


def run_variant_tests(variant_dir: str | Path, sandbox: Sandbox, timeout: float = 120.0) -> VariantTestResult:
    """Load the variant (a load failure is a failed result, not an exception), install its tools/ and tests/
    into `sandbox`, and run every `tests/test_*` there, each in a fresh scratch directory, with
    `$EVOLVE_VARIANT` (the installed variant) and `$EVOLVE_TOOLS` set. Nothing runs on the host."""
    try:
        variant = AgentVariant.load(variant_dir)
    except VariantError as e:
        return VariantTestResult(passed=False, reason=f"the variant does not load: {e}")
    ctx = ToolContext(sandbox=sandbox, command_timeout=timeout)
    variant.files.install(ctx)
    tests = [rel for rel, _ in variant.files.files if rel.startswith("tests/test_") and rel.count("/") == 1]
    cases = []
    for rel in tests:
        script = shlex.quote(f"{VARIANT_ROOT}/{rel}")
        cmd = (f"d=$(mktemp -d) && cd \"$d\" && EVOLVE_VARIANT={VARIANT_ROOT} EVOLVE_TOOLS={VARIANT_ROOT}/tools "
               f"{script}; rc=$?; cd / && rm -rf \"$d\"; exit $rc")
        t = time.perf_counter()
        r = sandbox.exec(cmd, timeout=timeout, max_output=20_000)
        cases.append(VariantTestCase(name=rel, passed=r.ok, exit_code=r.exit_code, output=r.output,
                                     seconds=time.perf_counter() - t))
        log.info("variant test %s: %s", rel, "passed" if r.ok else f"failed (exit {r.exit_code})")
    failed = [c.name for c in cases if not c.passed]
    if failed:
        return VariantTestResult(passed=False, cases=cases, reason=f"failed: {', '.join(failed)}")
    if not cases and any(n in variant.tools for n in variant.sandbox_tools):
        return VariantTestResult(passed=False, cases=cases, reason="the variant has sandbox tools but no tests")
    return VariantTestResult(passed=True, cases=cases)
