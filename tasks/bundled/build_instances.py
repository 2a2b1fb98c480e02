"""Regenerate the bundled suite's `instances.jsonl` from its authoring sources, and edit those sources.

Per repository, `repos/<name>/` holds:

- `history/NNNN-*.patch`: the repository as a `git format-patch` series from an empty repository;
  the base commit is the last one.
- `gold.patch`: the fix (source files only); `test.patch`: the hidden tests (files under `tests/` only).
- `issue.md`: the problem statement; `meta.json`: `{"bug_kind": "..."}`.

Commands (run from the project root):

    python -m tasks.bundled.build_instances build [NAME ...]   # rewrite instances.jsonl
    python -m tasks.bundled.build_instances build --check      # exit 1 if instances.jsonl is stale
    python -m tasks.bundled.build_instances checkout NAME DEST  # editable repo: main = base, fix = gold + tests
    python -m tasks.bundled.build_instances export NAME DEST   # write history/, gold.patch, test.patch back

`build` materializes each repository (base_commit), checks that the visible suite passes at base,
applies the test patch and runs the tests (before), applies the gold patch and runs them again
(after), and derives FAIL_TO_PASS / PASS_TO_PASS from pytest's `-rA` summary with swebench's own
log parser. It refuses an instance whose gold patch leaves a test failing, breaks a test that passed,
or fixes nothing. To edit a repository: `checkout`, rework `main` (the history, e.g. with
`git rebase -i --root`) and `fix` (one commit or several on top of main; changes under `tests/` become
test.patch, the rest gold.patch), then `export` and `build`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from records import TaskInstance
from tasks.bundled.materialize import REPOS_DIR, MaterializeError, git, materialize, names

log = logging.getLogger(__name__)

INSTANCES_PATH = Path(__file__).resolve().parent / "instances.jsonl"
SUITE = "bundled"
TEST_CMD_PREFIX = "python3 -m pytest -rA -p no:cacheprovider"
"""The test command run inside the image (from the repository root); the test files follow it."""

_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)


class BuildError(RuntimeError):
    """An instance's sources are inconsistent (a patch does not apply, a test is wrong)."""


def instance_id(name: str) -> str:
    return f"{SUITE}__{name}-1"


def patch_files(patch: str) -> list[str]:
    """Paths a unified git diff touches, in order."""
    return [b for _a, b in _DIFF_HEADER.findall(patch)]


