"""SWE outcome reward: a `records.TestReport` -> `records.Reward` named `swe`, with every part shown.

Parts (all floats):
- `resolved`: 1 when the report says resolved, else 0.
- `patch_applied`: 1 when the patch applied cleanly to a fresh checkout, else 0.
- `empty_patch`: 1 when the patch was empty, else 0.
- `grading_error`: 1 when the tests gave no clean verdict (the report's `error`: the patch did not apply, the
  tests timed out or gave no results with it), else 0.
- `tampering`: 1 when the patch changed how the tests run (the report's `tampering`), else 0.
- `f2p_fraction`: FAIL_TO_PASS tests now passing / FAIL_TO_PASS tests listed; 0 when none are listed
  (there is then nothing partial to credit; a resolved report still gets the full reward).
- `p2p_fraction`: PASS_TO_PASS tests still passing / PASS_TO_PASS tests listed; 1 when none are listed
  (nothing could regress).
- `p2p_regressions`: number of PASS_TO_PASS tests that fail.
- `p2p_regression_fraction`: `p2p_regressions` / PASS_TO_PASS tests listed; 0 when none are listed.

Default shaping (`SweRewardConfig`): 1 if resolved; -1 if the patch is empty or did not apply, and -1 if it
tampered with how the tests run (gaming the grader never pays more than failing); otherwise
`partial_weight * f2p_fraction - regression_penalty * p2p_regression_fraction`, in [-0.5, 0.5].
"""

from __future__ import annotations

from pydantic import BaseModel

from records import Reward, TestReport


class SweRewardConfig(BaseModel):
    """How the parts of a test report become one scalar for RL or search."""

    resolved_reward: float = 1.0
    """Total when the report is resolved (all FAIL_TO_PASS and PASS_TO_PASS pass)."""
    failed_patch_reward: float = -1.0
    """Total when the patch is empty or did not apply (nothing could be tested)."""
    tampering_reward: float = -1.0
    """Total when the patch tampered with how the tests run (`TestReport.tampering`), whatever the tests said."""
    unresolved_base: float = 0.0
    """Starting value of an applied but unresolved patch, before partial credit and penalty."""
    partial_weight: float = 0.5
    """Weight of `f2p_fraction` for an applied but unresolved patch (0 turns partial credit off)."""
    regression_penalty: float = 0.5
    """Weight of `p2p_regression_fraction` subtracted for an applied but unresolved patch."""


def _fraction(num: int, den: int, default: float) -> float:
    return num / den if den else default


def swe_parts(report: TestReport) -> dict[str, float]:
    """The numeric parts of a report (see the module docstring for their definitions)."""
    f2p_ok, f2p_bad = len(report.fail_to_pass_success), len(report.fail_to_pass_failure)
    p2p_ok, p2p_bad = len(report.pass_to_pass_success), len(report.pass_to_pass_failure)
    p2p_all = p2p_ok + p2p_bad
    return {
        "resolved": float(report.resolved),
        "patch_applied": float(report.patch_applied),
        "empty_patch": float(report.empty_patch),
        "grading_error": float(report.error is not None),
        "tampering": float(bool(report.tampering)),
        "f2p_fraction": _fraction(f2p_ok, f2p_ok + f2p_bad, 0.0),
        "p2p_fraction": _fraction(p2p_ok, p2p_all, 1.0),
        "p2p_regressions": float(p2p_bad),
        "p2p_regression_fraction": _fraction(p2p_bad, p2p_all, 0.0),
    }


def swe_reward(report: TestReport, config: SweRewardConfig | None = None) -> Reward:
    """The shaped SWE reward of a test report, with every part."""
    cfg = config or SweRewardConfig()
    parts = swe_parts(report)
    if report.tampering:
        total = cfg.tampering_reward
    elif report.resolved:
        total = cfg.resolved_reward
    elif report.empty_patch or not report.patch_applied:
        total = cfg.failed_patch_reward
    else:
        total = (cfg.unresolved_base + cfg.partial_weight * parts["f2p_fraction"]
                 - cfg.regression_penalty * parts["p2p_regression_fraction"])
    info = {"error": report.error} if report.error is not None else {}
    return Reward(name="swe", total=total, parts=parts, info=info)
