"""SE-Agent's driver on a toy world (no LLM, no Docker): the hidden-strategy world of anchors §3.9.

An instance has one hidden good strategy among four; a toy agent succeeds with probability 0.85 when its
prompt names the good one and 0.05 otherwise. When its prompt names none it falls back on its habit: the
instance's favourite strategy 70% of the time, a uniform pick otherwise (a sampled LLM mostly repeats its
approach; that lack of diversity is what SE-Agent's operators address). Its visible test agrees with the
hidden outcome 90% of the time. In a plain simulation of this world over 100 seeds, the revision operator
beats re-sampling at p < 0.01 in 91% of seeds (selection pass@1 about 0.58 vs 0.41); with a uniform
fallback instead of the habit the gain is smaller (0.59 vs 0.51) and reaches p < 0.01 in only 26% of seeds.

The fake LLM summarises a trajectory by the
strategy it used and, as the revision operator, proposes a strategy that no visibly failed attempt used —
it reads only the operator prompt (visible summaries), never the hidden strategy.

Checks: wiring (2), pool integrity with an invalid-JSON summariser (3), resume of a timestamped run after
SIGKILL (5), efficacy against independent re-sampling with a paired sign test (7), stop requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.policy.base import Generation, Policy, SamplingParams
from evolve.se_agent import operators as ops_mod
from evolve.se_agent import summarise as sum_mod
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.records import DOC_OPERATOR, DOC_SELECTION, Attempt, VisibleOutcome
from evolve.se_agent.run import run_se_agent
from evolve.se_agent.select import JUDGE_SYSTEM
from evolve.store import RunStore
from records import Message, Step, TaskInstance, ToolCall, Trajectory, TrajectoryStatus

STRATEGIES = ["bisect", "trace", "spec", "fuzz"]
TOOLS_MARKER = "TOOL INSTRUCTIONS: think, then call submit."
REPO = Path(__file__).resolve().parents[1]


def toy_instances(n: int, seed: int = 0) -> list[TaskInstance]:
    rng = random.Random(seed)
    return [TaskInstance(instance_id=f"toy-{i:03d}", problem_statement=f"Toy task {i} (marker TASK{i:03d}X): "
                         f"exactly one of the approaches {', '.join(STRATEGIES)} works.",
                         extra={"good": rng.choice(STRATEGIES)}) for i in range(n)]


def _u(*parts: Any) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


class ToyEnv:
    """The toy world as an SE-Agent environment; every trajectory is stored like a real one."""

    def __init__(self, store: RunStore, run_id: str, kill_at_iteration: int | None = None):
        self.store, self.run_id, self.kill_at = store, run_id, kill_at_iteration
        self.runs: list[tuple[str, int]] = []

    def base_prompt(self, instance: TaskInstance) -> list[Message]:
        return [Message(role="system", content=f"You are a toy agent.\n{TOOLS_MARKER}"),
                Message(role="user", content=instance.problem_statement)]

    def run(self, instance: TaskInstance, attempt: Attempt, traj: Trajectory) -> Trajectory:
        self.runs.append((instance.instance_id, attempt.iteration))
        self.store.put_trajectory(traj)  # running
        if self.kill_at is not None and attempt.iteration >= self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        system = traj.prompt[0].content
        named = re.search(r"use strategy (\w+)", system.split("## Strategy")[-1]) if "## Strategy" in system else None
        habit = STRATEGIES[int(_u("habit", instance.instance_id) * 4)]
        uniform = STRATEGIES[int(_u("pick", instance.instance_id, attempt.seed) * 4)]
        strategy = named.group(1) if named else habit if _u("h?", instance.instance_id, attempt.seed) < 0.7 else uniform
        traj.steps = traj.steps + [Step(index=len(traj.steps), response=Message(
            role="assistant", content=f"<think>I will use strategy {strategy}</think>"),
            tool_calls=[ToolCall(name="submit")],
            observation=Message(role="user", content=f"my system prompt was:\n{system}"))]
        traj.patch = (f"diff --git a/s.py b/s.py\n--- a/s.py\n+++ b/s.py\n@@ -1 +1 @@\n-x\n"
                      f"+strategy={strategy} seed={attempt.seed}\n")
        traj.status, traj.finished_at = TrajectoryStatus.submitted, 1.0
        self.store.put_trajectory(traj)
        return traj

    @staticmethod
    def _played(instance: TaskInstance, traj: Trajectory) -> tuple[bool, str, str]:
        strategy, seed = re.search(r"strategy=(\w+) seed=(\d+)", traj.patch).groups()
        p = 0.85 if strategy == instance.extra["good"] else 0.05
        return _u("win", instance.instance_id, seed, strategy) < p, strategy, seed

    def visible(self, instance: TaskInstance, traj: Trajectory) -> VisibleOutcome:
        won, strategy, seed = self._played(instance, traj)
        seen = won if _u("noise", instance.instance_id, seed) < 0.9 else not won
        return VisibleOutcome(patch_produced=True, applies=True, tests="pass" if seen else "fail",
                              tests_passed=int(seen), regressions=[] if seen else ["test_toy"],
                              final_status="submitted")

    def hidden(self, instance: TaskInstance, traj: Trajectory) -> bool:
        from records import TestReport

        won = self._played(instance, traj)[0]
        self.store.put_test_report(traj.id, TestReport(instance_id=instance.instance_id, trajectory_id=traj.id,
                                                       resolved=won, patch_applied=True))
        return won


class ToyLLM(Policy):
    """Fake operator LLM: summariser, revision operator and a judge that always fails."""

    spec = "toy-llm"

    def __init__(self, invalid_json: bool = False, seed: int = 0):
        self.invalid_json, self.seed, self.calls = invalid_json, seed, {"summary": 0, "operator": 0, "judge": 0}

    @property
    def context_length(self) -> int:
        return 100_000

    def count_tokens(self, messages: list[Message]) -> int:
        return 1

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        return [Generation(text=self.answer(c[0].content, c[-1].content)) for c in conversations]

    def answer(self, system: str, user: str) -> str:
        if system == sum_mod.SYSTEM:
            self.calls["summary"] += 1
            if self.invalid_json:
                return "{'approach': not json"
            used = re.findall(r"I will use strategy (\w+)", user)[-1]
            return json.dumps({"approach": f"strategy {used}", "files_touched": ["s.py"], "key_changes": [used],
                               "tools_used": ["submit"], "reasoning_pattern": "guess -> submit", "assumptions": []})
        if system == JUDGE_SYSTEM:
            self.calls["judge"] += 1
            return "I cannot tell."
        assert system.startswith(ops_mod.SYSTEM[:40]), system
        self.calls["operator"] += 1
        listed = re.search(r"approaches ([\w, ]+) works", user).group(1).split(", ")
        failed = set(re.findall(r"-> FAILED\napproach: strategy (\w+)", user))
        fine = re.findall(r"-> PROMISING\napproach: strategy (\w+)", user)
        options = [s for s in listed if s not in failed] or listed
        pick = fine[0] if fine else options[int(_u("op", user, self.seed) * len(options))]
        return f"Change course: use strategy {pick} from the start."


def run_toy(tmp: Path, instances, *, operators, iterations=3, pilots=1, out=None, llm=None, kill_at=None,
            workers=1, branch=False):
    cfg = SEAgentConfig(suite="toy", iterations=iterations, pilots=pilots, operators=operators, workers=workers,
                        out=str(out or tmp / "run"), judge=True, branch=branch)
    envs = []

    def make_env(store, run_id):
        envs.append(ToyEnv(store, run_id, kill_at))
        return envs[-1]

    report = run_se_agent(cfg, instances, None, llm or ToyLLM(), make_env=make_env)
    return report, envs[0]


def test_operator_text_reaches_every_instance_prompt_with_the_tool_instructions(tmp_path):
    """Check 2: after an operator iteration every instance's stored trajectory holds ITS strategy block and
    the base tool instructions (the toy agent echoes its system prompt into its trajectory)."""
    insts = toy_instances(4)
    report, _ = run_toy(tmp_path, insts, operators=["revision", "recombination", "refinement"], iterations=4,
                        pilots=2)
    with RunStore(tmp_path / "run", readonly=True) as store:
        for inst in insts:
            for it in (2, 3, 4):
                op = store.document(DOC_OPERATOR, f"{inst.instance_id}/{it:02d}")
                assert op["instance_id"] == inst.instance_id
                if op["operator"] == "revision":  # grounded in the failed attempt's compressed steps
                    assert ("step by step (compressed)\n## step 0 (assistant)\nthought: I will use strategy"
                            in op["prompt"])
                assert f"TASK{inst.instance_id[-3:]}X" in op["prompt"]
                assert all(f"TASK{o.instance_id[-3:]}X" not in op["prompt"] for o in insts if o is not inst)
                (traj,) = [t for t in store.trajectories(instance_id=inst.instance_id)
                           if t.origin == f"se-agent:{op['operator']}"]
                echoed = traj.steps[-1].observation.content
                assert op["text"] in echoed and TOOLS_MARKER in echoed
                assert traj.parent_id == op["sources"][0]
            nodes = store.tree(tree_id=inst.instance_id, kind="se-agent")
            assert len(nodes) == 1 + 2 + 3 and sum(n.status == "selected" for n in nodes) == 1
        assert store.runs()[0]["kind"] == "se-agent" and store.runs()[0]["status"] == "finished"
    assert report["candidates"] == 4 * 5 and all(k in report for k in (
        "pass@1 first pilot (hidden tests)", "pass@1 selection (hidden tests)",
        "oracle pass@k, any candidate (hidden tests; not a pass@1 result)"))
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [p["instance_id"] for p in preds] == [i.instance_id for i in insts] and all(p["model_patch"] for p in preds)


def test_branch_mode_continues_the_source_trajectory(tmp_path):
    """Trajectory-level operators: the evolved attempt holds its source's steps up to the branch point."""
    insts = toy_instances(2)
    run_toy(tmp_path, insts, operators=["revision", "recombination"], iterations=3, pilots=2, branch=True)
    with RunStore(tmp_path / "run", readonly=True) as store:
        for inst in insts:
            evolved = [t for t in store.trajectories(instance_id=inst.instance_id) if t.origin != "se-agent:pilot"]
            assert len(evolved) == 2
            for t in evolved:
                parent = store.get_trajectory(t.parent_id)
                assert t.branch_step == len(parent.steps) and len(t.steps) == t.branch_step + 1
                assert [s.response.content for s in t.steps[:-1]] == [s.response.content for s in parent.steps]
                node = next(n for n in store.tree(tree_id=inst.instance_id) if n.trajectory_id == t.id)
                assert node.parent_id == f"se:{parent.id}" and node.info["branch_step"] == t.branch_step


