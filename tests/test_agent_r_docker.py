"""Agent-R on the real path: the agent in Docker sandboxes on a bundled instance, a scripted sampling policy
(it also answers as the verifier), hidden-test rewards. Every kept splice replays in a fresh sandbox to its good
path's patch and reward, the revision turn is a real `undo`, and the exported data trains through the
`evolve train sft` command with exactly the masked-in tokens supervised."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from agent.policy.base import Generation, Policy, SamplingParams  # noqa: E402
from agent.variant import AgentVariant  # noqa: E402
from evolve.agent_r import verifier  # noqa: E402
from evolve.agent_r.build import build_instance  # noqa: E402
from evolve.agent_r.config import AgentRConfig  # noqa: E402
from evolve.agent_r.export import export_sft_data, masked_in_tokens  # noqa: E402
from evolve.agent_r.swe import SweWorld  # noqa: E402
from evolve.agent_r.verifier import policy_ask  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from records import Message  # noqa: E402
from sandbox import SandboxConfig  # noqa: E402
from tasks.registry import get_suite  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INSTANCE = "bundled__unitconv-1"


def call(name: str, **parameters: Any) -> str:
    return f"<think>{name}</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': parameters})}\n</tool_call>"


BAD = call("bash", command="echo \"raise RuntimeError('broken')\" >> unitconv/parser.py")
GOOD = call("str_replace", path="unitconv/parser.py", old_str="unit = unit / self._term()",
            new_str="unit = unit / self._power()")
SUBMIT = call("submit")
MENU = {0: [BAD, GOOD], 1: [SUBMIT, BAD, GOOD], 2: [SUBMIT]}


class MenuPolicy(Policy):
    """Samples the i-th response of a batch from a fixed menu per turn; as verifier, calls a step Bad exactly
    when it breaks the module."""

    spec = "menu"
    context_length = 100_000

    def __init__(self) -> None:
        self.verifier_calls = 0

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        out = []
        for i, conv in enumerate(conversations):
            if conv[0].content == verifier.SYSTEM:
                self.verifier_calls += 1
                assert params.temperature == 0.0
                current = conv[-1].content.split("Current step", 1)[1]
                out.append(Generation(text="Checking the step.\nJudgment: "
                                      + ("Bad" if "RuntimeError" in current else "Good")))
                continue
            turn = sum(m.role == "assistant" for m in conv)
            menu = MENU[min(turn, 2)]
            out.append(Generation(text=menu[i % len(menu)], token_ids=None))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


@pytest.fixture(scope="module")
def built(tmp_path_factory, docker_ready):
    base = tmp_path_factory.mktemp("agent-r")
    inst = get_suite("bundled").select([INSTANCE])[0]
    policy = MenuPolicy()
    cfg = AgentRConfig(rollouts=2, n_gen=2, max_depth=3, max_pairs=4)
    store = RunStore(base / "run")
    world = SweWorld(inst, policy, AgentVariant.load(), SandboxConfig(run_id="agent-r-test"), store, "run",
                     temperature=1.0, workers=2)
    res = build_instance(world, cfg, policy_ask(policy), instance_id=inst.instance_id, store=store, run_id="run",
                         path_trajectory=world.path_trajectory)
    yield {"base": base, "inst": inst, "res": res, "store": store, "world": world, "policy": policy}
    store.close()


def test_splices_replay_in_fresh_sandboxes(built):
    res, store, world = built["res"], built["store"], built["world"]
    s = res.summary()
    print("agent-r on", INSTANCE, json.dumps({k: v for k, v in s.items() if not k.endswith("_ids")}))
    assert res.root.value >= 1 and res.pairs >= 1 and res.splices
    assert world.prefix_mismatches == 0
    assert built["policy"].verifier_calls == sum(res.verdicts.values())
    gold = [n for n in res.root.walk() if n.leaf and n.reward == 1.0]
    assert gold
    for traj in res.splices:
        k = traj.branch_step
        assert [s.response.train for s in traj.steps] == [False] * k + [True] * (len(traj.steps) - k)
        assert "RuntimeError" in traj.steps[k - 1].response.content  # the flagged step ends the bad prefix
        assert '"undo"' in traj.steps[k].response.content
        assert traj.steps[k].observation.content.count("restored the files") == 1
        assert traj.patch == gold[0].state and "RuntimeError" not in traj.patch
        stored = store.get_trajectory(traj.id)
        assert stored.origin == "agent-r:splice" and stored.parent_id is not None
        assert store.rewards(traj.id)["swe"].total == 1.0
    docs = store.documents("agent-r:splice")
    assert sum(d["kept"] for _, d in docs) == len(res.splices)
    assert all(d["replayed_reward"] == d["expected_reward"] for _, d in docs if d["kept"])
    assert store.documents("agent-r:pair") and store.documents("agent-r:verdict")
    nodes = store.tree(tree_id=f"run/{INSTANCE}", kind="mcts")
    assert len(nodes) == len(res.root.walk())
    root = next(n for n in nodes if n.parent_id is None)
    assert root.trials == res.root.visits and all(n.trajectory_id for n in nodes if n.parent_id)


def test_exported_data_trains_through_the_cli(built, tmp_path):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from evolve.cli import app

    res = built["res"]
    data = export_sft_data(res.splices + res.good, tmp_path / "data", "agent-r-data")
    model = build_tiny_model(tmp_path.parent / "tiny-64")
    tok = AutoTokenizer.from_pretrained(model)
    want = masked_in_tokens(res.splices + res.good, tok)
    out = tmp_path / "sft"
    r = CliRunner().invoke(app, ["train", "sft", str(data), "--policy", f"hf:{model}", "--full", "--max-steps", "1",
                                 "--device", "cpu", "--out", str(out), "--config", str(_cfg(tmp_path, len(res.splices) + len(res.good)))])
    assert r.exit_code == 0, r.output
    with RunStore(out, readonly=True) as store:
        version = store.policy_versions()[-1]
        steps = store.train_steps(version.id)
    assert version.kind == "sft" and steps[0].metrics["trained_tokens"] == want


def _cfg(tmp_path: Path, n: int) -> Path:
    p = tmp_path / "sft.yaml"
    p.write_text(f"batch_size: {n}\nmicro_batch_size: {n}\nmax_len: 8192\n")
    return p
