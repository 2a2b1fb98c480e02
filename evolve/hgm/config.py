"""The search's settings (one pydantic model shared by the scheduler, the CLI and the bench)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field


class HGMConfig(BaseModel):
    """How the tree is searched. Defaults follow the HGM paper (not its released code, see the anchors)."""

    budget: int = Field(default=800, ge=1)
    """Evaluations (single (agent, task) episodes) the search may start; reserved when decided."""
    alpha: float = Field(default=0.6, gt=0, le=1)
    """Widening exponent: expand when N^alpha >= non-root nodes + expansions in flight."""
    tau_schedule: bool = True
    """Cool Thompson sampling with tau = (B / (B - n))^tau_exponent (the paper used it in every run)."""
    tau_exponent: float = Field(default=1.0, ge=0)
    """Exponent of the cooling schedule."""
    initial_expansions: int = Field(default=5, ge=0)
    """Expansions of the root issued before the widening rule takes over."""
    root_eval: bool = True
    """Evaluate the root on every task first (so children are compared against a firm baseline)."""
    root_eval_charged: bool = False
    """Whether the root's evaluations count against `budget` (the released code does not charge them)."""
    shared_task_order: bool = True
    """Every node draws its next task from one fixed permutation (common random numbers)."""
    random_task_prob: float = Field(default=0.0, ge=0, le=1)
    """Probability of a uniformly random unseen task instead of the shared order (the released code: 1.0)."""
    expansion_rule: Literal["hgm", "greedy", "pseudo", "dgm"] = "hgm"
    """Parent choice: clade Thompson sampling (hgm), best own mean (greedy), the released code's first
    10k-pseudo-count estimator (pseudo), or DGM's sigmoid/children rule (dgm)."""
    loop: Literal["hgm", "dgm"] = "hgm"
    """`hgm`: decoupled expand/evaluate with widening; `dgm`: always expand, then evaluate each child in stages."""
    final_pick: Literal["quantile", "mean"] = "quantile"
    """Final agent: best `quantile` of Beta(1+s, 1+f) over own outcomes (HGM) or best raw mean (DGM)."""
    quantile: float = Field(default=0.01, gt=0, lt=1)
    """The lower quantile used by the `quantile` pick (the paper's epsilon = 1 percent)."""
    pseudo_count: float = Field(default=10_000.0, ge=0)
    """Pseudo-observations at the node's own mean used by the `pseudo` estimator."""
    dgm_method: Literal["random", "score_prop", "score_child_prop", "best"] = "score_child_prop"
    """DGM parent-choice method (all documented ones are accepted)."""
    dgm_stages: list[int] = Field(default_factory=lambda: [10, 50])
    """DGM staged evaluation: tasks per stage; a child moves on when its pass rate >= `dgm_threshold`."""
    dgm_threshold: float = Field(default=0.4, ge=0, le=1)
    """Pass rate over the stages so far needed to get the next stage."""
    ordered_release: bool = True
    """Count a node's outcomes in the order its tasks were given, holding ones that finish early; removes the
    'easy tasks return first' bias of asynchronous workers (the HGM paper notes it and leaves it)."""
    count_rejected_in_widening: bool = True
    """A rejected child counts as a node for the widening rule (each attempt costs one expansion), so a meta
    agent that keeps failing cannot spin without evaluations."""
    max_infra_retries: int = Field(default=2, ge=0)
    """Infrastructure errors on one (node, task) before that task is dropped for the node."""
    max_expansions: Optional[int] = Field(default=None, ge=1)
    """Most expansion attempts (None: `budget`). Rejected children spend no evaluation, so without a cap a
    meta-agent that always fails could keep expanding once no node has tasks left (or in DGM's loop)."""
    max_infra_errors: int = Field(default=200, ge=1)
    """Infrastructure errors in all before the search stops (they are refunded, so a broken sandbox would
    otherwise retry for ever); the run can be resumed once the cause is fixed."""
    max_seconds: Optional[float] = Field(default=None, gt=0)
    """Stop deciding after this many seconds of run time (None: no limit)."""
    max_tokens: Optional[int] = Field(default=None, gt=0)
    """Stop deciding once the policies used this many tokens (None: no limit)."""
    seed: int = 0
    """Seed of every random choice (task order, Thompson draws; decision k uses the stream (seed, k))."""