def test_pool_has_one_entry_per_attempt_with_an_invalid_json_summariser(tmp_path):
    """Check 3: K iterations -> K entries per instance (pilots=1), list fields lists, though every summary
    reply is invalid JSON."""
    from evolve.se_agent.loop import pool

    insts = toy_instances(3)
    llm = ToyLLM(invalid_json=True)
    run_toy(tmp_path, insts, operators=["revision"], iterations=4, llm=llm)
    with RunStore(tmp_path / "run", readonly=True) as store:
        for inst in insts:
            entries = pool(store, "run", inst.instance_id)
            assert [e.iteration for e in entries] == [1, 2, 3, 4]
            assert all(e.summariser == "fallback" and isinstance(e.key_changes, list) and
                       isinstance(e.files_touched, list) and e.files_touched == ["s.py"] for e in entries)
    assert llm.calls["summary"] == 12


KILLED = """
import sys
from pathlib import Path
from tests.test_se_agent_toy import run_toy, toy_instances
run_toy(Path(sys.argv[1]), toy_instances(3), operators=["revision"], iterations=3, pilots=2,
        out=sys.argv[2], kill_at=int(sys.argv[3]))
"""


def test_sigkill_in_iteration_3_resumes_in_the_same_timestamped_directory(tmp_path):
    """Check 5: a timestamped --out, SIGKILL during iteration 3; the same command resumes in the same
    directory at iteration 3 (pilots and iteration 2 are not redone; the killed attempt is closed and redone)."""
    pattern = str(tmp_path / "se-{timestamp}")
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path), pattern, "3"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (run_dir,) = tmp_path.glob("se-*")
    with RunStore(run_dir, readonly=True) as store:
        before = {t.id: t.status for t in store.trajectories()}
    assert sum(s == TrajectoryStatus.running for s in before.values()) == 1
    report, env = run_toy(tmp_path, toy_instances(3), operators=["revision"], iterations=3, pilots=2, out=pattern)
    assert list(tmp_path.glob("se-*")) == [run_dir] and report["out"] == str(run_dir)
    assert sorted(env.runs) == [(f"toy-{i:03d}", 3) for i in range(3)]  # only iteration 3 ran again
    with RunStore(run_dir, readonly=True) as store:
        trajs = list(store.trajectories())
        assert sum(t.error == "interrupted (the run was stopped)" for t in trajs) == 1
        assert len(trajs) == len(before) + 3  # the interrupted one stays stored; 3 new iteration-3 attempts
        assert len(store.documents(DOC_SELECTION)) == 3
    again, env2 = run_toy(tmp_path, toy_instances(3), operators=["revision"], iterations=3, pilots=2, out=str(run_dir))
    assert env2.runs == [] and again[("pass@1 selection (hidden tests)")] == report["pass@1 selection (hidden tests)"]


