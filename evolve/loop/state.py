"""The loop's records in its run store, and how a killed loop finds where it was.

Layout of `--out DIR` (every directory below is an ordinary run directory that `evolve tui`, `evolve trajectories`
and `evolve train` read):

    DIR/evolve.db                     the loop store: run (kind `loop`), the tree, generations, stages, the search's
                                      decisions and outcomes, held-out scores, copies of every policy version
    DIR/runs/gNN-rollouts/            stage 1: an `evolve run` directory (k attempts per training instance)
    DIR/runs/gNN-agent-r/             stage 2: Agent-R's search store (splices, good paths)
    DIR/runs/gNN-se-agent/            stage 2: an `evolve se-agent` directory (SWE suites)
    DIR/runs/g00-demonstrations/      generation 0: the warm start's demonstrations
    DIR/train/gNN-CHILD/              a weight child's training (`TrainSession`: checkpoints, final weights, version)
    DIR/variants/CHILD/               a code child's agent variant (git), as `evolve hgm` keeps them

Records in the loop store (the TUI's Loop view reads these; all JSON, keyed as shown):

- run `RUN` of kind `loop`: the config (`LoopConfig`), the splits' ids, the resolved starting policy.
- `TreeNode(kind="loop", tree_id=RUN)`: one per node, both kinds. `info.node_kind` is `start`, `warm_start`,
  `code`, `sft` or `grpo`; `info.policy` the policy spec the node acts with (`version:ID` for trained weights);
  `variant_dir` its agent variant; `info.generation`; weight children carry `info.training` (version id, steps,
  data counts, seconds), code children `info.diff`; `status` is `expanding`, `accepted` or `rejected` (reason in
  `info.reason`); `successes`/`trials` cache the node's own search outcomes of its generation.
- document `loop:generation`/`gNN`: `GenerationRecord` (champion in and out, the candidate, the gate's numbers,
  what won, the cost), written when the generation's gate is done; generation 0 is the warm start.
- document `loop:stage`/`gNN/STAGE`: `StageRecord` (status `started` -> `done`, times, CPU seconds, result,
  cost), STAGE in `warm_start`, `rollouts`, `evolution`, `search`, `gate`. The stage now running is the one
  `started` and not `done`; `progress` in it is updated as work finishes (done / total).
- document `loop:held-out`/`NODE|INSTANCE`: one held-out score of a node (reused whenever that node is gated).
- document `loop:data`/`gNN`: the generation's training data (trajectory ids by use).
- HGM's `hgm:decision` documents and outcome rows under the search id `RUN:gNN`.
"""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import BaseModel, Field

from evolve.store import RunStore
from records import TreeNode

KIND = "loop"
STAGES = ("rollouts", "evolution", "search", "gate")
"""The stages of generations 1.. in order (generation 0 has `warm_start` and `gate`)."""
DOC_STAGE, DOC_GENERATION, DOC_HELD_OUT, DOC_DATA = "loop:stage", "loop:generation", "loop:held-out", "loop:data"


def gkey(g: int) -> str:
    return f"g{g:02d}"


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (user + system)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class StageRecord(BaseModel):
    """One stage of one generation."""

    generation: int
    """Generation number (0: the warm start)."""
    stage: str
    """`warm_start`, `rollouts`, `evolution`, `search` or `gate`."""
    status: str = "started"
    """`started` (running, or killed while running), `done`, or `skipped` (switched off)."""
    started_at: float = Field(default_factory=time.time)
    """Unix time of the first start."""
    finished_at: float | None = None
    """Unix time it was done."""
    seconds: float = 0.0
    """Wall seconds over every attempt (a resumed stage adds its second run)."""
    cpu_seconds: float = 0.0
    """CPU seconds of this process (and its children) over every attempt."""
    attempts: int = 0
    """Times the stage was started (more than 1: it was resumed after a kill or stop)."""
    progress: dict[str, Any] = Field(default_factory=dict)
    """What is done of it so far (`done`, `total`, `what`), for a live view."""
    result: dict[str, Any] = Field(default_factory=dict)
    """The stage's summary (counts, ids, the data it made, the search's best node, the gate's decision)."""
    cost: dict[str, float] = Field(default_factory=dict)
    """tokens, policy_seconds (sampling), train_seconds, sandbox_seconds (tool time in sandboxes)."""


