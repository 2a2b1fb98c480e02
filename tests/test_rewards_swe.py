"""SWE outcome reward from test reports, table-driven."""

from __future__ import annotations

import pytest

from records import TestReport
from rewards.swe import SweRewardConfig, swe_parts, swe_reward


def report(**kw) -> TestReport:
    return TestReport(instance_id="x__y-1", **kw)


APPLIED = dict(patch_applied=True)
F2P_2_OF_4 = dict(fail_to_pass_success=["a", "b"], fail_to_pass_failure=["c", "d"])
P2P_1_OF_4_BROKEN = dict(pass_to_pass_success=["p", "q", "r"], pass_to_pass_failure=["s"])

CASES = [
    # (id, report fields, expected total, expected parts subset)
    ("resolved", dict(resolved=True, fail_to_pass_success=["a"], pass_to_pass_success=["p"], **APPLIED),
     1.0, {"resolved": 1.0, "f2p_fraction": 1.0, "p2p_fraction": 1.0, "p2p_regressions": 0.0}),
    ("empty patch", dict(empty_patch=True), -1.0, {"empty_patch": 1.0, "patch_applied": 0.0}),
    ("patch did not apply", dict(fail_to_pass_failure=["a"]), -1.0, {"patch_applied": 0.0, "f2p_fraction": 0.0}),
    # 0.5 * 2/4 - 0.5 * 1/4 = 0.25 - 0.125
    ("partial with regression", dict(**F2P_2_OF_4, **P2P_1_OF_4_BROKEN, **APPLIED), 0.125,
     {"f2p_fraction": 0.5, "p2p_fraction": 0.75, "p2p_regressions": 1.0, "p2p_regression_fraction": 0.25}),
    # 0.5 * 2/4 - 0 (no P2P listed: p2p_fraction 1, regressions 0)
    ("partial no p2p listed", dict(**F2P_2_OF_4, **APPLIED), 0.25,
     {"p2p_fraction": 1.0, "p2p_regression_fraction": 0.0}),
    # no F2P listed: f2p_fraction 0; all 4 P2P fail: 0 - 0.5 * 1
    ("no f2p listed, all p2p broken", dict(pass_to_pass_failure=["p", "q", "r", "s"], **APPLIED), -0.5,
     {"f2p_fraction": 0.0, "p2p_fraction": 0.0, "p2p_regressions": 4.0, "p2p_regression_fraction": 1.0}),
    ("applied, nothing passes", dict(fail_to_pass_failure=["a"], pass_to_pass_success=["p"], **APPLIED), 0.0,
     {"resolved": 0.0, "patch_applied": 1.0}),
    ("grading error", dict(error="timeout", fail_to_pass_failure=["a"], **APPLIED), 0.0, {"grading_error": 1.0}),
    # the tests said every test passed, but the patch gamed them: never more than a failure
    ("tampering", dict(tampering=["pkg/__init__.py: the code under test patches builtins"],
                       fail_to_pass_success=["a"], pass_to_pass_success=["p"], **APPLIED), -1.0, {"tampering": 1.0}),
]


@pytest.mark.parametrize("fields,total,parts", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_shaping(fields: dict, total: float, parts: dict[str, float]) -> None:
    r = swe_reward(report(**fields))
    assert r.name == "swe"
    assert r.total == pytest.approx(total)
    for k, v in parts.items():
        assert r.parts[k] == pytest.approx(v), k


def test_every_part_present() -> None:
    r = swe_reward(report(**APPLIED))
    assert set(r.parts) == {"resolved", "patch_applied", "empty_patch", "grading_error", "tampering", "f2p_fraction",
                            "p2p_fraction", "p2p_regressions", "p2p_regression_fraction"}
    assert r.parts == swe_parts(report(**APPLIED))


@pytest.mark.parametrize("config,fields,total", [
    (SweRewardConfig(partial_weight=0.0, regression_penalty=0.0), dict(**F2P_2_OF_4, **APPLIED), 0.0),
    (SweRewardConfig(partial_weight=1.0), dict(**F2P_2_OF_4, **P2P_1_OF_4_BROKEN, **APPLIED), 0.5 - 0.125),
    (SweRewardConfig(unresolved_base=-0.2, regression_penalty=1.0),
     dict(**F2P_2_OF_4, **P2P_1_OF_4_BROKEN, **APPLIED), -0.2 + 0.25 - 0.25),
    (SweRewardConfig(resolved_reward=5.0), dict(resolved=True, **APPLIED), 5.0),
    (SweRewardConfig(failed_patch_reward=0.0), dict(empty_patch=True), 0.0),
    (SweRewardConfig(tampering_reward=-2.0), dict(tampering=["x"], resolved=True, **APPLIED), -2.0),
])
def test_configured_shaping(config: SweRewardConfig, fields: dict, total: float) -> None:
    assert swe_reward(report(**fields), config).total == pytest.approx(total)


def test_error_in_info() -> None:
    assert swe_reward(report(error="sandbox died")).info == {"error": "sandbox died"}
    assert swe_reward(report(resolved=True, **APPLIED)).info == {}
