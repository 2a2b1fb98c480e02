"""The HGM numbers the tree screen shows: Beta quantile, own/clade counts, CMP, best belief."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from records import TreeNode
from tui.stats import beta_cdf, beta_quantile, best_belief, hgm_stats


def beta_cdf_exact(x: Fraction, a: int, b: int) -> Fraction:
    """For integer a, b: I_x(a, b) = P(Binomial(a+b-1, x) >= a), summed exactly with fractions."""
    n = a + b - 1
    return sum(comb(n, j) * x ** j * (1 - x) ** (n - j) for j in range(a, n + 1))


@pytest.mark.parametrize("a,b", [(1, 1), (2, 5), (7, 3), (11, 41), (61, 1)])
def test_beta_cdf_matches_the_exact_binomial_tail(a, b):
    for x in (Fraction(1, 100), Fraction(1, 7), Fraction(1, 2), Fraction(9, 10)):
        assert beta_cdf(float(x), a, b) == pytest.approx(float(beta_cdf_exact(x, a, b)), abs=1e-12)


@pytest.mark.parametrize("a,b", [(1, 1), (4, 2), (1, 30), (30, 1), (51, 11)])
def test_quantile_inverts_the_cdf(a, b):
    q = beta_quantile(0.01, a, b)
    assert float(beta_cdf_exact(Fraction(q), a, b)) == pytest.approx(0.01, abs=1e-9)
    if (a, b) == (1, 1):
        assert q == pytest.approx(0.01, abs=1e-12)  # Beta(1,1) is uniform


def test_own_and_clade_counts_cmp_and_best_belief():
    nodes = [TreeNode(id="r"), TreeNode(id="a", parent_id="r"), TreeNode(id="b", parent_id="r"),
             TreeNode(id="c", parent_id="a")]
    rows = ([dict(node_id="r", resolved=True)] * 2 + [dict(node_id="r", resolved=False)] * 2
            + [dict(node_id="a", resolved=True)] * 3 + [dict(node_id="c", resolved=False)]
            + [dict(node_id="b", resolved=None), dict(node_id="ghost", resolved=True)])
    st = hgm_stats(nodes, rows)
    assert (st["r"].own_s, st["r"].own_f, st["r"].clade_s, st["r"].clade_f) == (2, 2, 5, 3)
    assert (st["a"].clade_s, st["a"].clade_f) == (3, 1)
    assert st["b"].own_other == 1 and st["b"].cmp is None  # an infrastructure error is not a failure
    assert st["r"].cmp == pytest.approx(5 / 8)
    # a: Beta(4,1) has the highest 1% quantile (0.01 ** (1/4) = 0.316...), above r's Beta(3,3)
    assert st["a"].quantile == pytest.approx(0.01 ** 0.25, abs=1e-9)
    assert best_belief(st) == "a"
