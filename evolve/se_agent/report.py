"""After selection: grade every candidate with the hidden tests FOR THE REPORT ONLY (selection is already
stored and never reads these), write `predictions.jsonl` (the selected patch per instance) and `report.json`
with three separately labelled numbers: pass@1 of the first pilot, pass@1 of the selection, and oracle
pass@k (any candidate resolves: an upper bound that needs the hidden tests, not a result)."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evolve.se_agent.env import Environment
from evolve.se_agent.loop import pool
from evolve.se_agent.records import DOC_SELECTION, SelectionVerdict
from evolve.store import RunStore
from records import TaskInstance

log = logging.getLogger(__name__)

FIRST = "pass@1 first pilot (hidden tests)"
SELECTED = "pass@1 selection (hidden tests)"
ORACLE = "oracle pass@k, any candidate (hidden tests; not a pass@1 result)"


def grade_candidates(store: RunStore, run_id: str, instances: list[TaskInstance], env: Environment,
                     workers: int = 1) -> None:
    """Hidden-test grading of every candidate not graded yet (resumable)."""
    jobs = [(inst, e.trajectory_id) for inst in instances for e in pool(store, run_id, inst.instance_id)
            if store.test_report(e.trajectory_id) is None]

    def one(job) -> None:
        inst, tid = job
        env.hidden(inst, store.get_trajectory(tid))

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as ex:
        for fut in [ex.submit(one, j) for j in jobs]:
            fut.result()


def build_report(store: RunStore, run_id: str, instances: list[TaskInstance], model: str, seconds: float,
                 out: Path | None = None) -> dict:
    """The report (and, with `out`, `predictions.jsonl` and `report.json` written there)."""
    rows, preds = [], []
    for inst in instances:
        iid = inst.instance_id
        entries = pool(store, run_id, iid)
        doc = store.document(DOC_SELECTION, iid)
        verdict = SelectionVerdict.model_validate(doc) if doc else None
        resolved = {}
        for e in entries:
            rep = store.test_report(e.trajectory_id)
            resolved[e.trajectory_id] = None if rep is None else bool(rep.resolved)
        first = next((e.trajectory_id for e in entries if e.iteration == 1 and e.slot == 0), None)
        chosen = verdict.selected if verdict else None
        patch = store.get_trajectory(chosen).patch if chosen else ""
        preds.append({"instance_id": iid, "model_name_or_path": model, "model_patch": patch})
        rows.append({
            "instance_id": iid, "candidates": len(entries),
            "visible": {e.trajectory_id: e.outcome.label() for e in entries},
            "first_pilot": first, "first_pilot_resolved": resolved.get(first) if first else None,
            "selected": chosen, "selection_method": verdict.method if verdict else "not selected",
            "selected_resolved": bool(resolved.get(chosen)) if chosen else False,
            "any_resolved": any(bool(v) for v in resolved.values()),
            "graded": sum(v is not None for v in resolved.values()),
            "origins": {e.trajectory_id: e.origin for e in entries}})
    n = len(rows) or 1
    report = {
        "run_id": run_id, "instances": len(rows),
        "candidates": sum(r["candidates"] for r in rows),
        FIRST: sum(bool(r["first_pilot_resolved"]) for r in rows) / n,
        SELECTED: sum(r["selected_resolved"] for r in rows) / n,
        ORACLE: sum(r["any_resolved"] for r in rows) / n,
        "gain (selection - first pilot)": (sum(r["selected_resolved"] for r in rows)
                                           - sum(bool(r["first_pilot_resolved"]) for r in rows)) / n,
        "graded": all(r["graded"] == r["candidates"] for r in rows),
        "seconds": round(seconds, 1), "per_instance": rows}
    if out is not None:
        with open(out / "predictions.jsonl", "w") as f:
            for p in preds:
                f.write(json.dumps(p) + "\n")
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
