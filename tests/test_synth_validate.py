"""The validation rules of synthesis: pure (from test statuses) and end to end on small real git repositories
in Docker: a suite not green at the base is refused with the reason, a flaky test never enters a task, a bug
no test catches is rejected, and every kept row resolves with its gold patch in a fresh sandbox (not with an
empty one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.synth import outcomes
from tasks.synth.journal import Journal

from tests.conftest import make_git_repo


def run(**status: str) -> dict:
    return {"status": [f"{s} tests/test_x.py::{t}" for t, s in status.items()], "seconds": 0.1}


def test_a_test_failing_at_the_base_refuses_the_source():
    base = outcomes.baseline(run(a="PASSED", b="FAILED"), run(a="PASSED", b="FAILED"))
    assert "not green at the base" in base.refusal() and "tests/test_x.py::b" in base.refusal()


def test_a_flaky_test_at_the_base_is_left_out_not_refused():
    base = outcomes.baseline(run(a="PASSED", f="PASSED"), run(a="PASSED", f="FAILED"))
    assert base.refusal() is None and base.passing == ["tests/test_x.py::a"] and base.flaky == ["tests/test_x.py::f"]


def test_fail_to_pass_needs_both_bugged_runs_to_fail():
    base = outcomes.baseline(run(a="PASSED", b="PASSED", c="PASSED"), run(a="PASSED", b="PASSED", c="PASSED"))
    v = outcomes.verdict(base, [run(a="FAILED", b="PASSED", c="FAILED"), run(a="FAILED", b="PASSED", c="PASSED")])
    assert v.reason is None
    assert v.fail_to_pass == ["tests/test_x.py::a"] and v.pass_to_pass == ["tests/test_x.py::b"]
    assert v.flaky == ["tests/test_x.py::c"]


def test_a_second_run_of_only_the_fail_to_pass_tests_keeps_the_pass_to_pass():
    base = outcomes.baseline(run(a="PASSED", b="PASSED", c="PASSED"), run(a="PASSED", b="PASSED", c="PASSED"))
    v = outcomes.verdict(base, [run(a="FAILED", b="PASSED", c="PASSED"), run(a="FAILED")])
    assert v.fail_to_pass == ["tests/test_x.py::a"] and v.pass_to_pass == ["tests/test_x.py::b", "tests/test_x.py::c"]


def test_no_fail_to_pass_is_rejected_and_so_is_a_timeout():
    base = outcomes.baseline(run(a="PASSED"), run(a="PASSED"))
    assert outcomes.verdict(base, [run(a="PASSED")]).reason == "no test fails with the bug"
    assert "timed out" in outcomes.verdict(base, [{"timed_out": True, "status": []}]).reason


def test_a_test_that_vanishes_with_the_bug_fails():
    """A bug that breaks a test module's import removes its tests from the report: they fail."""
    base = outcomes.baseline(run(a="PASSED", b="PASSED"), run(a="PASSED", b="PASSED"))
    v = outcomes.verdict(base, [run(b="PASSED") | {"status": ["ERROR tests/test_x.py", "PASSED tests/test_x.py::b"]}])
    assert v.fail_to_pass == ["tests/test_x.py::a"]


