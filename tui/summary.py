"""One run summarised: progress (completed work only), an ETA that counts down, score, last activity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evolve.store import RunStore
from tui.source import RunRef

INFRA = {"infra_error"}
"""Trajectory statuses that are the infrastructure's failures, not the agent's."""
AGENT_FAIL = {"error"}
CUT = {"budget_exhausted", "context_exceeded"}
STOPPED = {"interrupted"}
"""Episodes cut by a stop (Ctrl-C, the stop button, a killed run): neither the agent's failure nor finished."""
LIVE = ("running",)
"""Run statuses under which work is still being done (a `dead` run's process is gone)."""


@dataclass
class Progress:
    """Where a run's instances stand. Only `done` and `failed` are finished work: an interrupted instance or one
    that never started is still to do (the same command resumes it)."""

    done: int = 0
    """Finished, with a verdict of the agent."""
    failed: int = 0
    """Finished by an infrastructure error or a run error (rerunning the command retries it)."""
    running: int = 0
    queued: int = 0
    """Never started in this run's life, or waiting for a retry."""
    interrupted: int = 0
    """Cut by a stop or a kill; resumed by the same command."""
    total: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def left(self) -> int:
        return self.total - self.finished

    def text(self) -> str:
        parts = [f"{self.done}/{self.total} done"]
        for n, what in ((self.failed, "failed"), (self.running, "running"), (self.queued, "queued"),
                        (self.interrupted, "interrupted")):
            if n:
                parts.append(f"{n} {what}")
        return " · ".join(parts)


def progress(overview: dict[str, Any]) -> Progress:
    """From instance statuses, or from trajectories when a run keeps no instances (Agent-R, SE-Agent's attempts)."""
    inst = overview["instances"]
    if inst:
        return Progress(done=inst.get("done", 0), failed=inst.get("infra_error", 0) + inst.get("error", 0),
                        running=inst.get("running", 0), queued=inst.get("pending", 0),
                        interrupted=inst.get("interrupted", 0), total=sum(inst.values()))
    trajs = overview["trajectories"]
    total = sum(trajs.values())
    running, interrupted, infra = trajs.get("running", 0), trajs.get("interrupted", 0), trajs.get("infra_error", 0)
    return Progress(done=total - running - interrupted - infra, failed=infra, running=running,
                    interrupted=interrupted, total=total)


def eta_seconds(overview: dict[str, Any], prog: Progress, now: float, status: str | None = None) -> float | None:
    """Seconds until the run's work is done, at the mean duration of its completed episodes (interrupted and
    infrastructure-failed ones are no measure of the work). A running episode counts as that mean less the time it
    has run, so the estimate counts down between store writes; `workers` episodes run at once. None when the run
    is not running, nothing is left, or no episode has completed yet."""
    status = status or overview.get("status")
    durations = overview.get("durations") or []
    if status not in LIVE or prog.left <= 0 or not durations:
        return None
    mean = sum(durations) / len(durations)
    running = overview.get("running_since") or []
    waiting = max(0, prog.left - len(running))
    workers = max(1, int(overview.get("workers") or 0), len(running))
    rest = [max(0.0, mean - (now - t)) for t in running]
    return max(max(rest, default=0.0), (sum(rest) + waiting * mean) / workers)


def run_summary(store: RunStore, run: RunRef) -> dict[str, Any]:
    if run.kind in ("train", "training"):
        vid = run.config.get("version_id")
        versions = [v for v in store.policy_versions() if v.id == vid]
        steps = store.train_step_count(vid) if vid else 0
        total = (run.config.get("config") or {}).get("max_steps") or None
        final = versions[0].metrics if versions else {}
        score = " ".join(f"{k}={v:.3g}" for k, v in list(final.items())[:2]) or "-"
        return dict(progress=f"{steps}/{total}" if total else f"{steps} steps", score=score,
                    last_update=run.updated_at, detail=f"training {run.config.get('kind', '')} of "
                    f"{run.config.get('base', '')} · version {vid or ''} · {steps} steps stored")
    family = store.run_family(run.run_id)
    ov = store.run_overview(family)
    prog = progress(ov)
    if ov["graded"]:
        score = f"{ov['resolved']}/{ov['graded']} resolved"
    else:
        totals = store.reward_totals(family)
        name = "combined" if "combined" in totals else next(iter(totals), None)
        score = f"{name} {sum(totals[name]) / len(totals[name]):.3f}" if name else "-"
    counts = " · ".join(f"{k} {v}" for k, v in sorted(ov["trajectories"].items()))
    return dict(progress=f"{prog.done}/{prog.total}" + (f" ({prog.running} running)" if prog.running else ""),
                score=score, last_update=max(filter(None, [ov["last_update"], run.updated_at])), overview=ov,
                detail=f"{prog.text()} · trajectories: {counts or 'none yet'}"
                       + (f" · runs {', '.join(family)}" if len(family) > 1 else ""))