class GenerationRecord(BaseModel):
    """A finished generation: what the gate decided and what it cost."""

    generation: int
    champion_in: str
    """The node that started the generation."""
    candidate: str
    """The search's best-belief node (1% quantile of its own outcomes), gated against `champion_in`."""
    champion_out: str
    """The next generation's champion (`candidate` when the gate accepted it)."""
    accepted: bool
    """The gate replaced the champion."""
    gate: dict[str, Any] = Field(default_factory=dict)
    """The paired comparison (`gate.GateResult`): n, means, difference, interval, p-values, test, reason."""
    held_out: dict[str, Any] = Field(default_factory=dict)
    """The champion-out's held-out score: mean with its interval (and ToolRL's format and exact rates)."""
    winner: dict[str, Any] = Field(default_factory=dict)
    """What the candidate changed: its kind and the training run (version, data) or the diff."""
    cost: dict[str, float] = Field(default_factory=dict)
    """Summed over the generation's stages: seconds, cpu_seconds, gpu_seconds, tokens, policy_seconds,
    train_seconds, sandbox_seconds."""
    finished_at: float = Field(default_factory=time.time)


class LoopState:
    """The loop's records over one store (thread-safe through the store)."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    # --- nodes ------------------------------------------------------------------------------------------
    def nodes(self) -> list[TreeNode]:
        return self.store.tree(tree_id=self.run_id, kind=KIND)

    def node(self, node_id: str) -> TreeNode:
        for n in self.nodes():
            if n.id == node_id:
                return n
        raise KeyError(f"no loop node {node_id!r}")

    def put_node(self, node: TreeNode) -> None:
        self.store.put_tree_node(node)

    # --- stages -----------------------------------------------------------------------------------------
    def stage(self, g: int, name: str) -> StageRecord | None:
        doc = self.store.document(DOC_STAGE, f"{gkey(g)}/{name}")
        return StageRecord.model_validate(doc) if doc else None

    def stage_done(self, g: int, name: str) -> bool:
        rec = self.stage(g, name)
        return rec is not None and rec.status in ("done", "skipped")

    def put_stage(self, rec: StageRecord) -> None:
        self.store.put_document(DOC_STAGE, f"{gkey(rec.generation)}/{rec.stage}", rec, run_id=self.run_id)

    def progress(self, g: int, name: str, done: int, total: int, what: str = "") -> None:
        rec = self.stage(g, name)
        if rec is not None and rec.status == "started":
            rec.progress = {"done": done, "total": total, "what": what, "at": time.time()}
            self.put_stage(rec)

    @contextmanager
    def running(self, g: int, name: str) -> Iterator[StageRecord]:
        """Mark the stage started (or started again), time it, and mark it done when the block ends normally;
        a kill or an exception leaves it `started`, so the next run enters it again."""
        rec = self.stage(g, name) or StageRecord(generation=g, stage=name)
        rec.status, rec.attempts = "started", rec.attempts + 1
        self.put_stage(rec)
        self.store.log_event("loop:stage", run_id=self.run_id, generation=g, stage=name, status="started")
        t0, c0 = time.time(), cpu_seconds()
        try:
            yield rec
        except BaseException:
            latest = self.stage(g, name) or rec
            latest.seconds += time.time() - t0
            latest.cpu_seconds += cpu_seconds() - c0
            self.put_stage(latest)
            raise
        latest = self.stage(g, name) or rec
        latest.result, latest.cost = rec.result, rec.cost
        latest.status, latest.finished_at = "done", time.time()
        latest.seconds += time.time() - t0
        latest.cpu_seconds += cpu_seconds() - c0
        self.put_stage(latest)
        self.store.log_event("loop:stage", run_id=self.run_id, generation=g, stage=name, status="done")

    def skip(self, g: int, name: str, why: str) -> None:
        if not self.stage_done(g, name):
            self.put_stage(StageRecord(generation=g, stage=name, status="skipped", finished_at=time.time(),
                                       result={"skipped": why}))

    # --- generations ------------------------------------------------------------------------------------
    def generation(self, g: int) -> GenerationRecord | None:
        doc = self.store.document(DOC_GENERATION, gkey(g))
        return GenerationRecord.model_validate(doc) if doc else None

    def generations(self) -> list[GenerationRecord]:
        return sorted((GenerationRecord.model_validate(d) for _, d in self.store.documents(DOC_GENERATION,
                                                                                            run_id=self.run_id)),
                      key=lambda r: r.generation)

    def put_generation(self, rec: GenerationRecord) -> None:
        self.store.put_document(DOC_GENERATION, gkey(rec.generation), rec, run_id=self.run_id)

    def champion_before(self, g: int, start: str) -> str:
        """The champion generation `g` starts from: the last finished generation's champion, else `start`."""
        done = [r for r in self.generations() if r.generation < g]
        return done[-1].champion_out if done else start