def test_journal_drops_a_torn_line_and_keeps_the_rest(tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text(json.dumps({"instance_id": "x", "extra": {"source": "s", "bug_key": "k"}}) + "\n{\"instance_")
    j = Journal(out)
    assert list(j.rows) == ["x"] and out.read_text().endswith("}\n") and j.done("s", "k")


CALC = '''\
def add(a, b):
    """Sum of a and b."""
    return a + b


def clamp(x, lo, hi):
    """x limited to [lo, hi]."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def noisy(x):
    return x * 2
'''
TESTS = '''\
import os

import pytest

from calc import add, clamp, noisy


def test_add():
    assert add(2, 3) == 5


@pytest.mark.parametrize("word,box", [(w, [w]) for w in {"alpha", "beta", "gamma", "delta"}])
def test_words(word, box):  # ids like `alpha-box0`: their numbers follow the set's order, i.e. the hash seed
    assert add(len(word), 1) == len(box[0]) + 1


def test_clamp():
    assert clamp(5, 0, 3) == 3 and clamp(-1, 0, 3) == 0 and clamp(2, 0, 3) == 2


def test_noisy_runs():
    noisy(3)


def test_flaky():
    path = "/tmp/evolve-test-flaky-counter"
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    assert n % 2 == 0
'''


def calc_repo(tmp_path: Path, tests: str = TESTS) -> Path:
    return make_git_repo(tmp_path / "calc", {"calc.py": CALC, "tests/test_calc.py": tests})


def synthesize(repo: Path, out: Path, **cfg):
    from tasks.synth.sources import resolve
    from tasks.synth.synthesize import Synthesis, SynthConfig

    syn = Synthesis(SynthConfig(out=out, **{"n": 50, "families": ["flip_operator"], "workers": 1, **cfg}),
                    resolve([str(repo)]))
    return syn, syn.run()


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_a_suite_failing_at_the_base_is_refused_with_the_reason(tmp_path):
    repo = calc_repo(tmp_path, TESTS + "\n\ndef test_broken():\n    assert add(1, 1) == 3\n")
    syn, (rep,) = synthesize(repo, tmp_path / "s.jsonl")
    assert rep.refused and "not green at the base" in rep.refused and "test_broken" in rep.refused
    assert syn.journal.total() == 0


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_synthesis_keeps_caught_bugs_drops_flaky_tests_and_rows_grade_in_fresh_sandboxes(tmp_path):
    from tasks.grading import grade
    from tasks.registry import get_suite

    syn, (rep,) = synthesize(calc_repo(tmp_path), tmp_path / "s.jsonl")
    assert rep.refused is None and rep.error is None
    rows = get_suite(f"synth:{tmp_path / 's.jsonl'}").instances()
    # add's `+`, clamp's `<` and `>` are caught; noisy's `*` runs in a test that checks nothing
    assert sorted(r.extra["function"] for r in rows) == ["add", "clamp", "clamp"]
    rejected = [a for a in syn.journal.attempts if a.get("verdict") == "rejected"]
    assert [a["function"] for a in rejected] == ["noisy"] and rejected[0]["reason"] == "no test fails with the bug"
    by_function = {r.extra["function"]: r for r in rows}
    assert len(by_function["add"].FAIL_TO_PASS) == 5  # test_add and the four test_words
    assert "tests/test_calc.py::test_add" in by_function["clamp"].PASS_TO_PASS
    assert len([t for t in by_function["clamp"].PASS_TO_PASS if "test_words" in t]) == 4
    for row in rows:
        assert not any("test_flaky" in t for t in row.FAIL_TO_PASS + row.PASS_TO_PASS)
        assert row.extra["method"] == "procedural" and row.extra["category"] == "git-calc/flip_operator"
        assert row.FAIL_TO_PASS and row.patch.startswith("diff --git a/calc.py b/calc.py")
        assert row.extra["function"] in row.problem_statement and "diff --git" not in row.problem_statement
    suite = get_suite(f"synth:{tmp_path / 's.jsonl'}")
    suite.ensure_images(rows)
    from sandbox import SandboxConfig, start_sandbox

    with start_sandbox(SandboxConfig(), image=rows[0].image) as sb:  # the history an agent sees has no fix in it
        head = sb.exec("git rev-parse HEAD && git rev-list --all --count && git status --porcelain").output.split()
        assert head == [rows[0].base_commit, "1"]
        assert sb.exec(f"git cat-file -e {rows[0].extra['source_commit']}").exit_code != 0
        assert sb.exec("git fsck --lost-found --no-progress 2>&1 | grep -c 'dangling commit'").output.strip() == "0"
    for row in rows:
        assert grade(row, row.patch).resolved, row.instance_id
        assert not grade(row, "").resolved
    unfixed = "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n-def add(a, b):\n" \
              "+def add(a, b):  # looked at it\n     \"\"\"Sum of a and b.\"\"\"\n"
    assert not grade(rows[0], unfixed).resolved
