"""One HGM scheduler over nodes of every kind, and the learned choice of each expansion's kind.

The search of generation g is `evolve.hgm.scheduler.Scheduler` itself, rooted at the champion's node: clade-
metaproductivity (Thompson sampling on clade counts) picks the node to expand, Thompson sampling on own counts
the node to evaluate, the widening rule when to expand, the 1% quantile the best-belief node. What the loop adds
is `KindChooser`, the scheduler's `expansion_kind` hook: once a parent is picked, which kind of child it gets
(`code`: the meta-agent edits its variant; `sft` / `grpo`: new weights from the generation's data) is drawn by
Thompson sampling over the kinds, each kind's Beta posterior counting the results of the children of that kind:
a child's own evaluations (successes and failures on the search tasks), and one failure for a child that was
rejected (an edit that did not validate, a training that learned nothing). The counts are nested clades: the
children in the parent's clade, plus those in its parent's clade, and so on up to the root, so evidence close to
the parent counts once per level it shares with it (a leaf, whose own clade has no children yet, learns from its
ancestors' clades). Children of earlier generations enter as a prior, weighted by `kind_prior_weight`. So a kind
that keeps paying gets the expansions, and the choice is learned, not a fixed alternation; a kind never tried
keeps the prior's spread.
"""

from __future__ import annotations

import numpy as np

from evolve.hgm.policy import thompson_pick
from evolve.hgm.scheduler import Scheduler


def clade(sched: Scheduler, node_id: str) -> list[str]:
    """`node_id` and every node below it (accepted, rejected or in flight)."""
    kids: dict[str, list[str]] = {}
    for n in sched.nodes.values():
        if n.parent_id is not None:
            kids.setdefault(n.parent_id, []).append(n.id)
    out, todo = [], [node_id]
    while todo:
        cur = todo.pop()
        out.append(cur)
        todo.extend(kids.get(cur, []))
    return out


def kind_counts(sched: Scheduler, parent: str, kinds: list[str]) -> dict[str, tuple[float, float]]:
    """(successes, failures) per kind over the children of that kind in `parent`'s clade (see the module
    docstring); children still being made count nothing yet."""
    counts = {k: [0.0, 0.0] for k in kinds}
    for nid in clade(sched, parent):
        n = sched.nodes[nid]
        kind = n.info.get("expansion")
        if nid == parent or kind not in counts:
            continue
        if n.status == "rejected":
            counts[kind][1] += 1
        elif n.status == "accepted" and nid in sched.stats.nodes():
            s, f = sched.stats.own(nid)
            counts[kind][0] += s
            counts[kind][1] += f
    return {k: (v[0], v[1]) for k, v in counts.items()}


class KindChooser:
    """The `expansion_kind` hook: Thompson sampling over the enabled kinds (see the module docstring)."""

    def __init__(self, kinds: list[str], prior: dict[str, tuple[float, float]] | None = None,
                 prior_weight: float = 0.5):
        if not kinds:
            raise ValueError("no expansion kind is enabled")
        self.kinds = list(kinds)
        self.prior = {k: (prior or {}).get(k, (0.0, 0.0)) for k in self.kinds}
        self.prior_weight = prior_weight
        self.draws: list[tuple[str, str, dict[str, tuple[float, float]]]] = []
        """(parent, chosen kind, the counts it was drawn from), for inspection and tests."""

    def counts(self, sched: Scheduler, parent: str) -> dict[str, tuple[float, float]]:
        """Nested clade counts of `parent` (see the module docstring) plus the weighted prior."""
        w = self.prior_weight
        total = {k: [w * self.prior[k][0], w * self.prior[k][1]] for k in self.kinds}
        cur: str | None = parent
        while cur is not None:
            for k, (s, f) in kind_counts(sched, cur, self.kinds).items():
                total[k][0] += s
                total[k][1] += f
            cur = sched.nodes[cur].parent_id
        return {k: (v[0], v[1]) for k, v in total.items()}

    def __call__(self, sched: Scheduler, parent: str, rng: np.random.Generator) -> str:
        if len(self.kinds) == 1:
            return self.kinds[0]
        counts = self.counts(sched, parent)
        kind = self.kinds[thompson_pick(rng, [counts[k] for k in self.kinds])]
        self.draws.append((parent, kind, counts))
        return kind
