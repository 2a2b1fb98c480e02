"""The Self-Evolving Curriculum: its weights move toward the categories whose GRPO groups carry signal; its
history is in the run store; `evolve train grpo --curriculum sec` draws groups with it; splits never share a
source."""

from __future__ import annotations

import random

import pytest

from tasks.synth.curriculum import Curriculum, CurriculumConfig, advantages, category_of, mean_abs_advantage
from tasks.synth.synthesize import splits


def test_mean_absolute_advantage_is_zero_without_signal_and_largest_at_half():
    assert mean_abs_advantage([[1, 1, 1, 1], [0, 0, 0, 0]]) == 0.0
    half, rare = mean_abs_advantage([[1, 1, 0, 0]]), mean_abs_advantage([[1, 0, 0, 0]])
    assert half > rare > 0
    assert advantages([1.0, 0.0], scale=False) == [0.5, -0.5]


def simulate(mode: str, steps: int = 60, seed: int = 0) -> tuple[Curriculum, dict[str, int]]:
    """Three categories: `learnable` gives mixed groups (p = 0.5), `solved` all successes, `hopeless` all
    failures. Each step draws 4 categories, rolls a group of 4 for each, feeds the bandit."""
    p = {"src/learnable": 0.5, "src/solved": 1.0, "src/hopeless": 0.0}
    cur = Curriculum(p, CurriculumConfig(mode=mode), seed=seed)
    rng = random.Random(seed)
    drawn = {c: 0 for c in p}
    for _ in range(steps):
        groups: dict[str, list[list[float]]] = {}
        for c in cur.sample(4):
            drawn[c] += 1
            groups.setdefault(c, []).append([float(rng.random() < p[c]) for _ in range(4)])
        cur.update(groups)
    return cur, drawn


def test_sec_weights_move_toward_the_category_with_signal():
    cur, drawn = simulate("sec")
    w = cur.weights()
    assert w["src/learnable"] > 0.8 > w["src/solved"] + w["src/hopeless"]  # argued: Q(learnable) ~ 0.7 over 0.2
    assert drawn["src/learnable"] > drawn["src/solved"] + drawn["src/hopeless"]


def test_uniform_stays_uniform_and_state_round_trips():
    cur, _ = simulate("uniform")
    assert list(cur.weights().values()) == pytest.approx([1 / 3] * 3)
    sec, _ = simulate("sec", steps=10)
    again = Curriculum.from_state(sec.state())
    assert again.q == sec.q and again.weights() == sec.weights() and again.sample(5) == sec.sample(5)


def test_pick_draws_distinct_tasks_of_categories_with_tasks():
    cur = Curriculum(["a/x", "b/y"], seed=1)
    picked = cur.pick({"a/x": ["1", "2"], "b/y": ["3"], "c/z": ["4"]}, 5)
    assert sorted(picked) == ["1", "2", "3"]


def test_category_of_rows_and_other_instances():
    assert category_of("synth__toolz-1", {"category": "toolz/flip_operator"}) == "toolz/flip_operator"
    assert category_of("bundled__clip-1", {"bug_kind": "off-by-one"}, "evolve-bundled/clip") == \
        "evolve-bundled/clip/off-by-one"


def test_splits_never_share_a_source_and_hold_one_out():
    names = [f"src{i}" for i in range(10)]
    s = splits(names, 0.2)
    assert sorted(s) == names and list(s.values()).count("test") == 2
    assert splits(names, 0.2) == s  # deterministic
    assert list(splits(["a", "b"], 0.2).values()).count("test") == 1
    assert set(splits(["a"], 0.2).values()) == {"train"} and set(splits(names, 0).values()) == {"train"}
    kept = splits(names, 0.2, keep={"src0": "test", "src1": "train"})
    assert kept["src0"] == "test" and kept["src1"] == "train"


