"""`replay:FILE` and `evolve trajectories`: a stored run replays to the same outcome through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.policy import PolicyError, load_policy
from agent.policy.base import SamplingParams
from agent.replay import ReplayPolicy
from evolve.run.runner import RunConfig, run_swe
from evolve.store import RunStore
from records import Message, Step, Trajectory
from tests.test_cli_run import evolve
from tests.test_runner import gold_script, instance  # noqa: F401  (the module-scoped fixture)
from agent.replay import ScriptedPolicy

PARAMS = SamplingParams(max_tokens=8)


def traj(instance_id: str, prompt: str, *responses: str, **response_fields) -> Trajectory:
    return Trajectory(instance_id=instance_id, prompt=[Message(role="system", content="sys"),
                                                       Message(role="user", content=prompt)],
                      steps=[Step(index=i, response=Message(role="assistant", content=r, **response_fields))
                             for i, r in enumerate(responses)])


def conv(prompt: str, assistant_turns: int = 0) -> list[Message]:
    msgs = [Message(role="system", content="sys"), Message(role="user", content=prompt)]
    for _ in range(assistant_turns):
        msgs += [Message(role="assistant", content="x"), Message(role="tool", content="y")]
    return msgs


def test_each_conversation_gets_the_trajectory_recorded_for_its_prompt():
    """Matching is by prompt, turn by turn, then a submit once the recording runs out."""
    policy = ReplayPolicy([traj("a", "fix A", "a0", "a1"), traj("b", "fix B", "b0")])
    out = policy.generate([conv("fix B"), conv("fix A", 1), conv("fix A", 2)], PARAMS)
    assert [g.text for g in out[:2]] == ["b0", "a1"]
    assert '"submit"' in out[2].text
    with pytest.raises(PolicyError, match="no trajectory .* was recorded for this prompt"):
        policy.generate([conv("fix C")], PARAMS)


def test_one_trajectory_replays_on_any_prompt_with_its_tokens():
    """A single trajectory answers any prompt (a new variant) and gives back its recorded tokens and log-probs."""
    policy = ReplayPolicy([traj("a", "old prompt", "a0", token_ids=[5, 6], logprobs=[-0.5, -0.25])])
    (g,) = policy.generate([conv("a new variant's prompt")], PARAMS)
    assert (g.text, g.token_ids, g.logprobs, g.completion_tokens) == ("a0", [5, 6], [-0.5, -0.25], 2)


def test_trajectory_files_load_and_bad_ones_say_what_is_wrong(tmp_path: Path):
    """JSON (one or a list) and JSONL load; a missing, empty or malformed file is a clear PolicyError."""
    a, b = traj("a", "A", "a0"), traj("b", "B", "b0")
    (tmp_path / "one.json").write_text(a.model_dump_json())
    (tmp_path / "list.json").write_text(json.dumps([a.model_dump(mode="json"), b.model_dump(mode="json")]))
    (tmp_path / "many.jsonl").write_text(a.model_dump_json() + "\n\n" + b.model_dump_json() + "\n")
    assert len(load_policy(f"replay:{tmp_path / 'one.json'}").trajectories) == 1
    assert len(load_policy(f"replay:{tmp_path / 'list.json'}").trajectories) == 2
    policy = load_policy(f"replay:{tmp_path / 'many.jsonl'}")
    assert policy.spec == f"replay:{tmp_path / 'many.jsonl'}" and len(policy.trajectories) == 2
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.json").write_text('{"steps": 3}')
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    for name, match in (("missing.json", "no trajectory file"), ("empty.jsonl", "holds no trajectories"),
                        ("bad.json", "not a trajectory file"), ("broken.jsonl", "not a trajectory file")):
        with pytest.raises(PolicyError, match=match):
            load_policy(f"replay:{tmp_path / name}")


@pytest.mark.usefixtures("docker_ready")
def test_exported_run_replays_through_the_cli_to_the_same_outcome(instance, tmp_path: Path):  # noqa: F811
    """`evolve trajectories --export` then `evolve run --policy replay:FILE` (and replay:RUN_DIR) resolve again."""
    first = tmp_path / "runs" / "first"
    run_swe(RunConfig(suite="bundled", instances=[instance.instance_id], out=str(first), workers=1),
            [instance], ScriptedPolicy(gold_script(instance)))
    listing = evolve("trajectories", str(first))
    assert listing.returncode == 0 and instance.instance_id in listing.stdout and "swe=1.00" in listing.stdout
    exported = tmp_path / "traj.jsonl"
    r = evolve("trajectories", str(first), "--export", str(exported))
    assert r.returncode == 0, r.stderr[-1500:]
    assert len(exported.read_text().splitlines()) == 1
    for source, out in ((exported, tmp_path / "runs" / "from-file"), (first, tmp_path / "runs" / "from-dir")):
        r = evolve("run", "bundled", "--instances", instance.instance_id, "--policy", f"replay:{source}",
                   "--out", str(out), "--workers", "1")
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((out / "report.json").read_text())["resolved"] == 1
        with RunStore(out, readonly=True) as store:
            (replayed,) = store.trajectories()
        assert replayed.policy == f"replay:{source}" and len(replayed.steps) == 3
    r = evolve("trajectories", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "not a run directory" in r.stderr
