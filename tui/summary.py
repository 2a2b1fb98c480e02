"""One run summarised for the runs list: progress, score (resolved rate or mean reward), last activity."""

from __future__ import annotations

from typing import Any

from evolve.store import RunStore
from tui.source import RunRef

INFRA = {"infra_error"}
"""Trajectory statuses that are the infrastructure's failures, not the agent's."""
AGENT_FAIL = {"error"}
CUT = {"budget_exhausted", "context_exceeded"}


def progress(overview: dict[str, Any]) -> tuple[int, int, int]:
    """(finished, total, running) from instance statuses, or from trajectories when a run keeps no instances."""
    inst = overview["instances"]
    if inst:
        total = sum(inst.values())
        return total - inst.get("pending", 0) - inst.get("running", 0), total, inst.get("running", 0)
    trajs = overview["trajectories"]
    total = sum(trajs.values())
    return total - trajs.get("running", 0), total, trajs.get("running", 0)


def eta_seconds(overview: dict[str, Any], remaining: int) -> float | None:
    """Seconds left at the rate of the most recent completions (None until two have finished)."""
    f = overview["recent_finishes"]
    if remaining <= 0 or len(f) < 2 or f[-1] <= f[0]:
        return None
    return remaining * (f[-1] - f[0]) / (len(f) - 1)


def run_summary(store: RunStore, run: RunRef) -> dict[str, Any]:
    if run.kind in ("train", "training"):
        versions = [v for v in store.policy_versions() if v.id == run.config.get("version_id")]
        steps = store.train_step_count(run.config.get("version_id", "")) if run.config.get("version_id") else 0
        total = (run.config.get("config") or {}).get("max_steps") or None
        final = versions[0].metrics if versions else {}
        score = " ".join(f"{k}={v:.3g}" for k, v in list(final.items())[:2]) or "-"
        return dict(progress=f"{steps}/{total}" if total else f"{steps} steps", score=score,
                    last_update=run.updated_at, detail=f"training {run.config.get('kind', '')} of "
                    f"{run.config.get('base', '')} · version {run.config.get('version_id', '')} · {steps} steps stored")
    ov = store.run_overview(run.run_id)
    done, total, running = progress(ov)
    if ov["graded"]:
        score = f"{ov['resolved']}/{ov['graded']} resolved"
    else:
        totals = store.reward_totals(run.run_id)
        name = "combined" if "combined" in totals else next(iter(totals), None)
        score = f"{name} {sum(totals[name]) / len(totals[name]):.3f}" if name else "-"
    counts = " · ".join(f"{k} {v}" for k, v in sorted(ov["trajectories"].items()))
    return dict(progress=f"{done}/{total}" + (f" ({running} running)" if running else ""), score=score,
                last_update=max(filter(None, [ov["last_update"], run.updated_at])),
                detail=f"trajectories: {counts or 'none yet'}")
