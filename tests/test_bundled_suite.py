"""The bundled suite: every instance is consistent with its sources and behaves as recorded.

For each instance: materialize the repository (HEAD must be `base_commit`), apply the hidden tests,
run `test_cmd` with this interpreter and parse the log with swebench's own parser: every FAIL_TO_PASS
test must fail and every PASS_TO_PASS test pass; then apply the gold patch: all of them must pass.
No Docker needed: the repositories need only the standard library and pytest.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from swebench.harness.log_parsers.python import parse_log_pytest

from records import TaskInstance
from tasks.bundled.materialize import REPOS_DIR, main as materialize_main, materialize, names
from tasks.bundled.suite import INSTANCES_PATH, BundledSuite

INSTANCES = BundledSuite().instances()
BY_NAME = {i.instance_id.removeprefix("bundled__").removesuffix("-1"): i for i in INSTANCES}

FAILING = {"FAILED", "ERROR"}


def git(*args: str, cwd: Path, input: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def run_tests(repo: Path, test_cmd: str) -> tuple[dict[str, str], str]:
    argv = shlex.split(test_cmd)
    assert argv[:3] == ["python3", "-m", "pytest"], test_cmd
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    return parse_log_pytest(log, None), log


def added_lines(patch: str) -> list[str]:
    return [line[1:].strip() for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")]


def touched(patch: str) -> list[str]:
    return re.findall(r"^diff --git a/\S+ b/(\S+)$", patch, re.M)


# -- fast checks --------------------------------------------------------------------------------

def test_suite_interface():
    suite = BundledSuite()
    assert (suite.name, suite.kind) == ("bundled", "swe")
    ids = [i.instance_id for i in INSTANCES]
    assert len(ids) >= 12
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [i.instance_id for i in suite.select(limit=2)] == ids[:2]
    assert suite.select(ids=[ids[3]])[0].instance_id == ids[3]
    assert all(isinstance(i, TaskInstance) for i in INSTANCES)


def test_instances_file_is_well_formed():
    lines = INSTANCES_PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(INSTANCES)
    for line in lines:
        data = json.loads(line)
        assert TaskInstance.model_validate(data).model_dump(mode="json") == data


def test_every_repository_has_one_instance():
    assert sorted(BY_NAME) == names()


def test_variety():
    kinds = {i.extra["bug_kind"] for i in INSTANCES}
    assert {"logic", "edge-case", "api-misuse", "parsing", "performance"} <= kinds
    assert sum(1 for i in INSTANCES if i.extra["files_changed"] >= 2) >= 2


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_instance_matches_its_sources(name):
    inst = BY_NAME[name]
    src = REPOS_DIR / name
    assert inst.suite == "bundled"
    assert inst.repo == f"evolve-bundled/{name}"
    assert inst.patch == (src / "gold.patch").read_text(encoding="utf-8")
    assert inst.test_patch == (src / "test.patch").read_text(encoding="utf-8")
    assert inst.problem_statement == (src / "issue.md").read_text(encoding="utf-8").strip() + "\n"
    assert inst.extra == {"bug_kind": json.loads((src / "meta.json").read_text())["bug_kind"],
                          "files_changed": len(touched(inst.patch))}
    assert (inst.hints_text, inst.version, inst.environment_setup_commit) == ("", "1.0", "")
    assert re.fullmatch(r"[0-9a-f]{40}", inst.base_commit)
    assert inst.FAIL_TO_PASS and not set(inst.FAIL_TO_PASS) & set(inst.PASS_TO_PASS)
    assert inst.test_cmd.startswith("python3 -m pytest -rA -p no:cacheprovider tests/")
    gold_files, test_files = touched(inst.patch), touched(inst.test_patch)
    assert gold_files and not any(f.startswith("tests/") for f in gold_files)
    assert test_files and all(f.startswith("tests/") for f in test_files)
    for test_id in inst.FAIL_TO_PASS + inst.PASS_TO_PASS:
        assert test_id.split("::")[0] in inst.test_cmd.split(), test_id


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_issue_does_not_leak_the_fix(name):
    inst = BY_NAME[name]
    leaked = [line for line in added_lines(inst.patch) if len(line) >= 8 and line in inst.problem_statement]
    assert not leaked


def test_materialize_cli(tmp_path, capsys):
    name = sorted(BY_NAME)[0]
    assert materialize_main([name, str(tmp_path / "repo")]) == 0
    assert capsys.readouterr().out.strip() == BY_NAME[name].base_commit
    assert materialize_main([name, str(tmp_path / "repo")]) == 1  # not empty any more


# -- the full loop ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_fail_to_pass_and_pass_to_pass(name, tmp_path):
    inst = BY_NAME[name]
    repo = tmp_path / name
    assert materialize(name, repo) == inst.base_commit
    assert git("rev-parse", "HEAD", cwd=repo).strip() == inst.base_commit
    assert git("status", "--porcelain", cwd=repo) == ""
    assert int(git("rev-list", "--count", "HEAD", cwd=repo)) >= 3

    git("apply", "-", cwd=repo, input=inst.test_patch)
    before, log = run_tests(repo, inst.test_cmd)
    wrong = {t: before.get(t) for t in inst.FAIL_TO_PASS if before.get(t) not in FAILING}
    wrong |= {t: before.get(t) for t in inst.PASS_TO_PASS if before.get(t) != "PASSED"}
    assert not wrong, f"before the gold patch:\n{log[-3000:]}"
    # The lists are exactly what the log says (what build_instances would regenerate).
    assert sorted(t for t, s in before.items() if s in FAILING) == sorted(inst.FAIL_TO_PASS)
    assert sorted(t for t, s in before.items() if s == "PASSED") == sorted(inst.PASS_TO_PASS)

    git("apply", "-", cwd=repo, input=inst.patch)
    after, log = run_tests(repo, inst.test_cmd)
    not_passing = {t: after.get(t) for t in inst.FAIL_TO_PASS + inst.PASS_TO_PASS if after.get(t) != "PASSED"}
    assert not not_passing, f"with the gold patch:\n{log[-3000:]}"
    assert set(after) == set(inst.FAIL_TO_PASS) | set(inst.PASS_TO_PASS)
