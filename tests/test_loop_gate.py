"""The held-out gate: the paired tests' numbers against textbook values, and the decision rule (a worse candidate is
refused, a not-worse one accepted, too few pairs keep the champion)."""

from __future__ import annotations

import math

import pytest

from evolve.loop.config import GateConfig
from evolve.loop.gate import binom_cdf, bootstrap, compare, mean_interval, paired_t, sign_test, t_cdf, t_quantile


@pytest.mark.parametrize("t,dof,p", [(2.262157, 9, 0.975), (1.812461, 10, 0.95), (2.085963, 20, 0.975),
                                     (0.0, 5, 0.5), (-1.812461, 10, 0.05), (63.65674, 1, 0.995)])
def test_t_distribution_matches_the_tables(t, dof, p):
    # table values are given to 6 digits; the continued fraction is far more precise than that
    assert t_cdf(t, dof) == pytest.approx(p, abs=2e-6)
    assert t_quantile(p, dof) == pytest.approx(t, abs=1e-4 * max(1.0, abs(t)))


def test_sign_test_is_the_exact_binomial_tail():
    d = [1.0] * 8 + [-1.0] * 2 + [0.0] * 5  # ties are dropped: 8 wins, 2 losses
    p_worse, p_better = sign_test(d)
    assert p_better == pytest.approx((1 + 10 + 45) / 1024)  # P(X <= 2), X ~ Bin(10, 1/2)
    assert p_worse == pytest.approx(binom_cdf(8, 10))
    assert sign_test([0.0, 0.0]) == (1.0, 1.0)


