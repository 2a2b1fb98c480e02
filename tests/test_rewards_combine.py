"""Weighted combination of rewards."""

from __future__ import annotations

import pytest

from records import Reward
from rewards.combine import RewardWeights, combine

SWE = Reward(name="swe", total=1.0, parts={"resolved": 1.0, "f2p_fraction": 1.0})
TOOL = Reward(name="toolrl", total=2.5, parts={"format": 1.0, "correctness": 1.5})
JUDGE = Reward(name="judge", total=0.8, parts={"correctness": 0.8}, info={"rationale": "good"})


@pytest.mark.parametrize("rewards,weights,total", [
    ([SWE], {"swe": 1.0}, 1.0),
    ([SWE, JUDGE], {"swe": 1.0, "judge": 0.5}, 1.0 + 0.4),
    ([SWE, TOOL, JUDGE], {"swe": 2.0, "toolrl": -1.0, "judge": 1.0}, 2.0 - 2.5 + 0.8),
    ({"swe": SWE, "judge": JUDGE}, RewardWeights(weights={"judge": 1.0}), 0.8),  # swe unweighted: left out
    ([SWE], {"swe": 1.0, "judge": 0.0}, 1.0),  # a zero weight may be missing
    ([], {}, 0.0),
])
def test_total(rewards, weights, total: float) -> None:
    r = combine(rewards, weights)
    assert r.name == "combined"
    assert r.total == pytest.approx(total)


def test_parts_and_info() -> None:
    r = combine([SWE, JUDGE, TOOL], {"swe": 1.0, "judge": 0.5})
    assert r.parts == pytest.approx({"swe": 1.0, "swe.resolved": 1.0, "swe.f2p_fraction": 1.0,
                                     "judge": 0.4, "judge.correctness": 0.8})
    assert r.info["judge"] == {"rationale": "good"}
    assert r.info["unweighted"] == ["toolrl"]
    assert r.info["weights"] == {"swe": 1.0, "judge": 0.5}


def test_dict_keys_name_the_rewards() -> None:
    r = combine({"outcome": SWE}, {"outcome": 3.0})
    assert r.parts["outcome"] == 3.0 and r.parts["outcome.resolved"] == 1.0


@pytest.mark.parametrize("rewards,weights,message", [
    ([SWE], {"swe": 1.0, "judge": 0.5}, "missing: judge"),
    ([], {"toolrl": 1.0, "swe": 1.0}, "missing: swe, toolrl"),
    ([SWE, SWE], {"swe": 1.0}, "two rewards named 'swe'"),
])
def test_errors(rewards, weights, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        combine(rewards, weights)


def test_default_weights() -> None:
    assert combine([SWE, JUDGE], RewardWeights()).total == 1.0
