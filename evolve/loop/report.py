"""The loop's report: one row per generation (held-out score with its interval, the paired difference and p-value,
what won, what it cost), as `report.json` beside the store and as a rich table."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from evolve.loop.state import STAGES, LoopState


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


def table(report: dict[str, Any]) -> Table:
    """One row per generation: the champion's held-out score (mean [interval]), the candidate's paired difference
    [interval] and p-value, the decision, what won, and the cost."""
    t = Table(title=f"evolve loop {report['suite']} · {report['splits']['held_out']} held-out instances · "
                    f"rollouts on {report['rollout_backend']}")
    for col in ("gen", "held-out (champion)", "candidate", "diff [CI]", "p (worse)", "gate", "what won", "time",
                "CPU s", "tokens", "train s", "sandbox s"):
        t.add_column(col, justify="right" if col in ("gen", "time", "CPU s", "tokens", "train s", "sandbox s") else "left")
    for r in report["generations"]:
        h = r["held_out"] or {}
        held = f"{h.get('mean', 0):.3f} [{h.get('low', 0):.3f}, {h.get('high', 0):.3f}]"
        if "format" in h:
            held += f" fmt {h['format']:.2f} exact {h['exact']:.2f}"
        ci = r["ci"] if r["ci"] and None not in r["ci"] else None
        diff = f"{_num(r['diff'])} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(r["diff"])
        w = r["winner"] or {}
        won = w.get("kind", "")
        if w.get("training"):
            won += f" {w['training'].get('version')} ({w['training'].get('steps')} steps)"
        elif w.get("diff"):
            won += f" ({len(w['diff'].splitlines())}-line diff)"
        c = r["cost"] or {}
        t.add_row(str(r["generation"]), held, _short(r["candidate"]), diff, _num(r["p_worse"], "{:.3g}"),
                  "[green]accepted[/]" if r["accepted"] else "[yellow]kept[/]", won if r["accepted"] else "—",
                  f"{c.get('seconds', 0):.0f} s", f"{c.get('cpu_seconds', 0):.0f}", f"{c.get('tokens', 0):.0f}",
                  f"{c.get('train_seconds', 0):.0f}", f"{c.get('sandbox_seconds', 0):.0f}")
    return t
