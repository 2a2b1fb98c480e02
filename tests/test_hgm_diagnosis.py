"""What an expansion tries to improve and what its diagnosis is shown (no Docker, no LLM)."""

from __future__ import annotations

import numpy as np

from agent.variant import DEFAULT_VARIANT
from evolve.hgm.diagnosis import choose_topic, diagnosis_messages, parse_problem, trajectory_flags
from records import Message, Step, TaskInstance, TestReport, Trajectory, TrajectoryStatus


def traj(tid: str, patch: str = "", status=TrajectoryStatus.submitted, parse_errors: int = 0) -> Trajectory:
    steps = [Step(index=i, response=Message(role="assistant", content="x"), parse_error="bad" if i < parse_errors else None,
                  observation=Message(role="user", content="obs")) for i in range(4)]
    return Trajectory(id=tid, instance_id="t", patch=patch, status=status, steps=steps)


def rows(*items):
    return [{"task_id": f"t{i}", "status": s, "trajectory_id": f"j{i}"} for i, s in enumerate(items)]


def test_a_failed_task_is_chosen_when_no_generic_problem_shows():
    trajs = {f"j{i}": traj(f"j{i}", patch="diff") for i in range(4)}
    r = rows("pass", "fail", "pass", "fail")
    picks = {choose_topic(r, trajs, np.random.default_rng(s), {"empty_patches": 1.0}).task_id for s in range(40)}
    assert picks == {"t1", "t3"}  # only failed tasks, both reachable


def test_generic_topics_follow_their_probabilities_and_thresholds():
    trajs = {"j0": traj("j0"), "j1": traj("j1", patch="d"), "j2": traj("j2", patch="d", parse_errors=3)}
    r = rows("fail", "fail", "fail")
    kinds = [choose_topic(r, trajs, np.random.default_rng(s), {"empty_patches": 0.5, "parse_errors": 0.0}).kind
             for s in range(400)]
    assert 0.4 < kinds.count("empty_patches") / 400 < 0.6 and "parse_errors" not in kinds
    never = [choose_topic(r, trajs, np.random.default_rng(s), {"empty_patches": 1.0}, min_fraction=0.5).kind
             for s in range(20)]
    assert set(never) == {"task"}  # 1 of 3 empty is under the 50% threshold
    assert trajectory_flags(traj("x", status=TrajectoryStatus.context_exceeded)) == {"empty_patches", "context_exceeded"}


def test_nothing_to_improve_and_infra_rows_ignored():
    trajs = {"j0": traj("j0", patch="d")}
    assert choose_topic(rows("pass"), trajs, np.random.default_rng(0), {}) is None
    assert choose_topic(rows("infra_error"), {}, np.random.default_rng(0), {}) is None


def test_privileged_diagnosis_is_the_only_way_hidden_tests_are_shown():
    inst = TaskInstance(instance_id="t0", problem_statement="Division is wrong", FAIL_TO_PASS=["test_div"])
    report = TestReport(instance_id="t0", fail_to_pass_failure=["tests/test_x.py::test_div"])
    topic = choose_topic(rows("fail"), {"j0": traj("j0", patch="diff --git a/x")}, np.random.default_rng(0), {})
    plain = diagnosis_messages(topic, DEFAULT_VARIANT, inst, traj("j0", patch="diff --git a/x"), report, False)
    text = plain[1].content
    assert "Division is wrong" in text and "diff --git a/x" in text and "variant.yaml" in text
    assert "test_div" not in text and "Hidden tests" not in text
    privileged = diagnosis_messages(topic, DEFAULT_VARIANT, inst, traj("j0"), report, True)[1].content
    assert "Hidden tests" in privileged and "tests/test_x.py::test_div" in privileged


def test_parse_problem():
    assert parse_problem("think\n<problem_statement>\nFix it.\n</problem_statement>") == "Fix it."
    assert parse_problem("  no tags  ") == "no tags"
