"""What a stage cost, from what it stored: policy tokens and sampling seconds, training seconds, sandbox seconds.

`policy_seconds` is the policy's own compute for sampling (each step's `policy_seconds`; a batched call's time is
shared among its conversations, so the sum is the calls' time); `train_seconds` the optimiser steps' compute (each
step's tokens over its tokens/s); `sandbox_seconds` the tool time in sandboxes (each step's `tool_seconds`). The
stage's wall and CPU seconds are in its `StageRecord`; `bench/bench_loop.py` sets them side by side.
"""

from __future__ import annotations

from pathlib import Path

from evolve.store import RunStore

ZERO = {"tokens": 0.0, "policy_seconds": 0.0, "train_seconds": 0.0, "train_tokens": 0.0, "sandbox_seconds": 0.0,
        "trajectories": 0.0}


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in set(a) | set(b)}


def trajectories_cost(store: RunStore, run_id: str | None = None, since: float = 0.0) -> dict[str, float]:
    """Summed over the trajectories of `run_id` (every run of the store when None) created at or after `since`."""
    t = store.step_totals(run_id, since)
    return dict(ZERO) | {"trajectories": t["trajectories"], "tokens": t["tokens"],
                         "policy_seconds": t["policy_seconds"], "sandbox_seconds": t["tool_seconds"]}


def run_dir_cost(run_dir: Path, since: float = 0.0) -> dict[str, float]:
    """`trajectories_cost` of every run in a run directory, plus its training steps (a training directory)."""
    if not (Path(run_dir) / "evolve.db").exists():
        return dict(ZERO)
    with RunStore(run_dir, readonly=True) as store:
        out = trajectories_cost(store, None, since)
        for v in store.policy_versions():
            for st in store.train_steps(v.id):
                if st.created_at >= since and st.metrics.get("tokens_per_s"):
                    out["train_seconds"] += st.metrics.get("tokens", 0.0) / st.metrics["tokens_per_s"]
                    out["train_tokens"] += st.metrics.get("tokens", 0.0)
    return out
