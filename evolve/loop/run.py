"""`run_loop`: the generations, stage after stage, each a resumable unit recorded in the loop's store.

generation 0 (when `warm_start.enabled`): warm_start -> gate (the warm-started node against the start node)
generation g >= 1: rollouts -> evolution -> search -> gate; the gate's champion starts generation g + 1.

A killed loop, run again with the same command, skips every stage marked done and re-enters the one it was in
(which itself resumes: stored attempts, searched instances, training checkpoints, journaled decisions and held-out
scores are reused). A stop request (the TUI's, or a first Ctrl-C) ends the loop after the work in flight; `LoopStopped` carries the
report. A second Ctrl-C interrupts at once (the run is marked `stopped` all the same).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from agent.policy.base import Policy
from agent.variant import DEFAULT_VARIANT, AgentVariant
from agent.variant_dir import copy_variant
from evolve.errors import ConfigError
from evolve.loop import stages
from evolve.loop.config import LoopConfig
from evolve.loop.context import LoopContext, Progress
from evolve.loop.cost import add
from evolve.loop.policies import Policies
from evolve.loop.report import loop_report
from evolve.loop.splits import resolve_splits
from evolve.loop.state import KIND, STAGES, GenerationRecord, LoopState
from evolve.run.run_lock import RunLock
from evolve.store import RunStore, check_run_dir
from evolve.train.errors import TrainingStopped
from evolve.train.versions import canonical_spec
from records import TreeNode
from tasks.registry import get_suite
from tasks.suite_images import ensure_suite_images

log = logging.getLogger(__name__)

FIXED = ("suite", "dataset", "variant", "splits", "seed", "rollouts", "curriculum", "evolution", "sft", "grpo", "code",
         "search", "gate", "policies", "training", "warm_start")
"""Settings a resumed loop must keep (more generations may be asked for): anything else would mix experiments."""


class LoopStopped(Exception):
    """A stop request ended the loop early; `report` is what it finished."""

    def __init__(self, report: dict[str, Any]):
        super().__init__("stopped")
        self.report = report


def _check_resume(store: RunStore, run_id: str, config: dict[str, Any]) -> None:
    old = next((r for r in store.runs() if r["id"] == run_id), None)
    if old is None:
        return
    if old["kind"] != KIND:
        raise ConfigError(f"{store.dir} holds an `evolve {old['kind']}` run, not a loop; give another --out")
    defaults = LoopConfig().model_dump(mode="json")  # a setting added since the run began: it ran with the default
    for key in FIXED:
        if old["config"].get(key, defaults.get(key)) != config.get(key):
            raise ConfigError(f"{store.dir} was run with another `{key}` setting; resume with the same settings "
                              f"(only --generations may grow), or give another --out")


def _start_node(ctx_store: RunStore, run_id: str, spec: str, variant: str) -> str:
    node_id = f"{run_id}:start"
    state = LoopState(ctx_store, run_id)
    if not any(n.id == node_id for n in state.nodes()):
        state.put_node(TreeNode(id=node_id, parent_id=None, tree_id=run_id, kind=KIND, label=f"start: {spec}",
                                status="accepted", variant_dir=variant,
                                info={"node_kind": "start", "generation": 0, "policy": spec}))
    return node_id


def _start_variant(cfg: LoopConfig, out: Path, kind: str) -> str:
    """The first node's agent variant, copied (with git) into the run directory once; '' for toolcall."""
    if kind == "toolcall":
        return ""
    dest = out / "variants" / "start"
    if not (dest / "variant.yaml").exists():
        AgentVariant.load(cfg.variant or DEFAULT_VARIANT)  # a bad variant is the user's, before anything runs
        copy_variant(cfg.variant or DEFAULT_VARIANT, dest, "the loop's first variant")
    return str(dest)


