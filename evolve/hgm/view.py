"""Read an HGM run back from its store: every node with its own and clade counts, CMP estimate, 1% quantile,
status and the best-belief mark, derived from the outcome rows (the rows are the truth; node records only
cache their own counts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.variant_dir import variant_diff
from evolve.errors import ConfigError
from evolve.hgm import policy
from evolve.hgm.stats import CladeStats
from evolve.store import RunStore, StoreError


TREE_KINDS = ("hgm", "loop")
"""Run kinds whose store holds a tree of agents: `evolve hgm` (variants) and `evolve loop` (variant, policy) pairs."""


def hgm_run_id(store: RunStore, run_id: str | None = None) -> str:
    """The HGM (or loop) run in the store (the only one, or the one named)."""
    runs = [r for r in store.runs() if r["kind"] in TREE_KINDS]
    if run_id is not None:
        if not any(r["id"] == run_id for r in runs):
            raise StoreError(f"{store.dir} has no HGM run {run_id!r}; it has {[r['id'] for r in runs] or 'none'}")
        return run_id
    if not runs:
        raise StoreError(f"{store.dir} holds no HGM run: give the --out directory of an `evolve hgm`")
    return runs[-1]["id"]


def tree_summary(store: RunStore, run_id: str, quantile: float = 0.01) -> dict[str, Any]:
    """Nodes (oldest first) with their statistics, the pick, and the run's config. A loop's tree (`evolve loop`)
    counts every generation's search outcomes; its nodes also say their kind (`code`, `sft`, `grpo`, ...), policy,
    generation and the generations they were champion of."""
    run = next((r for r in store.runs() if r["id"] == run_id), {})
    kind = "loop" if run.get("kind") == "loop" else "hgm"
    nodes = store.tree(tree_id=run_id, kind=kind)
    stats = CladeStats()
    known = set()
    for n in nodes:  # parents are stored before their children
        if n.parent_id is None or n.parent_id in known:
            stats.add_node(n.id, n.parent_id)
            known.add(n.id)
    rows_ = store.outcomes(run_id=run_id) if kind == "hgm" else \
        [r for r in store.outcomes() if r["run_id"].startswith(f"{run_id}:g")]
    for r in rows_:
        if r["node_id"] in known:
            stats.add_outcome(r["node_id"], r["task_id"], r["status"])
    rows = []
    for n in nodes:
        own = stats.own(n.id) if n.id in known else (0, 0)
        clade = stats.clade(n.id) if n.id in known else (0, 0)
        q = float(policy.beta_quantile(quantile, [1 + own[0]], [1 + own[1]])[0])
        rows.append({"id": n.id, "parent_id": n.parent_id, "status": n.status, "label": n.label,
                     "variant_dir": n.variant_dir, "own": list(own), "clade": list(clade),
                     "cmp": clade[0] / sum(clade) if sum(clade) else None, "quantile": q,
                     "reason": n.info.get("reason", ""), "topic": n.info.get("topic"),
                     "privileged": n.info.get("privileged"), "created_at": n.created_at,
                     "node_kind": n.info.get("node_kind", "variant"), "policy": n.info.get("policy"),
                     "generation": n.info.get("generation"), "champion_of": n.info.get("champion_of", [])})
    judged = [r for r in rows if r["status"] == "accepted" and sum(r["own"]) > 0]
    best = max(judged, key=lambda r: r["quantile"])["id"] if judged else None
    for r in rows:
        r["best"] = r["id"] == best
    return {"run_id": run_id, "kind": kind, "config": run.get("config", {}), "status": run.get("status"),
            "best": best, "nodes": rows, "infra_errors": sum(1 for r in rows_ if r["status"] == "infra_error")}


def find_node(summary: dict[str, Any], ref: str) -> dict[str, Any]:
    """A node by its id, or by the end of it (`n0003`, `root`)."""
    hits = [n for n in summary["nodes"] if n["id"] == ref or n["id"].endswith(":" + ref)]
    if len(hits) != 1:
        ids = ", ".join(n["id"].rsplit(":", 1)[-1] for n in summary["nodes"][:12])
        raise StoreError(f"no single node {ref!r} in run {summary['run_id']} (nodes: {ids}...)")
    return hits[0]



def read_tree(run: Path, run_id: str | None = None) -> dict[str, Any]:
    """`tree_summary` of the HGM (or loop) run stored in the run directory `run` (the only one, or `run_id`),
    read without a lock (the run may be live)."""
    with RunStore(run, readonly=True) as store:
        return tree_summary(store, hgm_run_id(store, run_id))


def node_diff(run: Path, ref: str, against: str = "parent") -> tuple[str, str]:
    """(the node's id, the change it made): against its parent (the diff stored with it; '' for the root) or
    against the root (its variant directory compared with the root's)."""
    with RunStore(run, readonly=True) as store:
        summary = tree_summary(store, hgm_run_id(store))
        n = find_node(summary, ref)
        stored = next(x for x in store.tree(tree_id=summary["run_id"]) if x.id == n["id"])
    if against == "parent":
        return n["id"], stored.info.get("diff", "") if stored.parent_id else ""
    root = next(x for x in summary["nodes"] if x["parent_id"] is None)
    if not n["variant_dir"] or not Path(n["variant_dir"]).is_dir():
        raise ConfigError(f"node {n['id']} has no variant directory (rejected before its patch applied)")
    return n["id"], variant_diff(root["variant_dir"], n["variant_dir"])
