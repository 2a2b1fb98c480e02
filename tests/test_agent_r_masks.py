"""Acceptance check 7 (mask survival), end to end: Agent-R splices -> exported run store -> the trainer's data
loader and one real SFT step of a tiny model. The supervised token count equals the masked-in token count, the
bad prefix is never supervised, the revision turn and the good continuation always are."""

from __future__ import annotations

import re

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.agent_r.build import build_instance  # noqa: E402
from evolve.agent_r.config import AgentRConfig  # noqa: E402
from evolve.agent_r.export import export_sft_data, masked_in_tokens  # noqa: E402
from evolve.agent_r.toy import NumberLineWorld, TabularPolicy, oracle_ask  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    model = build_tiny_model(base / "tiny-64")
    splices, good = [], []
    for seed in range(6):
        goal = 3 + seed % 3
        world = NumberLineWorld(goal, TabularPolicy(), random.Random(seed), 4)
        res = build_instance(world, AgentRConfig(rollouts=8, n_gen=4, max_depth=4), oracle_ask(),
                             instance_id=f"line-{goal}", rng=random.Random(seed))
        splices += res.splices
        good += res.good[:2]
    assert len(splices) >= 6 and good
    out = export_sft_data(splices + good, base / "agent-r-data", "agent-r-data")
    return {"model": model, "splices": splices, "good": good, "dir": out}


def test_masks_survive_export_and_the_data_loader(data):
    from transformers import AutoTokenizer

    from evolve.train.data import build_sequences, load_trajectories, micro_batches

    tok = AutoTokenizer.from_pretrained(data["model"])
    items = load_trajectories([data["dir"]])
    assert len(items) == len(data["splices"]) + len(data["good"])
    by_id = {t.id: t for t, _ in items}
    for t in data["splices"]:  # the flags came back from the store unchanged
        assert [s.response.train for s in by_id[t.id].steps] == [s.response.train for s in t.steps]
    seqs, report = build_sequences(items, tok, max_len=2048)
    assert report.built == len(items) and report.dropped == 0
    trajs = [t for t, _ in items]
    want = masked_in_tokens(trajs, tok)
    assert report.trained_tokens == want
    batches = micro_batches(seqs, list(range(len(seqs))), micro_batch_size=4, max_len=2048, pack=True,
                            pad_id=tok.pad_token_id)
    assert int(sum(b.mask.sum() for b in batches)) == want
    # the masked-in text is exactly the learned turns: never a token of the bad prefix
    for seq, traj in zip(seqs, trajs):
        learned = tok.decode([i for i, m in zip(seq.input_ids, seq.loss_mask) if m])
        expected = "".join(s.response.content + "<|im_end|>" for s in traj.steps if s.response.train)
        assert learned == expected
        if traj.origin == "agent-r:splice":
            k = traj.branch_step
            assert k >= 1 and all(not s.response.train for s in traj.steps[:k])
            # the revision turn undoes the bad step, and any leading undos of the good path folded into it (#18.17)
            assert all(s.response.train for s in traj.steps[k:])
            assert re.search(r"\bundo [1-9]\d*$", traj.steps[k].response.content), traj.steps[k].response.content
            context = tok.decode([i for i, m in zip(seq.input_ids, seq.loss_mask) if not m])
            for s in traj.steps[:k]:
                assert s.response.content in context


def test_sft_trains_exactly_the_masked_in_tokens(data, tmp_path):
    from transformers import AutoTokenizer

    from evolve.store import RunStore
    from evolve.train.data import load_trajectories
    from evolve.train.sft import SFTConfig, train_sft

    tok = AutoTokenizer.from_pretrained(data["model"])
    want = masked_in_tokens([t for t, _ in load_trajectories([data["dir"]])], tok)
    n = len(data["splices"]) + len(data["good"])
    cfg = SFTConfig(policy=f"hf:{data['model']}", lora=None, batch_size=n, micro_batch_size=8, max_steps=1,
                    max_len=2048, device="cpu", lr=1e-3)
    version = train_sft(cfg, [data["dir"]], tmp_path / "sft")
    with RunStore(tmp_path / "sft", readonly=True) as store:
        steps = store.train_steps(version.id)
    assert len(steps) == 1 and steps[0].metrics["trained_tokens"] == want
    assert version.data == ["agent-r-data"]
