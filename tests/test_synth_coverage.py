"""What the baseline's coverage decides: a bug is tried only where the tests ran its lines, and runs (and is
graded) with only the test files that ran its function or class. Unit tests on recorded coverage, and a
synthesis in Docker on a repository with two test files and a branch no test reaches."""

from __future__ import annotations

import json

import pytest

from tasks.synth.coverage import Coverage
from tasks.synth.families import candidates
from tests.conftest import make_git_repo

SRC = b'''\
def f(x):
    if x > 100:
        return -1
    return x + 1


class C:
    def m(self):
        return 2
'''


def test_a_change_to_lines_that_never_ran_is_not_tried():
    cov = Coverage(calls={"tests/test_a.py": {("m.py", 1)}}, lines={("m.py", n) for n in (1, 2, 4)})
    muts = [m for m in candidates("m.py", SRC, ["change_constant", "flip_operator"])
            if m.entity.name == "f"]
    by_line = {SRC.count(b"\n", 0, m.start) + 1: cov.ran(m, SRC) for m in muts}
    assert by_line == {2: True, 3: False, 4: True}  # `100` and `>` ran; `-1` never did; `+ 1` ran


def test_test_files_are_those_that_ran_the_function_or_a_method_of_the_class():
    cov = Coverage(calls={"tests/test_a.py": {("m.py", 1)}, "tests/test_b.py": {("m.py", 8), ("m.py", 1)},
                          "tests/test_c.py": {("m.py", 8)}})
    ents = {m.entity.name: m.entity for m in candidates("m.py", SRC)}
    assert cov.test_files(ents["f"]) == ["tests/test_a.py", "tests/test_b.py"]
    assert cov.test_files(ents["C.m"]) == ["tests/test_b.py", "tests/test_c.py"]
    assert cov.test_files(ents["C"]) == ["tests/test_b.py", "tests/test_c.py"]
    cov.calls[""] = {("m.py", 8)}  # a session fixture or a conftest called it: the whole suite
    assert cov.test_files(ents["C.m"]) is None and cov.test_files(ents["f"]) is not None
    cov.selectable = False
    assert cov.test_files(ents["f"]) is None


MOD = '''\
def double(x):
    """Twice x."""
    return x * 2


def shout(s):
    """s in capitals, with an exclamation mark."""
    if not s:
        return ""
    if s == "never-used-in-tests":
        return "?" * 3
    return s.upper() + "!"
'''
TEST_DOUBLE = '''\
from mod import double


def test_double():
    assert double(4) == 8


def test_double_zero():
    assert double(0) == 0
'''
TEST_SHOUT = '''\
from mod import shout


def test_shout():
    assert shout("hi") == "HI!"


def test_empty():
    assert shout("") == ""
'''


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_tasks_run_only_the_test_files_of_their_function_and_unreached_lines_get_no_bug(tmp_path):
    from tasks.grading import grade
    from tasks.registry import get_suite
    from tests.test_synth_validate import synthesize

    repo = make_git_repo(tmp_path / "mod", {"mod.py": MOD, "tests/test_double.py": TEST_DOUBLE,
                                            "tests/test_shout.py": TEST_SHOUT})
    out = tmp_path / "s.jsonl"
    syn, (rep,) = synthesize(repo, out, families=["flip_operator", "change_constant", "remove_conditional"])
    assert rep.refused is None and rep.error is None
    rows = get_suite(f"synth:{out}").instances()
    assert {r.extra["function"] for r in rows} == {"double", "shout"}
    for row in rows:
        mine = f"tests/test_{'double' if row.extra['function'] == 'double' else 'shout'}.py"
        assert row.extra["tests"] == [mine]
        assert f"--color=no {mine}\n" in row.eval_script  # the other test file never runs for this task
        assert {t.split("::")[0] for t in row.FAIL_TO_PASS + row.PASS_TO_PASS} == {mine}
        assert "The first failure:" in row.problem_statement and "assert" in row.problem_statement
    # nothing was tried on the line no test reaches (`return "?" * 3`)
    unreached = MOD.encode().index(b'return "?"')
    never = {m.key for m in candidates("mod.py", MOD.encode()) if m.start >= unreached
             and m.start < MOD.encode().index(b"\n", unreached)}
    assert never and not never & {a["key"] for a in syn.journal.attempts if a.get("kind") == "bug"}
    suite = get_suite(f"synth:{out}")
    suite.ensure_images(rows[:2])
    for row in rows[:2]:
        assert grade(row, row.patch).resolved
    assert json.loads(out.read_text().splitlines()[0])["extra"]["tests"]
