"""HGM's statistics and pure decision rules: anchors §1.14 checks 1, 2, 5, 6 and §2.7 checks 1-3."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evolve.hgm import policy
from evolve.hgm.config import HGMConfig
from evolve.hgm.stats import CladeStats

ROOT = Path(__file__).resolve().parents[1]


def hand_tree() -> CladeStats:
    """root [1,0], child [1,1,1], grandchild [0] (1 = pass)."""
    st = CladeStats()
    st.add_node("root", None)
    st.add_node("child", "root")
    st.add_node("grand", "child")
    for node, results in (("root", [1, 0]), ("child", [1, 1, 1]), ("grand", [0])):
        for i, r in enumerate(results):
            st.add_outcome(node, f"t{i}", "pass" if r else "fail")
    return st


class AliasingEstimator:
    """The released HGM code's estimator pattern, rebuilt to show that check 1 can fail: the getter hands out
    the node's own list, which the clade aggregation then extends in place."""

    def __init__(self) -> None:
        self.own = {"root": [1, 0], "child": [1, 1, 1], "grand": [0]}
        self.kids = {"root": ["child"], "child": ["grand"], "grand": []}

    def clade(self, node: str) -> tuple[int, int]:
        evals = self.own[node]  # the live list, not a copy
        for k in self.kids[node]:
            evals += self.own[k]
        return sum(evals), len(evals) - sum(evals)


def check_purity(clade, own) -> bool:
    first = {n: clade(n) for n in ("root", "child", "grand")}
    before = {n: own(n) for n in ("root", "child", "grand")}
    for _ in range(100):
        if {n: clade(n) for n in first} != first:
            return False
    return {n: own(n) for n in before} == before


def test_check1_estimator_purity():
    st = hand_tree()
    assert check_purity(st.clade, st.own)
    assert st.clade("root") == (4, 2) and st.clade("child") == (3, 1) and st.clade("grand") == (0, 1)
    assert st.own("root") == (1, 1) and st.own("child") == (3, 0)
    bad = AliasingEstimator()
    assert not check_purity(bad.clade, lambda n: tuple(bad.own[n]))  # the same check catches the defect


def test_check2_incremental_counts_match_recomputation():
    rng = np.random.default_rng(7)
    st, parent = CladeStats(), {"n0": None}
    st.add_node("n0", None)
    for i in range(1, 60):
        p = f"n{rng.integers(i)}"
        parent[f"n{i}"] = p
        st.add_node(f"n{i}", p)
    statuses = ["pass", "fail", "timeout", "infra_error"]
    own = {n: [0, 0] for n in parent}
    for k in range(1000):
        n, status = f"n{rng.integers(60)}", statuses[rng.integers(4)]
        st.add_outcome(n, f"t{k}", status)
        if status == "pass":
            own[n][0] += 1
        elif status in ("fail", "timeout"):
            own[n][1] += 1
    st.check()

    def subtree_sum(node: str) -> tuple[int, int]:  # independent: walk every node's ancestry
        s = f = 0
        for m in parent:
            cur = m
            while cur is not None and cur != node:
                cur = parent[cur]
            if cur == node:
                s, f = s + own[m][0], f + own[m][1]
        return s, f

    for n in parent:
        assert st.own(n) == tuple(own[n])
        assert st.clade(n) == subtree_sum(n)
    assert st.clade("n0") == (sum(v[0] for v in own.values()), sum(v[1] for v in own.values()))
    st._clade["n3"] = (st._clade["n3"][0] + 1, st._clade["n3"][1])  # drift is detected
    with pytest.raises(AssertionError):
        st.check()


def p_first_beats_second(a1, b1, a2, b2, grid=20000) -> float:
    """P(X > Y) for X ~ Beta(a1, b1), Y ~ Beta(a2, b2) by midpoint integration of f_X(x) F_Y(x)."""
    x = (np.arange(grid) + 0.5) / grid
    log_norm = math.lgamma(a1 + b1) - math.lgamma(a1) - math.lgamma(b1)
    fx = np.exp(log_norm + (a1 - 1) * np.log(x) + (b1 - 1) * np.log1p(-x))
    fy_cdf = np.array([policy._beta_cdf(v, a2, b2) for v in x[::20]])
    return float(np.sum(fx[::20] * fy_cdf) / (grid / 20))