def test_paired_t_by_hand():
    d = [0.5, 1.0, 1.5, 1.0, 0.0, 2.0]
    m = sum(d) / 6
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 5)
    t = m / (sd / math.sqrt(6))
    p_worse, p_better = paired_t(d)
    assert p_better == pytest.approx(1 - t_cdf(t, 5)) and p_worse == pytest.approx(t_cdf(t, 5))
    assert paired_t([1.0, 1.0, 1.0]) == (1.0, 0.0)  # a constant gain is certain
    assert paired_t([0.0, 0.0]) == (1.0, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = [0.2, -0.1, 0.4, 0.3, 0.0, 0.5, 0.1, 0.2]
    a, b = bootstrap(d, 0.05, 2000), bootstrap(d, 0.05, 2000)
    assert a == b  # a fixed seed: the same gate every time
    p_worse, p_better, lo, hi = a
    assert lo < sum(d) / len(d) < hi and p_better < 0.05 < p_worse


def test_the_gate_refuses_a_significantly_worse_candidate():
    champion = {f"i{k}": 1.0 for k in range(12)}
    worse = {f"i{k}": (0.0 if k < 9 else 1.0) for k in range(12)}
    r = compare(champion, worse, GateConfig())
    assert r.test == "sign" and r.n == 12 and r.losses == 9 and not r.accepted
    assert r.p_worse == pytest.approx(1 / 2 ** 9) and "refused" in r.reason
    assert r.diff == pytest.approx(-0.75) and r.ci_low < -0.75 < r.ci_high


def test_the_gate_accepts_a_candidate_that_is_not_worse_and_the_stricter_rule_wants_better():
    champion = {f"i{k}": -1.0 + 0.1 * k for k in range(10)}
    same_ish = {k: v + (0.05 if int(k[1:]) % 2 else -0.05) for k, v in champion.items()}
    r = compare(champion, same_ish, GateConfig(test="t"))
    assert r.accepted and r.p_worse > 0.05 and r.ci_low < 0 < r.ci_high
    assert not compare(champion, same_ish, GateConfig(test="t", rule="better")).accepted
    better = {k: v + 0.5 + 0.01 * int(k[1:]) for k, v in champion.items()}
    rb = compare(champion, better, GateConfig(test="t", rule="better"))
    assert rb.accepted and rb.p_better < 1e-6 and rb.ci_low > 0.4


def test_too_few_held_out_pairs_keep_the_champion():
    r = compare({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, GateConfig(min_held_out=3))
    assert r.n == 2 and not r.accepted and "min_held_out" in r.reason


def test_mean_interval():
    out = mean_interval([1.0, 2.0, 3.0, 4.0])
    half = t_quantile(0.975, 3) * math.sqrt(5 / 3) / 2
    assert out["mean"] == 2.5 and out["low"] == pytest.approx(2.5 - half) and out["high"] == pytest.approx(2.5 + half)


def _gate_context(tmp_path, good_ids):
    """A loop context on toolcall whose start node answers every held-out instance right and whose candidate node
    answers only `good_ids` right (scripted policies, loaded `as-is`)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loop_helpers import ScriptedToolcall

    from evolve.loop.config import LoopConfig
    from evolve.loop.context import LoopContext
    from evolve.loop.policies import Policies
    from evolve.loop.splits import resolve_splits
    from evolve.store import RunStore
    from records import TreeNode
    from tasks.registry import get_suite

    cfg = LoopConfig.model_validate({"splits": {"train": 2, "held_out": 12}, "code": {"enabled": False},
                                     "gate": {"min_held_out": 8},
                                     "policies": {"policy": "scripted:good", "rollout_backend": "as-is"}})
    splits = resolve_splits(get_suite("toolcall"), cfg.splits)
    loaded = {"scripted:good": ScriptedToolcall("scripted:good", True),
              "scripted:worse": ScriptedToolcall("scripted:worse", set(good_ids))}
    store = RunStore(tmp_path / "loop")
    ctx = LoopContext(cfg=cfg, out=tmp_path / "loop", run_id="loop", store=store, splits=splits,
                      policies=Policies(cfg.policies, tmp_path, load=loaded.__getitem__), kind="toolcall",
                      start_node="loop:start", start_spec="scripted:good", start_variant="")
    ctx.state.put_node(TreeNode(id="loop:start", tree_id="loop", kind="loop", status="accepted",
                                info={"node_kind": "start", "policy": "scripted:good"}))
    ctx.state.put_node(TreeNode(id="loop:g01:n0001", parent_id="loop:start", tree_id="loop", kind="loop",
                                status="accepted", info={"node_kind": "sft", "policy": "scripted:worse",
                                                         "expansion": "sft", "generation": 1}))
    return ctx, loaded, splits


def test_the_gate_stage_refuses_a_worse_node_and_reuses_stored_scores(tmp_path):
    from evolve.loop import stages

    ctx, loaded, splits = _gate_context(tmp_path, good_ids=[])
    with ctx.state.running(1, "gate") as rec:
        record = stages.gate(ctx, 1, rec, "loop:g01:n0001", "loop:start")
    assert not record.accepted and record.champion_out == "loop:start"
    g = record.gate
    assert g["n"] == 12 and g["losses"] == 12 and g["p_worse"] < 0.05 and "refused" in g["reason"]
    assert g["diff"] == g["candidate_mean"] - g["champion_mean"] < 0 and g["ci_high"] < 0
    assert record.held_out["mean"] == 4.0 and record.held_out["exact"] == 1.0  # the champion's, kept
    docs = ctx.store.documents("loop:held-out")
    assert len(docs) == 24 and all(d["trajectory_id"] for _, d in docs)
    calls = loaded["scripted:good"].calls + loaded["scripted:worse"].calls
    with ctx.state.running(1, "gate") as rec:  # gated again (a resumed loop): every score is reused
        again = stages.gate(ctx, 1, rec, "loop:g01:n0001", "loop:start")
    assert loaded["scripted:good"].calls + loaded["scripted:worse"].calls == calls and again.gate == record.gate
    assert len(ctx.store.trajectory_ids(run_id="loop-held-out")) == 24
    ctx.store.close()


def test_the_gate_stage_accepts_a_node_that_is_not_worse(tmp_path):
    from evolve.loop import stages

    ctx, _, splits = _gate_context(tmp_path, good_ids=[i.problem_statement for i in splits_all(12)][:11])
    with ctx.state.running(1, "gate") as rec:
        record = stages.gate(ctx, 1, rec, "loop:g01:n0001", "loop:start")
    assert record.gate["losses"] == 1 and record.accepted and record.champion_out == "loop:g01:n0001"
    assert record.winner["kind"] == "sft"
    ctx.store.close()


def splits_all(n):
    from tasks.registry import get_suite

    return get_suite("toolcall").instances("test")[:n]