def run_loop(cfg: LoopConfig, out: Path, *, load_policy: Callable[[str], Policy] | None = None,
             progress: Progress | None = None, suite: Any = None) -> dict[str, Any]:
    """Run (or resume) the loop in `out`; returns the report (`report.json` too). `load_policy(spec)` loads specs
    (default: `agent.policy.load_policy` with `out` as the runs root); `progress(stage, event, detail)` sees the work."""
    out = Path(out)
    suite = suite or get_suite(cfg.suite, **({"dataset": cfg.dataset} if cfg.dataset else {}))
    kind = "toolcall" if suite.kind == "toolcall" else "swe"
    if kind == "toolcall" and cfg.code.enabled and not (cfg.sft.enabled or cfg.grpo.enabled):
        raise ConfigError("toolcall has no agent variant to edit: enable sft or grpo (code children are SWE-only)")
    splits = resolve_splits(suite, cfg.splits)
    run_id = out.resolve().name
    check_run_dir(out)
    with RunLock(out, f"evolve loop {cfg.suite}"), RunStore(out) as store:
        spec = cfg.policies.policy
        if spec.startswith("version:"):
            spec = canonical_spec(spec, out)  # recorded (and compared on resume) as the version's id
        config = cfg.model_dump(mode="json") | {"policies": cfg.policies.model_dump(mode="json") | {"policy": spec}}
        _check_resume(store, run_id, config)
        variant = _start_variant(cfg, out, kind)
        store.put_run(run_id, KIND, config | {"splits_ids": splits.ids(), "start_spec": spec})
        if kind == "swe" and cfg.sandbox == "docker":
            ensure_suite_images(suite, splits.train + splits.search + splits.held_out)
        policies = Policies(cfg.policies, out, load=load_policy)
        ctx = LoopContext(cfg=cfg, out=out, run_id=run_id, store=store, splits=splits, policies=policies, kind=kind,
                          start_node=_start_node(store, run_id, spec, variant), start_spec=spec,
                          start_variant=variant, progress=progress or (lambda stage, event, detail: None))
        try:
            with ctx.ctrl_c:
                _generations(ctx)
        except (stages.Stopped, TrainingStopped):
            store.set_run_status(run_id, "stopped")
            store.log_event("loop:stopped", run_id=run_id)
            raise LoopStopped(loop_report(ctx, stopped=True)) from None
        except KeyboardInterrupt:  # a second Ctrl-C: the stage in flight is redone (from its checkpoints) on resume
            store.set_run_status(run_id, "stopped")
            store.log_event("loop:interrupted", run_id=run_id)
            raise
        finally:
            policies.close()
        store.set_run_status(run_id, "finished")
        return loop_report(ctx)


def _generations(ctx: LoopContext) -> None:
    cfg, state = ctx.cfg, ctx.state
    if cfg.warm_start.enabled and state.generation(0) is None:
        _warm_start(ctx)
    for g in range(1, cfg.generations + 1):
        if state.generation(g) is not None:
            continue
        stages._check_stop(ctx)
        champion = state.champion_before(g, ctx.start_node)
        ctx.progress("generation", "start", {"generation": g, "champion": champion})
        for name in STAGES[:-1]:
            if state.stage_done(g, name):
                continue
            stages._check_stop(ctx)
            with state.running(g, name) as rec, _timed(ctx, rec):
                getattr(stages, name)(ctx, g, rec)
        stages._check_stop(ctx)
        search = state.stage(g, "search")
        candidate = search.result["best"] if search else champion
        with state.running(g, "gate") as rec, _timed(ctx, rec):
            record = stages.gate(ctx, g, rec, candidate, champion)
        _finish(ctx, g, record)


@contextmanager
def _timed(ctx: LoopContext, rec) -> Iterator[None]:
    """The stage's sampling and model-loading seconds, measured at the policies (a batch counts once), into its
    cost: `policy_seconds` and `load_seconds` (of the attempt that finished it)."""
    before = ctx.policies.clock.snapshot()
    yield
    after = ctx.policies.clock.snapshot()
    rec.cost = dict(rec.cost) | {"policy_seconds": after["sampling"] - before["sampling"],
                                 "load_seconds": after["loading"] - before["loading"]}


def _warm_start(ctx: LoopContext) -> None:
    state = ctx.state
    if not state.stage_done(0, "warm_start"):
        with state.running(0, "warm_start") as rec, _timed(ctx, rec):
            stages.warm_start(ctx, rec)
    warm = state.stage(0, "warm_start").result["node"]
    with state.running(0, "gate") as rec, _timed(ctx, rec):
        record = stages.gate(ctx, 0, rec, warm, ctx.start_node)
        if not ctx.cfg.warm_start.gate:
            record.champion_out, record.accepted = warm, True
            record.gate["reason"] = "warm_start.gate is off: adopted"
            rec.result["champion_out"] = warm
    _finish(ctx, 0, record)


def _finish(ctx: LoopContext, g: int, record: GenerationRecord) -> None:
    """Sum the generation's stage costs into its record, store it, mark the champion on its node."""
    total: dict[str, float] = {}
    for name in ("warm_start",) + STAGES:
        rec = ctx.state.stage(g, name)
        if rec is None:
            continue
        total = add(total, rec.cost)
        total = add(total, {"seconds": rec.seconds, "cpu_seconds": rec.cpu_seconds})
    gpu = ctx.cfg.training.device.startswith("cuda")
    total["gpu_seconds"] = total.get("train_seconds", 0.0) if gpu else 0.0
    record.cost = total
    ctx.state.put_generation(record)
    node = ctx.state.node(record.champion_out)
    node.info = dict(node.info) | {"champion_of": sorted(set(node.info.get("champion_of", [])) | {g})}
    ctx.state.put_node(node)
    ctx.store.log_event("loop:generation", run_id=ctx.run_id, generation=g, champion=record.champion_out,
                        accepted=record.accepted)
    ctx.progress("generation", "done", {"generation": g, "record": record.model_dump()})
    log.info("generation %d: champion %s (%s)", g, record.champion_out, record.gate.get("reason"))