def test_check5_thompson_sampling_with_tau():
    arms = [(30, 10), (3, 1)]
    rng = np.random.default_rng(0)
    n = 20_000
    wins = sum(policy.thompson_pick(rng, arms, 1.0) == 0 for _ in range(n))
    expected = p_first_beats_second(31, 11, 4, 2)
    assert abs(wins / n - expected) <= 0.02, (wins / n, expected)
    wins_cold = sum(policy.thompson_pick(rng, arms, 1000.0) == 0 for _ in range(n))
    assert wins_cold / n >= 0.99  # higher posterior mean: 31/42 > 4/6
    assert policy.tau(0, 800) == 1.0 and policy.tau(799, 800) == 800.0 and policy.tau(400, 800) == 2.0
    assert policy.tau(400, 800, enabled=False) == 1.0 and policy.tau(400, 800, exponent=2.0) == 4.0


def test_check6_best_belief_pick_vs_posterior_mean():
    own = [(30, 10), (3, 0)]
    assert policy.best_belief(own, 0.01) == 0
    assert policy.best_mean(own) == 1
    means = [(1 + s) / (2 + s + f) for s, f in own]
    assert int(np.argmax(means)) == 1


def test_beta_quantile_is_exact():
    # closed forms: Beta(a, 1) has CDF x^a; Beta(1, b) has CDF 1 - (1 - x)^b
    q = policy.beta_quantile(0.01, [4, 1, 7], [1, 5, 1])
    assert np.allclose(q, [0.01 ** 0.25, 1 - 0.99 ** 0.2, 0.01 ** (1 / 7)], atol=1e-9)
    # values from scipy 1.17.1 beta.ppf(0.01, a, b)
    q = policy.beta_quantile(0.01, [31, 5, 61], [11, 3, 1])
    assert np.allclose(q, [0.56810161, 0.23632356, 0.92728474], atol=1e-7)
    assert abs(policy._beta_ppf_bisect(0.3, 17, 4) - 0.7723318315064336) < 1e-9


def test_widening_rule_counts_in_flight():
    assert policy.should_expand(15, 5, 0)        # 15^0.6 = 5.08
    assert not policy.should_expand(14, 5, 0)    # 14^0.6 = 4.87
    assert not policy.should_expand(15, 5, 1)    # an expansion in flight counts


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dgm_check1_selection_formula():
    acc, kids = [0.2, 0.5, 0.8], [0, 3, 1]
    raw = [sigmoid(10 * (a - 0.5)) / (1 + c) for a, c in zip(acc, kids)]
    expected = np.array(raw) / sum(raw)
    assert np.allclose(policy.dgm_weights(acc, kids), expected)
    draws = policy.dgm_choose(np.random.default_rng(1), acc, kids, k=100_000)
    freq = np.bincount(draws, minlength=3) / 100_000
    assert np.all(np.abs(freq - expected) <= 0.01), (freq, expected)


def test_dgm_check2_best_returns_top_k():
    acc = [0.3, 0.9, 0.1, 0.6]
    assert policy.dgm_choose(np.random.default_rng(0), acc, [0] * 4, k=2, method="best") == [1, 3]


def test_dgm_check3_every_documented_method_is_accepted():
    for method in policy.DGM_METHODS:
        assert HGMConfig(dgm_method=method).dgm_method == method
        assert policy.dgm_weights([0.2, 0.7], [0, 1], method).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        policy.dgm_weights([0.5], [0], "score_child_propbest")  # the released CLI's merged choice
    for method in policy.DGM_METHODS:  # and the bench's command line takes each of them
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_hgm.py"), "--dgm-method", method,
                              "--check-args"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert method in out.stdout