def added_lines(patch: str) -> list[str]:
    """Lines a unified diff adds (without the leading `+`)."""
    return [line[1:] for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")]


def apply_patch(repo: Path, patch: str, what: str) -> None:
    """`git apply` a patch in `repo`'s working tree."""
    try:
        git(["apply", "-"], repo, input=patch)
    except MaterializeError as exc:
        raise BuildError(f"{what} does not apply in {repo}: {exc}") from exc


def host_command(test_cmd: str) -> list[str]:
    """The image's test command with this interpreter in place of `python3`."""
    argv = shlex.split(test_cmd)
    if argv[0] in ("python3", "python"):
        argv[0] = sys.executable
    return argv


def test_env() -> dict[str, str]:
    """Environment for running a bundled repository's tests on the host, close to the bare image."""
    env = dict(os.environ)
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_tests(repo: Path, test_cmd: str, timeout: float = 300) -> tuple[dict[str, str], str]:
    """Run `test_cmd` in `repo`; return swebench's parse of the log ({test id: status}) and the log."""
    from swebench.harness.log_parsers.python import parse_log_pytest

    proc = subprocess.run(host_command(test_cmd), cwd=repo, env=test_env(), capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    statuses = parse_log_pytest(output, None)
    stray = sorted(t for t in statuses if "::" not in t)
    if stray:
        raise BuildError(f"{repo.name}: output lines that the log parser takes for test results "
                         f"(a test prints or logs a line starting with PASSED/FAILED/ERROR...): {stray}")
    return statuses, output


def test_files(repo: Path) -> list[str]:
    """Test files of a working tree, relative, sorted."""
    return sorted(str(p.relative_to(repo)) for p in (repo / "tests").rglob("test_*.py"))


def make_test_cmd(files: list[str]) -> str:
    return " ".join([TEST_CMD_PREFIX, *files])


def read_sources(name: str) -> dict:
    base = REPOS_DIR / name
    missing = [f for f in ("gold.patch", "test.patch", "issue.md", "meta.json") if not (base / f).is_file()]
    if missing:
        raise BuildError(f"{base} lacks {', '.join(missing)}")
    return {
        "gold": (base / "gold.patch").read_text(encoding="utf-8"),
        "test": (base / "test.patch").read_text(encoding="utf-8"),
        "issue": (base / "issue.md").read_text(encoding="utf-8"),
        "meta": json.loads((base / "meta.json").read_text(encoding="utf-8")),
    }


def build_instance(name: str, workdir: Path) -> TaskInstance:
    """Materialize `name`, run its tests before and after the gold patch, return its instance."""
    src = read_sources(name)
    gold_files, test_files_touched = patch_files(src["gold"]), patch_files(src["test"])
    if not gold_files or any(f.startswith("tests/") for f in gold_files):
        raise BuildError(f"{name}: gold.patch must change source files only, got {gold_files}")
    if not test_files_touched or not all(f.startswith("tests/") for f in test_files_touched):
        raise BuildError(f"{name}: test.patch must change files under tests/ only, got {test_files_touched}")

    repo = workdir / name
    base_commit = materialize(name, repo)

    visible, output = run_tests(repo, make_test_cmd(test_files(repo)))
    broken = sorted(t for t, s in visible.items() if s != "PASSED")
    if not visible or broken:
        raise BuildError(f"{name}: the visible suite must pass at base; not passing: {broken}\n{output}")

    apply_patch(repo, src["test"], f"{name}/test.patch")
    test_cmd = make_test_cmd(test_files(repo))
    before, _ = run_tests(repo, test_cmd)
    apply_patch(repo, src["gold"], f"{name}/gold.patch")
    after, output = run_tests(repo, test_cmd)

    not_passing = sorted(t for t, s in after.items() if s != "PASSED")
    if not after or not_passing:
        raise BuildError(f"{name}: tests not passing with the gold patch: {not_passing}\n{output}")
    if set(before) != set(after):
        raise BuildError(f"{name}: the same tests must be reported before and after the gold patch "
                         f"(a collection error?): {sorted(set(before) ^ set(after))}")
    odd = sorted(t for t, status in before.items() if status not in ("PASSED", "FAILED", "ERROR"))
    if odd:
        raise BuildError(f"{name}: tests neither passing nor failing before the gold patch: {odd}")
    fail_to_pass = sorted(t for t in after if before[t] in ("FAILED", "ERROR"))
    pass_to_pass = sorted(t for t in after if before[t] == "PASSED")
    if not fail_to_pass:
        raise BuildError(f"{name}: no test fails before the gold patch")

    problem = src["issue"].strip() + "\n"
    return TaskInstance(
        instance_id=instance_id(name),
        suite=SUITE,
        repo=f"evolve-bundled/{name}",
        base_commit=base_commit,
        problem_statement=problem,
        hints_text="",
        patch=src["gold"],
        test_patch=src["test"],
        FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass,
        version="1.0",
        environment_setup_commit="",
        image="",
        test_cmd=test_cmd,
        extra={"bug_kind": src["meta"]["bug_kind"], "files_changed": len(gold_files)},
    )


def dump_line(inst: TaskInstance) -> str:
    return json.dumps(inst.model_dump(mode="json"), ensure_ascii=False)


def load_lines(path: Path = INSTANCES_PATH) -> dict[str, str]:
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {json.loads(line)["instance_id"]: line for line in lines}


def build(selected: list[str] | None = None, check: bool = False) -> int:
    """Rebuild the selected instances (all by default); write, or with `check` compare, instances.jsonl."""
    chosen = selected or names()
    unknown = sorted(set(chosen) - set(names()))
    if unknown:
        raise BuildError(f"unknown bundled repositories: {unknown}; known: {names()}")
    current = load_lines()
    fresh = dict(current) if selected else {}
    with tempfile.TemporaryDirectory(prefix="bundled-build-") as tmp:
        for name in chosen:
            inst = build_instance(name, Path(tmp))
            log.info("%s: %d FAIL_TO_PASS, %d PASS_TO_PASS, base %s", inst.instance_id,
                     len(inst.FAIL_TO_PASS), len(inst.PASS_TO_PASS), inst.base_commit[:12])
            fresh[inst.instance_id] = dump_line(inst)
    if check:
        stale = sorted(i for i in set(current) | set(fresh) if current.get(i) != fresh.get(i))
        if stale:
            log.error("instances.jsonl is stale for: %s (run `python -m tasks.bundled.build_instances build`)",
                      ", ".join(stale))
            return 1
        log.info("instances.jsonl is up to date (%d instances)", len(fresh))
        return 0
    text = "".join(fresh[i] + "\n" for i in sorted(fresh))
    INSTANCES_PATH.write_text(text, encoding="utf-8")
    log.info("wrote %d instances to %s", len(fresh), INSTANCES_PATH)
    return 0


def checkout(name: str, dest: Path) -> str:
    """Materialize `name` at `dest` on branch `main`, with branch `fix` = gold commit + test commit."""
    src = read_sources(name)
    base = materialize(name, dest)
    git(["checkout", "-q", "-b", "fix"], dest)
    for patch, message in ((src["gold"], "Gold fix"), (src["test"], "Hidden tests")):
        apply_patch(dest, patch, message)
        git(["add", "-A"], dest)
        git(["commit", "-q", "-m", message], dest)
    git(["checkout", "-q", "main"], dest)
    return base


def export(name: str, src: Path, base_ref: str = "main", fix_ref: str = "fix") -> None:
    """Write `src`'s history (`base_ref`) and its `fix_ref` diff back into `repos/<name>/`."""
    out = REPOS_DIR / name
    history = out / "history"
    history.mkdir(parents=True, exist_ok=True)
    for old in history.glob("*.patch"):
        old.unlink()
    git(["format-patch", "-q", "--root", "--zero-commit", "--no-signature", "--no-renames",
         "--no-color", "-o", str(history), base_ref], src)
    diff = ["diff", "--no-color", "--no-renames", "--no-ext-diff", base_ref, fix_ref, "--"]
    gold = git([*diff, ".", ":(exclude)tests"], src)
    tests = git([*diff, "tests"], src)
    if not gold or not tests:
        raise BuildError(f"{src}: {fix_ref} must change both source files and tests/ relative to {base_ref}")
    (out / "gold.patch").write_text(gold, encoding="utf-8")
    (out / "test.patch").write_text(tests, encoding="utf-8")
    meta = out / "meta.json"
    if not meta.exists():
        meta.write_text(json.dumps({"bug_kind": "logic"}, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m tasks.bundled.build_instances",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="regenerate instances.jsonl")
    p_build.add_argument("names", nargs="*", help="only these repositories (default: all)")
    p_build.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    p_checkout = sub.add_parser("checkout", help="editable repository: main = base, fix = gold + tests")
    p_checkout.add_argument("name")
    p_checkout.add_argument("dest", type=Path)
    p_export = sub.add_parser("export", help="write an edited repository back as history/, gold/test patches")
    p_export.add_argument("name")
    p_export.add_argument("src", type=Path)
    p_export.add_argument("--base-ref", default="main")
    p_export.add_argument("--fix-ref", default="fix")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            return build(args.names, check=args.check)
        if args.command == "checkout":
            print(checkout(args.name, args.dest))
            return 0
        export(args.name, args.src, args.base_ref, args.fix_ref)
        return 0
    except (BuildError, MaterializeError) as exc:
        log.error("error: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
