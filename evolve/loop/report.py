"""The loop's report: one row per generation (held-out score with its interval, the paired difference and p-value,
what won, what it cost), as `report.json` beside the store and as a rich table."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from evolve.loop.state import STAGES, LoopState
from evolve.markup import esc


def generation_rows(state: LoopState) -> list[dict[str, Any]]:
    rows = []
    for rec in state.generations():
        g = rec.gate
        rows.append({
            "generation": rec.generation, "champion_in": rec.champion_in, "candidate": rec.candidate,
            "champion_out": rec.champion_out, "accepted": rec.accepted, "held_out": rec.held_out,
            "n": g.get("n"), "diff": g.get("diff"), "ci": [g.get("ci_low"), g.get("ci_high")],
            "p_worse": g.get("p_worse"), "p_better": g.get("p_better"), "test": g.get("test"),
            "reason": g.get("reason"), "winner": rec.winner, "cost": rec.cost})
    return rows


def loop_report(ctx, stopped: bool = False) -> dict[str, Any]:
    """The report of the loop in `ctx` (written to `report.json`)."""
    state = ctx.state
    running = None
    for g in range(0, ctx.cfg.generations + 1):
        for name in ("warm_start",) + STAGES:
            rec = state.stage(g, name)
            if rec is not None and rec.status == "started":
                running = {"generation": g, "stage": name, "progress": rec.progress}
    rows = generation_rows(state)
    report = {"run_id": ctx.run_id, "suite": ctx.cfg.suite, "stopped": stopped, "running": running,
              "start": ctx.start_node, "start_policy": ctx.start_spec,
              "champion": rows[-1]["champion_out"] if rows else ctx.start_node,
              "rollout_backend": ctx.cfg.policies.rollout_backend,
              "splits": {k: len(v) for k, v in ctx.splits.ids().items()}, "generations": rows}
    (ctx.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _short(node: str) -> str:
    return node.rsplit(":", 1)[-1] if node.count(":") <= 1 else ":".join(node.split(":")[-2:])


def _num(x: Any, fmt: str = "{:+.3f}") -> str:
    return "" if x is None else fmt.format(x)


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def table(report: dict[str, Any]) -> Table:
    """One row per generation: the champion's held-out score (mean [interval]), the candidate's paired difference
    [interval] and p-value, the decision and what won, and the cost (wall, CPU, policy tokens, training and sandbox
    seconds)."""
    t = Table(title=f"evolve loop {esc(report['suite'])} · {report['splits']['held_out']} held-out instances · "
                    f"rollouts on {esc(report['rollout_backend'])}")
    t.add_column("gen", justify="right")
    t.add_column("held-out score [95% CI]")
    t.add_column("candidate: diff [CI], p(worse)")
    t.add_column("gate: what won")
    t.add_column("cost")
    for r in report["generations"]:
        h = r["held_out"] or {}
        held = f"{h.get('mean', 0):.3f} [{h.get('low', 0):.3f}, {h.get('high', 0):.3f}]"
        if "format" in h:
            held += f"\nformat {h['format']:.2f} · exact {h['exact']:.2f}"
        ci = r["ci"] if r["ci"] and None not in r["ci"] else None
        diff = f"{_num(r['diff'])} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(r["diff"])
        cand = f"{esc(_short(r['candidate']))}: {diff}, p {_num(r['p_worse'], '{:.3g}')}"
        w = r["winner"] or {}
        won = w.get("kind", "")
        if w.get("training"):
            won += f" {w['training'].get('version')} ({w['training'].get('steps')} steps)"
        elif w.get("diff"):
            won += f" ({len(w['diff'].splitlines())}-line diff)"
        gate = f"[green]accepted[/]: {esc(won)}" if r["accepted"] else "[yellow]champion kept[/]"
        c = r["cost"] or {}
        cost = (f"{c.get('seconds', 0):.0f} s · {c.get('cpu_seconds', 0):.0f} CPU s · {_k(c.get('tokens', 0))} tok"
                f"\ntrain {c.get('train_seconds', 0):.0f} s · sandbox {c.get('sandbox_seconds', 0):.0f} s"
                + (f" · GPU {c['gpu_seconds']:.0f} s" if c.get("gpu_seconds") else ""))
        t.add_row(str(r["generation"]), held, cand, gate, cost)
    return t