def test_synth_suite_splits_share_no_repository(tmp_path):
    import json

    from tasks.synth.suite import SynthSuite

    rows = []
    for n, (src, split) in enumerate([("a", "train"), ("a", "train"), ("b", "test"), ("c", "train")]):
        rows.append({"instance_id": f"synth__{src}-{n}", "repo": f"evolve-synth/{src}", "base_commit": "0" * 40,
                     "FAIL_TO_PASS": ["t"], "extra": {"split": split, "source": src}})
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = SynthSuite(tmp_path / "s.jsonl")
    train, test = suite.instances("train"), suite.instances("test")
    assert len(train) == 3 and len(test) == 1
    assert not {r.repo for r in train} & {r.repo for r in test}


def test_group_picker_stores_the_weights_and_favours_signal(tmp_path):
    from evolve.curriculum_log import GroupPicker, history, record, resume
    from evolve.store import RunStore

    # 6 groups: 3 of category with signal (mixed rewards), 3 without (all equal)
    groups, rewards, cats, idx = {}, {}, {}, 0
    for g in range(6):
        sig = g < 3
        groups[f"i{g}"] = [idx, idx + 1]
        rewards[f"i{g}"] = [1.0, 0.0] if sig else [1.0, 1.0]
        cats[f"i{g}"] = "s/signal" if sig else "s/flat"
        idx += 2
    trainable = {i for g in range(3) for i in groups[f"i{g}"]}
    with RunStore(tmp_path / "run") as store:
        cur = resume(store, "train", ["s/signal", "s/flat"], CurriculumConfig(), seed=0)
        picker = GroupPicker(cur, groups, rewards, cats, trainable)
        for step in range(12):
            picker.next_batch(2)
            record(store, "train", picker.cur, step)
        past = history(store, "train")
        assert len(past) == 12 and past[0]["weights"]["s/signal"] <= past[-1]["weights"]["s/signal"]
        assert past[-1]["weights"]["s/signal"] > 0.9  # Q(signal) ~ 1 vs Q(flat) = 0 at temperature 0.2
        again = resume(store, "train", ["s/signal", "s/flat"], CurriculumConfig())
        assert again.q == picker.cur.q and again.updates == 12


def test_grpo_with_the_curriculum_stores_its_weights_per_step(tmp_path_factory, tmp_path):
    """`evolve train grpo RUN --curriculum sec` on a tiny model: groups are drawn by category (from the run's
    stored instances), the curriculum's state is stored after every step, and it favours the category whose
    groups have differing rewards."""
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_model import build_tiny_model

    from evolve.curriculum_log import history
    from evolve.store import RunStore
    from evolve.train.cli import app
    from records import Message, Reward, Step, TaskInstance, Trajectory, TrajectoryStatus

    model = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    run = tmp_path / "runs" / "synth"
    with RunStore(run) as store:
        store.put_run("synth", "run", {})
        for g in range(4):
            cat = "src/signal" if g < 2 else "src/flat"
            store.put_instance("synth", TaskInstance(instance_id=f"i{g}", extra={"category": cat}))
            for k in range(2):
                traj = Trajectory(run_id="synth", instance_id=f"i{g}", status=TrajectoryStatus.submitted,
                                  prompt=[Message(role="user", content=f"task {g}")],
                                  steps=[Step(index=0, response=Message(role="assistant", content=f"answer {k}"))])
                store.put_trajectory(traj)
                store.put_reward(traj.id, Reward(name="swe", total=float(k) if g < 2 else 1.0))
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("device: cpu\nbatch_size: 2\nmicro_batch_size: 2\nmax_len: 128\nlora:\n  r: 4\n")
    out = tmp_path / "runs" / "grpo"
    result = CliRunner().invoke(app, ["grpo", str(run), "--config", str(cfg), "--policy", f"hf:{model}",
                                      "--out", str(out), "--max-steps", "4", "--curriculum", "sec"])
    assert result.exit_code == 0, result.output
    with RunStore(out, readonly=True) as store:
        past = history(store, "train")
    assert [p["step"] for p in past] == [0, 1, 2, 3]
    assert set(past[-1]["weights"]) == {"src/signal", "src/flat"}
    assert past[-1]["q"]["src/signal"] > past[-1]["q"]["src/flat"]
    bad = CliRunner().invoke(app, ["grpo", str(run), "--policy", f"hf:{model}", "--out", str(tmp_path / "x"),
                                   "--curriculum", "hard-first"])
    assert bad.exit_code == 2 and "curriculum" in bad.output
