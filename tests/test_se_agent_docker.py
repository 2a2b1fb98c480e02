"""SE-Agent on a bundled instance in real Docker sandboxes with scripted policies: the revision operator's
text reaches the next iteration's prompt (as stored), the selection picks from visible signals, and the
report carries the three hidden-test numbers, separately labelled. Also the CLI's error path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.replay import ScriptedPolicy
from evolve.se_agent import summarise as sum_mod
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.records import DOC_OPERATOR, DOC_SELECTION, PoolEntry
from evolve.se_agent.report import FIRST, ORACLE, SELECTED
from evolve.se_agent.run import run_se_agent
from evolve.store import RunStore
from records import Message
from tasks.registry import get_suite

REPO = Path(__file__).resolve().parents[1]
MARK = "STRATEGY-7Q: fix TTLCache.__setitem__ so expired entries are dropped before a live one is evicted."
REPRO = """import sys
sys.path.insert(0, "/testbed")
from cachebox import TTLCache
class Clock:
    now = 0.0
    def __call__(self):
        return self.now
clock = Clock()
cache = TTLCache(maxsize=2, ttl=10, timer=clock)
cache["a"] = 1
clock.now = 5
cache["b"] = 2
cache["a"]
clock.now = 12
cache["c"] = 3
assert cache.get("b") == 2, "live entry b was evicted"
"""


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


class ScriptedAgent(ScriptedPolicy):
    """The agent. Every attempt but pilot 0 first writes and runs a reproduction script (exploration, no
    edit). With a strategy block in its system prompt it then applies the gold fix and reruns the script;
    pilot 1 (a planning prompt) breaks the module instead; pilot 0 submits nothing."""

    def __init__(self, inst):
        super().__init__([])
        explore = [call("create", path="/tmp/repro_issue.py", content=REPRO),
                   call("bash", command="python3 /tmp/repro_issue.py; echo explored")]
        self.fix = explore + [call("create", path="/tmp/fix.diff", content=inst.patch),
                              call("bash", command="git apply /tmp/fix.diff && python3 /tmp/repro_issue.py && "
                                                   "echo REPRO-OK"), call("submit")]
        self.broken = explore + [call("bash", command="echo \"raise RuntimeError('oops')\" >> cachebox/ttl.py"),
                                 call("submit")]

    def responses_for(self, conversation: list[Message]) -> list[Message]:
        system, user = conversation[0].content, conversation[1].content
        script = self.fix if MARK in system else self.broken if "Plan:" in user else [call("submit")]
        return [Message(role="assistant", content=r) for r in script]


class OperatorLLM(ScriptedPolicy):
    """Summariser (schema-conforming JSON), revision operator (the marked strategy), judge (never needed)."""

    def __init__(self):
        super().__init__([])
        self.operator_prompts: list[str] = []

    def responses_for(self, conversation: list[Message]) -> list[Message]:
        if conversation[0].content == sum_mod.SYSTEM:
            text = json.dumps({"approach": "scripted", "files_touched": [], "key_changes": [], "tools_used": [],
                               "reasoning_pattern": "scripted", "assumptions": []})
        else:
            self.operator_prompts.append(conversation[-1].content)
            text = MARK
        return [Message(role="assistant", content=text)]


@pytest.fixture(scope="module")
def instance(docker_ready):
    suite = get_suite("bundled")
    suite.build_images()
    return next(i for i in suite.instances() if i.instance_id == "bundled__cachebox-1")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("branch,executor", [(False, "local"), (True, "local"), (True, "ray")],
                         ids=["fresh", "branch", "branch-on-ray"])
def test_operator_text_reaches_the_next_prompt_and_visible_selection_wins(instance, tmp_path, branch, executor):
    """Fresh: the evolved attempt is a new episode. Branch: it continues the failed pilot from the step
    before its first edit (its reproduction script replayed in the new sandbox), then fixes. On Ray, the
    episodes (the pilots, and the branch whose kept steps the worker replays first; the scripted policy
    served by the driver), the visible checks and the hidden grading run as Ray tasks, with the same outcome."""
    from evolve.run.executor import ExecutorConfig

    if executor == "ray":
        pytest.importorskip("ray", reason="Ray is the optional extra `evolve[ray]`")
    out = tmp_path / "se"
    cfg = SEAgentConfig(suite="bundled", instances=[instance.instance_id], iterations=2, pilots=2,
                        operators=["revision"], workers=2, out=str(out), branch=branch,
                        executor=ExecutorConfig(backend=executor, num_cpus=2 if executor == "ray" else None))
    op = OperatorLLM()
    report = run_se_agent(cfg, [instance], ScriptedAgent(instance), op)
    assert (report[FIRST], report[SELECTED], report[ORACLE]) == (0.0, 1.0, 1.0)
    assert report["candidates"] == 3 and report["graded"]
    with RunStore(out, readonly=True) as store:
        on_ray = [e for e in store.events() if e["kind"] == "ray_episode"]
        assert len(on_ray) == (3 if executor == "ray" else 0)  # 2 pilots and the (branch) revision, as Ray tasks
        tasks = sorted(e["job"] for e in store.events() if e["kind"] == "ray_task")
        # on Ray also the visible baseline, each candidate's visible checks and its hidden grading
        assert tasks == (["se-agent:baseline"] + ["se-agent:grade"] * 3 + ["se-agent:visible"] * 3
                         if executor == "ray" else [])
        opdoc = store.document(DOC_OPERATOR, f"{instance.instance_id}/02")
        assert opdoc["operator"] == "revision" and opdoc["text"] == MARK and not opdoc["fallback"]
        sent = op.operator_prompts[0]
        assert "TTLCache evicts live entries" in sent and "FOCUS" in sent and "-> FAILED" in sent
        entries = {e["trajectory_id"]: PoolEntry.model_validate(e) for _, e in store.documents("se-agent:summary")}
        trajs = {t.id: t for t in store.trajectories()}
        (evolved,) = [t for t in trajs.values() if t.origin == "se-agent:revision"]
        assert MARK in evolved.prompt[0].content and "Tools:" in evolved.prompt[0].content  # added, not replaced
        assert evolved.parent_id == opdoc["sources"][0]
        parent = trajs[evolved.parent_id]
        assert parent.origin == "se-agent:pilot" and "Plan:" in parent.prompt[1].content  # the failed pilot 1
        assert "REPRO-OK" in evolved.steps[3].observation.content  # the script exists: written or replayed
        if branch:
            assert evolved.branch_step == 2 and len(evolved.steps) == 5
            assert [s.response.content for s in evolved.steps[:2]] == [s.response.content for s in parent.steps[:2]]
        else:
            assert evolved.branch_step is None and evolved.steps[0].index == 0
        o = entries[evolved.id].outcome
        assert (o.applies, o.tests, o.repro, o.regressions) == (True, "pass", "pass", [])
        broken = next(e for e in entries.values() if e.origin == "se-agent:pilot" and e.slot == 1)
        assert broken.outcome.tests == "fail" and broken.outcome.regressions
        assert not next(e for e in entries.values() if e.slot == 0 and e.iteration == 1).outcome.patch_produced
        sel = store.document(DOC_SELECTION, instance.instance_id)
        assert sel["method"] == "visible" and sel["selected"] == evolved.id
        reports = {tid: store.test_report(tid) for tid in trajs}
        assert reports[evolved.id].resolved and sum(bool(r and r.resolved) for r in reports.values()) == 1
        nodes = store.tree(tree_id=instance.instance_id, kind="se-agent")
        assert len(nodes) == 4 and [n.trajectory_id for n in nodes if n.status == "selected"] == [evolved.id]
    pred = json.loads((out / "predictions.jsonl").read_text())
    assert pred["model_patch"] == trajs[evolved.id].patch


def test_cli_rejects_bad_operators_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "se-agent", "bundled", "--operators", "revision,magic",
                        "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --operators: unknown operator 'magic'")
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()
