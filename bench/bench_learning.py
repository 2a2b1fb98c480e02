"""Does the loop make the model better? Held-out evidence of an `evolve loop` run, paired per instance.

Runs (or resumes: it is the loop's own resume) `evolve loop SUITE --config CONFIG --out OUT`, then reads the
loop's store and prints, for the starting model, the warm-started one and each generation's champion, the
held-out scores on the same instances: ToolRL total (mean with its 95% t interval), format, exact answers; and
the paired comparisons that answer the question: warm start against the start, and every later champion
against the warm-started model (mean difference with its interval and the one-sided paired t-test's p; exact
answers gained and lost with the exact sign test's p). Kill it at any time; the same command goes on.

    .venv/bin/python bench/bench_learning.py [--config evolve/loop/configs/toolcall-learn.yaml]
        [--out runs/learn-toolcall] [--report-only]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evolve.loop.gate import mean_interval, paired_t, sign_test, t_interval  # noqa: E402
from evolve.loop.state import LoopState  # noqa: E402
from evolve.store import RunStore  # noqa: E402

DOC = "loop:held-out"


def short(node: str) -> str:
    """A node's id without its run (`g01:n0002`, `warm`): node numbers restart each generation."""
    return node.split(":", 1)[-1]


def scores(store: RunStore, node: str) -> dict[str, dict]:
    return {k.split("|", 1)[1]: d for k, d in store.documents(DOC, key_prefix=f"{node}|")}


def rows(out: Path) -> tuple[list[tuple[str, str, dict]], str]:
    """(label, node, per-instance scores) of the start, the warm start and each generation's champion."""
    with RunStore(out, readonly=True) as store:
        run = store.runs()[0]
        state = LoopState(store, run["id"])
        seen, result = set(), []
        for rec in state.generations():
            verdict = "adopted" if rec.accepted else "refused by the gate"
            for label, node in ((f"g{rec.generation} in", rec.champion_in),
                                (f"g{rec.generation} candidate, {verdict}", rec.candidate),
                                (f"g{rec.generation} champion", rec.champion_out)):
                if node not in seen:
                    seen.add(node)
                    result.append((f"{label}: {short(node)}", node, scores(store, node)))
        for key, doc in store.documents(DOC):  # nodes whose gate is still running (scored so far)
            if doc["node"] not in seen:
                seen.add(doc["node"])
                result.append((f"being scored: {short(doc['node'])}", doc["node"],
                               scores(store, doc["node"])))
        return result, run["status"]


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    ids = sorted(set(a) & set(b))
    d = [b[i]["score"] - a[i]["score"] for i in ids]
    lo, hi = t_interval(d, 0.05)
    gained = sum(b[i]["exact"] and not a[i]["exact"] for i in ids)
    lost = sum(a[i]["exact"] and not b[i]["exact"] for i in ids)
    return {"n": len(ids), "diff": sum(d) / len(d) if d else 0.0, "lo": lo, "hi": hi,
            "p": paired_t(d)[1] if d else 1.0, "gained": gained, "lost": lost,
            "p_exact": sign_test([1.0] * gained + [-1.0] * lost)[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="toolcall")
    parser.add_argument("--config", default=str(ROOT / "evolve/loop/configs/toolcall-learn.yaml"))
    parser.add_argument("--out", default="runs/learn-toolcall")
    parser.add_argument("--report-only", action="store_true", help="read the store; run nothing")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        subprocess.run([sys.executable, "-m", "evolve.cli", "loop", args.suite, "--config", args.config,
                        "--out", str(out)], cwd=ROOT, check=False)
    nodes, status = rows(out)
    console = Console()
    table = Table(title=f"held-out scores of {out} (loop {status})")
    for col in ("node", "n", "ToolRL total [95% CI]", "format", "exact"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for label, node, s in nodes:
        m = mean_interval([d["score"] for d in s.values()])
        fmt = sum(d["format"] for d in s.values()) / max(1, len(s))
        table.add_row(label, str(len(s)),
                      f"{m['mean']:+.3f} [{m['low']:+.3f}, {m['high']:+.3f}]", f"{fmt:.3f}",
                      f"{sum(d['exact'] for d in s.values())}/{len(s)}")
    console.print(table)
    if len(nodes) < 2:
        return
    start = nodes[0]
    warm = next((n for n in nodes if n[1].endswith(":warm")), None)
    ref = warm or start  # later champions are compared with the warm-started model
    pairs = ([(start, warm)] if warm else []) + [(ref, n) for n in nodes if n is not start and n is not ref]
    paired = Table(title="paired on the same held-out instances (p: one-sided, the later node better)")
    for col in ("later", "against", "n", "ToolRL total diff [95% CI]", "p (paired t)", "exact gained / lost",
                "p (sign test)"):
        paired.add_column(col, justify="left" if col in ("later", "against") else "right")
    for (la, _, a), (lb, _, b) in pairs:
        c = compare(a, b)
        paired.add_row(lb, la, str(c["n"]), f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]", f"{c['p']:.2g}",
                       f"{c['gained']} / {c['lost']}", f"{c['p_exact']:.2g}")
    console.print(paired)


if __name__ == "__main__":
    main()
