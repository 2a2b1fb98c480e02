"""Acceptance check 8: over 200 seeds, three Agent-R iterations of a tabular policy in the number-line world
raise the recovery rate after an injected bad first action monotonically, above a Direct-Revision control
(whole low path, revision, whole high path: upstream's baseline) at iteration 3.

Rates are exact expectations per seed (every action sequence of the recovery episode enumerated), so the only
randomness is the searches'; the margins asserted are several standard errors of the 200-seed means."""

from __future__ import annotations

import statistics

import pytest

from evolve.agent_r.toy import toy_iterations

SEEDS = 200


@pytest.mark.slow
def test_iterations_raise_recovery_monotonically_and_beat_direct_revision():
    agent_r = [toy_iterations(s, "parent") for s in range(SEEDS)]
    direct = [toy_iterations(s, "direct") for s in range(SEEDS)]
    mean = [statistics.fmean(r[i] for r in agent_r) for i in range(4)]
    ctrl = [statistics.fmean(r[i] for r in direct) for i in range(4)]
    print("recovery after an injected bad first action, iterations 0-3: Agent-R "
          + " ".join(f"{m:.3f}" for m in mean) + "; Direct-Revision " + " ".join(f"{m:.3f}" for m in ctrl))
    for i in range(3):  # each iteration's gain is larger than 3 standard errors of the paired difference
        diffs = [r[i + 1] - r[i] for r in agent_r]
        se = statistics.stdev(diffs) / SEEDS ** 0.5
        assert statistics.fmean(diffs) > 3 * se, (i, mean)
    final = [a[3] - d[3] for a, d in zip(agent_r, direct)]
    assert statistics.fmean(final) > 3 * statistics.stdev(final) / SEEDS ** 0.5