def test_stop_request_stops_and_the_run_resumes(tmp_path):
    insts = toy_instances(2)

    class StopLLM(ToyLLM):
        def answer(self, system, user):
            if system != sum_mod.SYSTEM:
                store_ref[0].request_stop(store_ref[0].runs()[0]["id"])
            return super().answer(system, user)

    store_ref = []
    cfg = SEAgentConfig(suite="toy", iterations=3, pilots=1, operators=["revision"], workers=1,
                        out=str(tmp_path / "run"))

    def make_env(store, run_id):
        store_ref[:] = [store]
        return ToyEnv(store, run_id)

    first = run_se_agent(cfg, insts, None, StopLLM(), make_env=make_env)
    assert first["stopped"]
    with RunStore(tmp_path / "run", readonly=True) as store:
        assert store.runs()[0]["status"] == "stopped" and not store.documents(DOC_SELECTION)
        done = len(list(store.trajectories()))
    assert 2 <= done < 2 * 3
    report, env = run_toy(tmp_path, insts, operators=["revision"], iterations=3)
    assert report["instances"] == 2 and len(env.runs) == 2 * 3 - done


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test over the discordant pairs."""
    n, k = wins + losses, max(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)


@pytest.mark.slow
def test_revision_beats_independent_resampling_on_the_hidden_strategy_world(tmp_path):
    """Check 7: 200 tasks, 3 iterations, same pilots; the revision operator (reading only visible summaries)
    beats independent re-sampling on selection pass@1, paired sign test p < 0.01."""
    insts = toy_instances(200, seed=7)
    se, _ = run_toy(tmp_path, insts, operators=["revision"], iterations=3, out=tmp_path / "se")
    base, _ = run_toy(tmp_path, insts, operators=[], iterations=3, out=tmp_path / "resample")
    a = {r["instance_id"]: r["selected_resolved"] for r in se["per_instance"]}
    b = {r["instance_id"]: r["selected_resolved"] for r in base["per_instance"]}
    first_a = [r["first_pilot_resolved"] for r in se["per_instance"]]
    assert first_a == [r["first_pilot_resolved"] for r in base["per_instance"]]  # same pilots: a paired test
    wins = sum(a[i] and not b[i] for i in a)
    losses = sum(b[i] and not a[i] for i in a)
    p = sign_test_p(wins, losses)
    print(f"selection pass@1: revision {sum(a.values()) / 200:.3f} vs re-sampling {sum(b.values()) / 200:.3f}; "
          f"first pilot {sum(first_a) / 200:.3f}; discordant {wins}:{losses}, sign test p={p:.2g}")
    assert wins > losses and p < 0.01
    assert se["pass@1 selection (hidden tests)"] > se["pass@1 first pilot (hidden tests)"]


def test_resume_with_other_settings_is_refused_before_anything_is_stored(tmp_path):
    from evolve.errors import ConfigError

    insts = toy_instances(2)
    run_toy(tmp_path, insts, operators=["revision"], iterations=2)
    with RunStore(tmp_path / "run", readonly=True) as store:
        before = len(list(store.trajectories()))
    with pytest.raises(ConfigError, match="was run with another `operators` setting"):
        run_toy(tmp_path, insts, operators=["refinement"], iterations=3)
    report, env = run_toy(tmp_path, insts, operators=["revision"], iterations=3)  # more iterations: allowed
    assert len(env.runs) == 2
    with RunStore(tmp_path / "run", readonly=True) as store:
        assert len(list(store.trajectories())) == before + 2
        for inst in insts:  # the selection was redone over the grown pool
            assert len(store.document(DOC_SELECTION, inst.instance_id)["candidates"]) == 3
            assert sum(n.status == "selected" for n in store.tree(tree_id=inst.instance_id)) == 1
    assert report["candidates"] == 6


def test_infra_errors_are_retried_not_pooled(tmp_path):
    from evolve.se_agent.loop import pool

    class FlakyEnv(ToyEnv):
        failures = 2

        def run(self, instance, attempt, traj):
            if attempt.iteration == 2 and instance.instance_id == "toy-000" and FlakyEnv.failures:
                FlakyEnv.failures -= 1
                traj.status, traj.error, traj.finished_at = TrajectoryStatus.infra_error, "sandbox died", 1.0
                self.store.put_trajectory(traj)
                return traj
            return super().run(instance, attempt, traj)

    cfg = SEAgentConfig(suite="toy", iterations=2, pilots=1, operators=["revision"], workers=1,
                        out=str(tmp_path / "run"))
    run_se_agent(cfg, toy_instances(2), None, ToyLLM(), make_env=lambda store, run_id: FlakyEnv(store, run_id))
    with RunStore(tmp_path / "run", readonly=True) as store:
        entries = pool(store, "run", "toy-000")
        assert [e.iteration for e in entries] == [1, 2] and entries[1].outcome.final_status == "submitted"
        assert sum(t.status == TrajectoryStatus.infra_error for t in store.trajectories()) == 2
