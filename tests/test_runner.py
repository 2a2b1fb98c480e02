"""`evolve run` on a bundled instance: real sandboxes, real grading, resume after SIGKILL, batching."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agent.batching import BatchingPolicy
from agent.policy.base import SamplingParams
from agent.replay import ScriptedPolicy
from evolve.run.runner import RunConfig, run_swe
from evolve.store import RunStore
from records import Message
from tasks.registry import get_suite

pytestmark = pytest.mark.usefixtures("docker_ready")


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


@pytest.fixture(scope="module")
def instance():
    suite = get_suite("bundled")
    inst = suite.instances()[0]
    suite.build_images()
    return inst


def gold_script(inst) -> list[str]:
    return [call("create", path="/tmp/fix.diff", content=inst.patch),
            call("bash", command="git apply /tmp/fix.diff && git status --short"),
            call("submit")]


def test_run_resolves_with_the_gold_actions_and_resumes(instance, tmp_path: Path):
    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(tmp_path / "run"), workers=1)
    report = run_swe(cfg, [instance], ScriptedPolicy(gold_script(instance)))
    assert report["resolved"] == 1 and report["per_instance"][0]["status"] == "submitted"
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert preds[0]["instance_id"] == instance.instance_id and preds[0]["model_patch"].strip()
    with RunStore(tmp_path / "run", readonly=True) as store:
        (tid,) = store.trajectory_ids()
        assert store.rewards(tid)["swe"].total == 1.0
        assert len(store.get_trajectory(tid).steps) == 3
    again = run_swe(cfg, [instance], ScriptedPolicy([]))  # resume: nothing left to do
    assert again["resolved"] == 1
    with RunStore(tmp_path / "run", readonly=True) as store:
        assert len(store.trajectory_ids()) == 1


def test_empty_patch_is_not_resolved(instance, tmp_path: Path):
    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(tmp_path / "run"), workers=1)
    report = run_swe(cfg, [instance], ScriptedPolicy([call("submit")]))
    assert report["resolved"] == 0


KILLED_RUN = """
import json, sys
from agent.replay import ScriptedPolicy
from evolve.run.runner import RunConfig, run_swe
from tasks.registry import get_suite
inst = get_suite("bundled").instances()[0]
cfg = RunConfig(suite="bundled", instances=[inst.instance_id], out=sys.argv[1], workers=1)
step = '<think>x</think>\\n<tool_call>\\n' + json.dumps({"name": "bash", "parameters": {"command": "sleep 600"}}) + '\\n</tool_call>'
run_swe(cfg, [inst], ScriptedPolicy(['<think>x</think>\\n<tool_call>\\n{"name": "bash", "parameters": {"command": "ls"}}\\n</tool_call>', step]))
"""


def test_sigkill_then_resume(instance, tmp_path: Path):
    out = tmp_path / f"killed-{uuid.uuid4().hex[:8]}"  # its own run id: other runs' sandboxes are not ours
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)])
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first step is stored, then kill mid-episode
        try:
            with RunStore(out, readonly=True) as store:
                ids = store.trajectory_ids()
                if ids and store.get_trajectory(ids[0]).steps:
                    break
        except Exception:
            pass
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from sandbox.docker import docker_client

    def containers() -> list:
        return docker_client().containers.list(all=True, filters={"label": f"evolve.run={out.resolve().name}"})

    orphans = {c.id for c in containers()}
    assert orphans  # the killed run's sandbox, still sleeping
    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(out), workers=1)
    report = run_swe(cfg, [instance], ScriptedPolicy(gold_script(instance)))
    assert report["resolved"] == 1
    assert not orphans & {c.id for c in containers()}  # the rerun removed what the killed run left
    with RunStore(out, readonly=True) as store:
        first, second = (store.get_trajectory(t) for t in store.trajectory_ids())
        assert first.status.value == "error" and "interrupted" in first.error and len(first.steps) == 1
        assert second.status.value == "submitted"


def test_batching_policy_batches_concurrent_calls():
    inner = ScriptedPolicy(["a"])
    batching = BatchingPolicy(inner, max_batch=4, max_wait=2.0)
    batching.active = 4
    results = []

    def ask(i: int) -> None:
        conv = [Message(role="user", content=str(i))]
        results.append(batching.generate([conv], SamplingParams())[0].text)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["a"] * 4 and batching.calls == 1


def test_judge_and_weighted_rewards_are_stored_with_their_parts(instance, tmp_path: Path):
    from rewards.combine import RewardWeights

    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(tmp_path / "run"), workers=1,
                    judge="replay", rewards=RewardWeights(weights={"swe": 1.0, "judge": 0.5}))
    judge = ScriptedPolicy(["The patch fixes the parser.\nSCORE: 8/10"] * 3)
    run_swe(cfg, [instance], ScriptedPolicy(gold_script(instance)), judge_policy=judge)
    with RunStore(tmp_path / "run", readonly=True) as store:
        (tid,) = store.trajectory_ids()
        rewards = store.rewards(tid)
        assert rewards["judge"].total == pytest.approx(0.8)
        combined = rewards["combined"]
        assert combined.total == pytest.approx(1.0 + 0.5 * 0.8)
        assert combined.parts["swe"] == 1.0 and combined.parts["judge"] == pytest.approx(0.4)
        assert combined.parts["swe.resolved"] == 1.0
        assert len(store.cache()) == 1  # the judge's reply, by content hash, survives a resume


def test_every_attempt_of_a_multi_attempt_variant_is_a_stored_trajectory(instance, tmp_path: Path):
    """`attempts.k: 2` without stopping on success: the resolving first attempt and the empty second are both
    stored with their steps (the second would otherwise leave steps without a trajectory); the first is graded."""
    import shutil

    import yaml

    from agent.variant import DEFAULT_VARIANT

    variant = tmp_path / "variant"
    shutil.copytree(DEFAULT_VARIANT, variant)
    data = yaml.safe_load((variant / "variant.yaml").read_text())
    data["attempts"] = {"k": 2, "stop_on_success": False}
    (variant / "variant.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    class TwoAttempts(ScriptedPolicy):
        def __init__(self):
            super().__init__([])
            self.episodes = 0

        def generate(self, conversations, params, tools=None):
            self.episodes += sum(not any(m.role == "assistant" for m in c) for c in conversations)
            return super().generate(conversations, params, tools)

        def responses_for(self, conversation):
            if self.episodes <= 1:
                return [Message(role="assistant", content=r) for r in gold_script(instance)]
            return [Message(role="assistant", content=call("bash", command="ls"))]

    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(tmp_path / "run"), workers=1,
                    variant=str(variant))
    report = run_swe(cfg, [instance], TwoAttempts())
    assert report["resolved"] == 1, json.dumps(report["per_instance"])
    with RunStore(tmp_path / "run", readonly=True) as store:
        rows = store.trajectory_summaries()
        assert len(rows) == 2 and all(r["steps"] for r in rows)
        graded = [r for r in rows if r["resolved"] is not None]
        assert len(graded) == 1 and graded[0]["id"] == rows[0]["id"] and graded[0]["resolved"]
        assert rows[1]["parent_id"] == rows[0]["id"] and rows[1]["steps"] == 2


def test_attempts_give_k_graded_trajectories_per_instance_and_a_resume_runs_only_the_missing(instance, tmp_path):
    """`evolve run --attempts K`: K episodes of the instance, each its own graded, rewarded trajectory (GRPO's
    group); asked for more later, the run adds only the attempts it lacks."""
    cfg = RunConfig(suite="bundled", instances=[instance.instance_id], out=str(tmp_path / "run"), workers=1,
                    attempts=2, temperature=0.7)
    report = run_swe(cfg, [instance], ScriptedPolicy(gold_script(instance)))
    assert report["resolved"] == 1
    with RunStore(tmp_path / "run", readonly=True) as store:
        rows = store.trajectory_summaries()
        assert [r["resolved"] for r in rows] == [True, True] and all(r["rewards"]["swe"].total == 1.0 for r in rows)
        assert store.instance_status(rows[0]["run_id"])[instance.instance_id] == "done"
    run_swe(cfg.model_copy(update={"attempts": 3}), [instance], ScriptedPolicy([call("submit")]))
    with RunStore(tmp_path / "run", readonly=True) as store:
        assert [r["resolved"] for r in store.trajectory_summaries()] == [True, True, False]  # one more, not three
