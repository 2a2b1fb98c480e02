"""The run store as the scheduler's memory: every decision, node and outcome is written as it happens, and a
restarted run rebuilds the scheduler from them (`load_history` + `Scheduler.restore`).

What is stored (all under the run id): decisions as documents `hgm:decision` (key `RUN:SEQ`, written before the
action runs), nodes as `TreeNode(kind="hgm", tree_id=RUN)` (status expanding -> accepted | rejected, with the
diff, diagnosis and reason in `info`), evaluations as immutable outcome rows carrying their decision's seq. A
decision without a result was in flight at a kill; it is re-issued unchanged, so no evaluation is lost or
counted twice.
"""

from __future__ import annotations

import threading
from typing import Any

from evolve.hgm.scheduler import Action, Scheduler
from evolve.hgm.stats import COUNTED
from evolve.hgm.world import Evaluation, Expansion
from evolve.store import RunStore
from records import TreeNode

DECISION = "hgm:decision"


class StoreJournal:
    """Writes the search to a RunStore (thread-safe: the store is). Decisions and outcomes are keyed by `run_id`;
    nodes are `TreeNode(kind=kind, tree_id=tree_id)` (default: `hgm` nodes of a tree named `run_id`; `evolve loop`
    journals each generation's search into its one `loop` tree)."""

    def __init__(self, store: RunStore, run_id: str, *, kind: str = "hgm", tree_id: str | None = None):
        self.store, self.run_id = store, run_id
        self.kind, self.tree_id = kind, tree_id or run_id
        self._lock = threading.Lock()

    def key(self, seq: int) -> str:
        return f"{self.run_id}:{seq:07d}"

    # --- writing ----------------------------------------------------------------------------------------
    def root(self, sched: Scheduler, label: str = "root") -> None:
        if not any(n.id == sched.root_id for n in self.store.tree(tree_id=self.tree_id, kind=self.kind)):
            r = sched.nodes[sched.root_id]
            self.store.put_tree_node(TreeNode(id=r.id, parent_id=None, tree_id=self.tree_id, kind=self.kind, label=label,
                                              status="accepted", variant_dir=r.variant_dir, info=dict(r.info)))

    def decided(self, sched: Scheduler, action: Action) -> None:
        self.store.put_document(DECISION, self.key(action.seq), action.to_dict(), run_id=self.run_id)
        if action.kind == "expand":
            info: dict[str, Any] = {"seq": action.seq, "search": self.run_id}
            if action.expansion:
                info["expansion"] = action.expansion
            self.store.put_tree_node(TreeNode(id=action.child, parent_id=action.node, tree_id=self.tree_id,
                                              kind=self.kind, status="expanding", label=f"child of {action.node}",
                                              info=info))

    def completed(self, sched: Scheduler, action: Action, result: Expansion | Evaluation, started: float,
                  finished: float) -> None:
        if action.kind == "expand":
            assert isinstance(result, Expansion)
            info = dict(result.info, seq=action.seq, reason=result.reason, diff=result.diff,
                        diagnosis=result.diagnosis, latency=result.latency, tokens=result.tokens,
                        started_at=started, finished_at=finished, search=self.run_id)
            if action.expansion:
                info["expansion"] = action.expansion
            label = result.info.get("label") or (result.diagnosis.strip().splitlines() or [""])[0][:80] \
                or f"child of {action.node}"
            self.store.put_tree_node(TreeNode(id=action.child, parent_id=action.node, tree_id=self.tree_id,
                                              kind=self.kind, status="accepted" if result.accepted else "rejected",
                                              label=label, variant_dir=result.variant_dir, info=info))
            return
        assert isinstance(result, Evaluation)
        resolved = COUNTED.get(result.status)
        self.store.put_outcome(self.run_id, action.node, action.task, result.status, resolved, result.trajectory_id,
                               started, finished, seq=action.seq, charged=action.charged, info=result.info,
                               latency=result.latency, tokens=result.tokens)
        self.refresh_counts(sched, action.node)

    def refresh_counts(self, sched: Scheduler, node_id: str) -> None:
        """Keep the node record's own counts current for readers (the TUI); the rows stay the truth."""
        with self._lock:
            nodes = {n.id: n for n in self.store.tree(tree_id=self.tree_id, kind=self.kind) if n.id == node_id}
            node = nodes.get(node_id)
            if node is None:
                return
            s, f = sched.view(node_id).own
            if (node.successes, node.trials) != (s, s + f):
                node.successes, node.trials = s, s + f
                self.store.put_tree_node(node)

    # --- reading ----------------------------------------------------------------------------------------
    def load_history(self) -> list[tuple[Action, Expansion | Evaluation | None]]:
        """Stored decisions in seq order, each with its result (None: it was in flight)."""
        decisions = sorted((Action.from_dict(d) for _, d in self.store.documents(DECISION, run_id=self.run_id)),
                           key=lambda a: a.seq)
        outcomes: dict[int, dict[str, Any]] = {}
        for row in self.store.outcomes(run_id=self.run_id):
            if "seq" in row:
                outcomes[int(row["seq"])] = row
        nodes = {n.id: n for n in self.store.tree(tree_id=self.tree_id, kind=self.kind)}
        history: list[tuple[Action, Expansion | Evaluation | None]] = []
        for a in decisions:
            result: Expansion | Evaluation | None = None
            if a.kind == "evaluate" and a.seq in outcomes:
                row = outcomes[a.seq]
                result = Evaluation(status=row["status"], trajectory_id=row["trajectory_id"], info=row.get("info", {}),
                                    latency=row.get("latency", 0.0), tokens=row.get("tokens", 0))
            elif a.kind == "expand" and a.child in nodes and nodes[a.child].status in ("accepted", "rejected"):
                n = nodes[a.child]
                info = {k: v for k, v in n.info.items() if k not in ("seq", "reason", "diff", "diagnosis", "latency",
                                                                     "tokens", "started_at", "finished_at", "search",
                                                                     "expansion")}
                result = Expansion(accepted=n.status == "accepted", variant_dir=n.variant_dir,
                                   reason=n.info.get("reason", ""), diff=n.info.get("diff", ""),
                                   diagnosis=n.info.get("diagnosis", ""), info=info, tokens=n.info.get("tokens", 0))
            history.append((a, result))
        return history
