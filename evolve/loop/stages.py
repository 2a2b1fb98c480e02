"""One function per stage of a generation. Each is a resumable unit: it finds what an earlier (killed or stopped)
run of it already stored and does only the rest, through the resumable machinery it reuses:

- `warm_start` (generation 0): demonstrations -> `train_sft` (checkpointed) -> a `warm_start` node.
- `rollouts`: the champion on the training instances (all, or those the curriculum draws: `evolve.loop.curriculum`),
  k attempts each: `toolcall_rollouts` (toolcall) or `run_swe` (SWE suites: sandboxes, hidden-test grading, Ray when
  configured), in an ordinary run directory; then the curriculum is fed the attempts' groups.
- `evolution`: Agent-R's search (`InstanceSearch`) and SE-Agent's retries (`run_se_agent`) on the instances the
  champion failed; then the generation's training data (`loop:data`).
- `search`: the HGM scheduler over both kinds of child, journaled (`StoreJournal`), resumed from its decisions.
- `gate`: held-out scores of the best-belief node and the champion (each score a stored document), the paired
  test, the next champion.

A stop request (the TUI's stop, `RunStore.request_stop`) raises `Stopped` between units of work; the stage stays
`started` and the same command resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from agent.graph import Agent
from agent.policy.base import SamplingParams
from agent.variant import AgentVariant
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.loop import AgentRRunConfig, InstanceSearch
from evolve.agent_r.toolcall import unit_reward
from evolve.hgm.config import HGMConfig
from evolve.hgm.journal import StoreJournal
from evolve.hgm.scheduler import Scheduler
from evolve.hgm.search import run_search
from evolve.loop import cost, curriculum
from evolve.loop.context import LoopContext
from evolve.loop.data import GenerationData, refs
from evolve.loop.gate import compare, mean_interval
from evolve.loop.scheduler import KindChooser
from evolve.loop.state import DOC_DATA, DOC_HELD_OUT, GenerationRecord, StageRecord, gkey
from evolve.loop.world import LoopWorld
from evolve.run.episode import StopSignal, run_episode
from evolve.run.executor import make_executor, parse_executor
from evolve.run.runner import RunConfig, run_swe
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.run import run_se_agent
from evolve.store import RunStore
from evolve.toolcall_eval import toolcall_rollouts
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus, TreeNode
from rewards.toolrl import score
from sandbox import SandboxConfig
from tasks.toolcall.prompt import build_messages

log = logging.getLogger(__name__)


class Stopped(Exception):
    """A stop was requested; the stage in flight resumes on the next run."""


def _check_stop(ctx: LoopContext) -> None:
    if ctx.stop_requested():
        raise Stopped()


@contextmanager
def forward_stop(ctx: LoopContext, run_dir: Path, run_id: str) -> Iterator[None]:
    """While a sub-run (an `evolve run`, an `evolve se-agent`) runs in `run_dir`, a stop request of the loop is
    passed on to it (it polls its own store)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            if ctx.stop_requested():
                with RunStore(run_dir) as sub:
                    sub.request_stop(run_id, "the loop was asked to stop")
                return

    t = threading.Thread(target=watch, name="loop-stop-forward", daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(2.0)


def _progress(ctx: LoopContext, g: int, stage: str, done: int, total: int, what: str = "") -> None:
    ctx.state.progress(g, stage, done, total, what)
    ctx.progress(stage, "progress", {"generation": g, "done": done, "total": total, "what": what})


# --- generation 0 -------------------------------------------------------------------------------------------

def demonstrations(ctx: LoopContext) -> Path:
    """The warm start's data as a run directory: toolcall's reference answers of the training instances (origin
    `reference`), or the configured demonstration runs' trajectories."""

    run_dir = ctx.run_dir(0, "demonstrations")
    run_id = run_dir.name
    with RunStore(run_dir) as store:
        if not store.trajectory_ids(run_id=run_id):
            store.put_run(run_id, "demonstrations", {"source": "reference answers"}, status="finished")
            if ctx.kind == "toolcall":
                for inst in ctx.splits.demonstrations[:ctx.cfg.warm_start.limit]:
                    store.put_trajectory(Trajectory(
                        run_id=run_id, instance_id=inst.instance_id, origin="reference", prompt=build_messages(inst),
                        status=TrajectoryStatus.submitted, answer=inst.extra["answer"], finished_at=time.time(),
                        steps=[Step(index=0, response=Message(role="assistant", content=inst.extra["answer"]))]))
    return run_dir


def warm_start(ctx: LoopContext, rec: StageRecord) -> str:
    """Train the starting policy on demonstrations; the `warm_start` node's id."""
    from evolve.train.data import load_trajectories  # the trainer's modules load torch: only when training
    from evolve.train.modeling import LoraSettings
    from evolve.train.sft import SFTConfig, train_sft

    cfg, t = ctx.cfg, ctx.cfg.training
    node_id = f"{ctx.run_id}:warm"
    runs = [Path(r) for r in cfg.warm_start.runs] or [demonstrations(ctx)]
    items = load_trajectories(runs, min_reward=cfg.sft.min_reward)
    if cfg.warm_start.limit:
        items = items[:cfg.warm_start.limit]
    _progress(ctx, 0, "warm_start", 0, cfg.warm_start.steps, f"SFT on {len(items)} demonstrations")
    out = ctx.out / "train" / "g00-warm"
    with ctx.train_lock:
        version = train_sft(SFTConfig(policy=ctx.start_spec, runs_root=ctx.out,
                                      lora=LoraSettings(r=t.lora_r, alpha=2 * t.lora_r) if t.lora else None,
                                      lr=cfg.warm_start.lr or t.lr, max_steps=cfg.warm_start.steps, max_len=t.max_len,
                                      batch_size=t.batch_size, micro_batch_size=t.micro_batch_size, device=t.device,
                                      dtype=t.dtype, num_threads=t.num_threads, save_every=t.save_every, seed=t.seed,
                                      min_reward=None), runs, out, items=items,
                            should_stop=lambda: "stop requested" if ctx.stop_requested() else None)
    if version is None:  # a stop request (or Ctrl-C) ended it after a step, checkpointed: resumed with the loop
        raise Stopped()
    ctx.store.put_policy_version(version)
    c = cost.run_dir_cost(out)
    ctx.state.put_node(TreeNode(id=node_id, parent_id=ctx.start_node, tree_id=ctx.run_id, kind="loop",
                                label=f"warm start: SFT {cfg.warm_start.steps} steps on {len(items)} demonstrations",
                                status="accepted", variant_dir=ctx.start_variant,
                                info={"node_kind": "warm_start", "generation": 0, "policy": f"version:{version.id}",
                                      "parent_policy": ctx.start_spec,
                                      "training": {"version": version.id, "kind": "sft", "run_dir": str(out),
                                                   "items": len(items), "steps": cfg.warm_start.steps,
                                                   "train_seconds": c["train_seconds"], "metrics": version.metrics,
                                                   "data": {"demonstrations": [str(r) for r in runs]}}}))
    rec.result = {"node": node_id, "version": version.id, "demonstrations": len(items)}
    rec.cost = c
    return node_id


# --- stage 1 ------------------------------------------------------------------------------------------------

def rollouts(ctx: LoopContext, g: int, rec: StageRecord) -> None:
    """The champion on the training instances, `rollouts.attempts` scored attempts each."""
    cfg = ctx.cfg
    champion = ctx.state.champion_before(g, ctx.start_node)
    spec = ctx.node_spec(champion)
    run_dir = ctx.run_dir(g, "rollouts")
    run_id = run_dir.name
    policy = ctx.policies.get(spec)
    cur, train = curriculum.draw(ctx, g)
    if ctx.kind == "toolcall":
        with RunStore(run_dir) as store:
            store.put_run(run_id, "toolcall", {"suite": cfg.suite, "policy": policy.spec, "loop": ctx.run_id,
                                               "generation": g, "attempts": cfg.rollouts.attempts,
                                               "temperature": cfg.rollouts.temperature})
            finished = toolcall_rollouts(store, run_id, train, policy, attempts=cfg.rollouts.attempts,
                                         temperature=cfg.rollouts.temperature, seed=cfg.seed + g,
                                         batch_size=cfg.rollouts.batch_size, max_tokens=cfg.rollouts.max_tokens,
                                         label=policy.spec, should_stop=ctx.stop_requested,
                                         on_progress=lambda d, n: _progress(ctx, g, "rollouts", d, n, "attempts"))
            if not finished:
                raise Stopped()
            store.set_run_status(run_id, "finished")
    else:
        run_cfg = RunConfig(suite=cfg.suite, instances=[i.instance_id for i in train], dataset=cfg.dataset,
                            policy=policy.spec, variant=ctx.node_variant(champion), max_steps=cfg.rollouts.max_steps,
                            max_tokens_per_step=cfg.rollouts.max_tokens, sandbox=SandboxConfig(backend=cfg.sandbox),
                            workers=cfg.workers, judge=cfg.policies.judge, attempts=cfg.rollouts.attempts,
                            temperature=cfg.rollouts.temperature, executor=parse_executor(cfg.executor),
                            out=str(run_dir))
        judge = ctx.policies.get(cfg.policies.judge) if cfg.policies.judge else None
        done = {"n": 0}

        def on_event(iid: str, what: str) -> None:
            if what == "done":
                done["n"] += 1
                _progress(ctx, g, "rollouts", done["n"], len(train), "instances")

        with forward_stop(ctx, run_dir, run_id):
            report = run_swe(run_cfg, train, policy, on_event, judge_policy=judge)  # run_swe batches its episodes
        if report.get("stopped"):
            raise Stopped()
    rec.result = _rollout_summary(ctx, run_dir, train) | {"champion": champion, "policy": policy.spec}
    if cur is not None:
        rec.result["curriculum"] = curriculum.feed(ctx, g, cur, train, run_dir) | {
            "instances": [i.instance_id for i in train]}
    rec.cost = cost.run_dir_cost(run_dir)


def _rollout_summary(ctx: LoopContext, run_dir: Path, train: list[TaskInstance]) -> dict[str, Any]:
    """Counts, the mean reward, and the instances no attempt succeeded on (the evolution stage's work)."""
    from evolve.train.data import pick_reward  # loads torch (the trainer's data module)

    by_inst: dict[str, list[float]] = {}
    with RunStore(run_dir, readonly=True) as store:
        for row in store.trajectory_summaries():
            if row["status"] in ("running", "infra_error"):
                continue
            r = pick_reward(row["rewards"], None)
            if r is not None:
                by_inst.setdefault(row["instance_id"], []).append(r)
    rewards = [r for rs in by_inst.values() for r in rs]
    ok = ctx.cfg.sft.min_reward
    failed = [i.instance_id for i in train if not any(r >= ok for r in by_inst.get(i.instance_id, []))]
    return {"run_dir": str(run_dir), "trajectories": len(rewards), "instances": len(by_inst),
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
            "successes": sum(r >= ok for r in rewards), "failed": failed}


# --- stage 2 ------------------------------------------------------------------------------------------------

def evolution(ctx: LoopContext, g: int, rec: StageRecord) -> None:
    """Agent-R and SE-Agent on the failed training instances; then the generation's training data."""
    cfg = ctx.cfg
    champion = ctx.state.champion_before(g, ctx.start_node)
    spec = ctx.node_spec(champion)
    roll = ctx.state.stage(g, "rollouts")
    failed_ids = roll.result.get("failed", []) if roll else []
    by_id = {i.instance_id: i for i in ctx.splits.train}
    failed = [by_id[i] for i in failed_ids if i in by_id]
    result: dict[str, Any] = {"failed": len(failed)}
    sft_refs: list[list[Any]] = []
    costs = dict(cost.ZERO)
    ar = cfg.evolution.agent_r
    if ar.enabled and failed:
        splices, good = _agent_r(ctx, g, spec, champion, failed[:ar.limit])
        run_dir = ctx.run_dir(g, "agent-r")
        sft_refs += refs(run_dir, ctx.out, [(t, 1.0) for t in splices + good])
        result["agent_r"] = {"searched": len(failed[:ar.limit]), "splices": len(splices), "good": len(good)}
        costs = cost.add(costs, cost.run_dir_cost(run_dir))
    se = cfg.evolution.se_agent
    if se.enabled and failed and ctx.kind != "toolcall":
        resolved = _se_agent(ctx, g, spec, champion, failed[:se.limit])
        run_dir = ctx.run_dir(g, "se-agent")
        sft_refs += refs(run_dir, ctx.out, [(t, 1.0) for t in resolved])
        result["se_agent"] = {"retried": len(failed[:se.limit]), "resolved": len(resolved)}
        costs = cost.add(costs, cost.run_dir_cost(run_dir))
    # the generation's data: successes of the rollouts + the evolution's outputs (sft), every scored rollout (grpo)
    from evolve.train.data import pick_reward, trainable  # loads torch (the trainer's data module)

    roll_dir = ctx.run_dir(g, "rollouts")
    successes, scored, by_inst = [], [], {}
    with RunStore(roll_dir, readonly=True) as store:
        for traj in store.trajectories():
            if not trainable(traj):
                continue
            r = pick_reward(store.rewards(traj.id), None)
            if r is None:
                continue
            scored.append((traj.id, r))
            by_inst.setdefault(traj.instance_id, set()).add(r)
            if r >= cfg.sft.min_reward:
                successes.append((traj.id, r))
    sft = refs(roll_dir, ctx.out, successes) + sft_refs
    grpo = refs(roll_dir, ctx.out, scored)
    doc = {"generation": g, "sft": sft, "grpo": grpo,
           "counts": {"sft": {"trajectories": len(sft), "rollout_successes": len(successes),
                              "evolved": len(sft_refs)},
                      "grpo": {"trajectories": len(grpo), "groups": len(by_inst),
                               "groups_with_signal": sum(len(v) > 1 for v in by_inst.values())}}}
    ctx.store.put_document(DOC_DATA, gkey(g), doc, run_id=ctx.run_id)
    result["data"] = doc["counts"]
    rec.result, rec.cost = result, costs


def _agent_r(ctx: LoopContext, g: int, spec: str, champion: str, instances: list[TaskInstance]):
    cfg, ar = ctx.cfg, ctx.cfg.evolution.agent_r
    run_dir = ctx.run_dir(g, "agent-r")
    run_id = run_dir.name
    executor = parse_executor(cfg.executor) if ctx.kind != "toolcall" else parse_executor("local")
    ar_cfg = AgentRRunConfig(suite=cfg.suite, kind="toolcall" if ctx.kind == "toolcall" else "swe",
                             instances=[i.instance_id for i in instances], policy=spec, train_policy=spec,
                             variant=ctx.node_variant(champion) or AgentRRunConfig().variant,
                             max_steps=cfg.rollouts.max_steps, max_tokens_per_step=cfg.rollouts.max_tokens,
                             sandbox=SandboxConfig(backend=cfg.sandbox), workers=cfg.workers, executor=executor,
                             search=AgentRConfig(rollouts=ar.rollouts, n_gen=ar.n_gen, max_depth=ar.max_depth,
                                                 max_pairs=ar.max_pairs, alpha=ar.alpha, beta=ar.beta,
                                                 temperature=ar.temperature, seed=cfg.seed + g),
                             out=str(run_dir))
    policy = ctx.policies.get(spec)
    splices, good = [], []
    with RunStore(run_dir) as store, make_executor(executor, cfg.workers) as ex:
        store.put_run(run_id, "agent-r", ar_cfg.model_dump(mode="json"))
        searcher = InstanceSearch(ar_cfg, store, run_id, ex)
        for n, inst in enumerate(instances):
            _check_stop(ctx)
            done = searcher.search(inst, policy, run_id, g)
            more_splices, more_good = searcher.training_data(done)
            splices += more_splices
            good += more_good
            _progress(ctx, g, "evolution", n + 1, len(instances), "Agent-R instances")
        store.set_run_status(run_id, "finished")
    return [t.id for t in splices], [t.id for t in good]


def _se_agent(ctx: LoopContext, g: int, spec: str, champion: str, instances: list[TaskInstance]) -> list[str]:
    """SE-Agent's retries; the ids of the candidates the hidden tests resolved."""
    cfg, se = ctx.cfg, ctx.cfg.evolution.se_agent
    run_dir = ctx.run_dir(g, "se-agent")
    policy = ctx.policies.batched(spec, cfg.workers)  # parallel attempts share batched calls
    op_spec = cfg.policies.operator_policy
    op = ctx.policies.batched(op_spec, cfg.workers) if op_spec else policy
    se_cfg = SEAgentConfig(suite=cfg.suite, instances=[i.instance_id for i in instances], iterations=se.iterations,
                           pilots=se.pilots, operators=se.operators, policy=policy.spec,
                           operator_policy=op.spec if op_spec else None, variant=ctx.node_variant(champion),
                           max_steps=cfg.rollouts.max_steps, max_tokens_per_step=cfg.rollouts.max_tokens,
                           sandbox=SandboxConfig(backend=cfg.sandbox), workers=cfg.workers,
                           executor=parse_executor(cfg.executor), seed=cfg.seed + g, grade=True, out=str(run_dir))
    with forward_stop(ctx, run_dir, run_dir.name):
        report = run_se_agent(se_cfg, instances, policy, op)
    if report.get("stopped"):
        raise Stopped()
    with RunStore(run_dir, readonly=True) as store:
        return [tid for tid in store.trajectory_ids()
                if (r := store.test_report(tid)) is not None and r.resolved]


# --- stage 3 ------------------------------------------------------------------------------------------------

def kind_prior(ctx: LoopContext, g: int, kinds: list[str]) -> dict[str, tuple[float, float]]:
    """Per kind, the results of earlier generations' children of that kind (own outcomes; rejected: a failure)."""
    counts = {k: [0.0, 0.0] for k in kinds}
    for node in ctx.state.nodes():
        kind, gen = node.info.get("expansion"), node.info.get("generation")
        if kind not in counts or not isinstance(gen, int) or gen >= g:
            continue
        if node.status == "rejected":
            counts[kind][1] += 1
            continue
        for row in ctx.store.outcomes(run_id=ctx.search_id(gen), node_id=node.id):
            if row["status"] in ("pass", "fail", "timeout"):
                counts[kind][0 if row["status"] == "pass" else 1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def earlier_outcomes(ctx: LoopContext, g: int, node_id: str) -> list[tuple[str, str]]:
    """(task, status) of `node_id`'s evaluations in the searches of generations before `g`, oldest first."""
    rows: list[tuple[str, str]] = []
    for k in range(1, g):
        rows += [(r["task_id"], r["status"]) for r in ctx.store.outcomes(run_id=ctx.search_id(k), node_id=node_id)]
    return rows


def search(ctx: LoopContext, g: int, rec: StageRecord) -> None:
    """The HGM scheduler over code and weight children of the champion's clade, on the search tasks."""
    cfg, s = ctx.cfg, ctx.cfg.search
    champion = ctx.state.champion_before(g, ctx.start_node)
    doc = ctx.store.document(DOC_DATA, gkey(g)) or {}
    world = LoopWorld(ctx, g, champion, GenerationData(ctx.out, doc))
    kinds = [k for k in cfg.kinds() if not (k == "code" and ctx.kind == "toolcall")]
    hcfg = HGMConfig(budget=s.budget, alpha=s.alpha, initial_expansions=s.initial_expansions,
                     max_expansions=s.max_expansions, seed=cfg.seed * 1000 + g, root_eval=True,
                     root_eval_charged=False)
    search_id = ctx.search_id(g)
    journal = StoreJournal(ctx.store, search_id, kind="loop", tree_id=ctx.run_id)
    chooser = KindChooser(kinds, prior=kind_prior(ctx, g, kinds), prior_weight=s.kind_prior_weight)
    sched = Scheduler(hcfg, world.task_ids, world.root(), id_prefix=f"{search_id}:", root_id=champion,
                      on_decision=lambda a: journal.decided(sched, a), expansion_kind=chooser)
    sched.journal = journal  # type: ignore[attr-defined]
    sched.seed(champion, earlier_outcomes(ctx, g, champion))
    history = journal.load_history()
    if history:
        sched.restore(history)
    done = {"n": sched.summary()["reserved"]}

    def on_complete(action, result, t0, t1) -> None:
        if action.kind == "evaluate" and action.charged:
            done["n"] += 1
        _progress(ctx, g, "search", done["n"], s.budget, f"{action.kind} {action.node.rsplit(':', 1)[-1]}")

    try:
        run_search(sched, world, s.workers, should_stop=ctx.stop_requested, on_complete=on_complete)
    finally:
        world.close()
    if ctx.stop_requested():
        raise Stopped()
    best = sched.final_pick()
    nodes = [n for n in ctx.state.nodes() if n.info.get("search") == search_id]
    by_kind: dict[str, dict[str, int]] = {}
    for n in nodes:
        k = by_kind.setdefault(str(n.info.get("expansion")), {"accepted": 0, "rejected": 0})
        if n.status in k:
            k[n.status] += 1
    train_seconds = sum(float(n.info.get("training", {}).get("train_seconds", 0.0)) for n in nodes)
    c = cost.trajectories_cost(ctx.store, search_id)
    c["train_seconds"] = train_seconds
    c["train_tokens"] = sum(float(n.info.get("training", {}).get("tokens", 0.0)) for n in nodes)
    rec.result = {"best": best, "best_own": list(sched.stats.own(best)), "champion": champion,
                  "champion_own": list(sched.stats.own(champion)), "children": by_kind,
                  "kind_draws": [[p, k, {kk: list(v) for kk, v in c_.items()}] for p, k, c_ in chooser.draws],
                  **sched.summary()}
    rec.cost = c


# --- stage 4 ------------------------------------------------------------------------------------------------

def held_out_scores(ctx: LoopContext, node_id: str, g: int, stage: str = "gate") -> dict[str, dict[str, Any]]:
    """The node's held-out score per instance (documents `loop:held-out`/`NODE|INSTANCE`, made when missing)."""
    instances = ctx.splits.held_out
    have = {k.split("|", 1)[1]: d for k, d in ctx.store.documents(DOC_HELD_OUT, key_prefix=f"{node_id}|")}
    todo = [i for i in instances if i.instance_id not in have]
    if todo:
        spec = ctx.node_spec(node_id)
        policy = ctx.policies.get(spec) if ctx.kind == "toolcall" else ctx.policies.batched(spec, ctx.cfg.workers)
        if ctx.kind == "toolcall":
            _held_out_toolcall(ctx, node_id, policy, todo, have, g, stage)
        else:
            _held_out_swe(ctx, node_id, policy, todo, have, g, stage)
    return {i.instance_id: have[i.instance_id] for i in instances if i.instance_id in have}


def _held_out_toolcall(ctx, node_id, policy, todo, have, g, stage) -> None:
    cfg = ctx.cfg
    batch = cfg.rollouts.batch_size
    for start in range(0, len(todo), batch):
        _check_stop(ctx)
        part = todo[start:start + batch]
        prompts = [build_messages(i) for i in part]
        t = time.perf_counter()
        gens = policy.generate(prompts, SamplingParams(max_tokens=cfg.rollouts.max_tokens,
                                                       temperature=cfg.gate.temperature, seed=cfg.seed))
        per = (time.perf_counter() - t) / len(part)
        for inst, prompt, gen in zip(part, prompts, gens):
            s = score(gen.text, inst.extra["answer"])
            traj = Trajectory(run_id=ctx.held_out_run(), instance_id=inst.instance_id, policy=policy.spec,
                              prompt=prompt, status=TrajectoryStatus.submitted, answer=gen.text,
                              origin="loop:held-out", finished_at=time.time(),
                              steps=[Step(index=0, response=gen.message(), prompt_tokens=gen.prompt_tokens,
                                          completion_tokens=gen.completion_tokens, policy_seconds=per)])
            ctx.store.put_trajectory(traj)
            ctx.store.put_reward(traj.id, s.to_reward())
            doc = {"node": node_id, "instance_id": inst.instance_id, "score": s.total, "format": s.format,
                   "correctness": s.correctness, "exact": unit_reward(gen.text, inst.extra["answer"]) >= 1.0,
                   "trajectory_id": traj.id}
            ctx.store.put_document(DOC_HELD_OUT, f"{node_id}|{inst.instance_id}", doc, run_id=ctx.run_id)
            have[inst.instance_id] = doc
        _progress(ctx, g, stage, len(have), len(ctx.splits.held_out), f"held-out {node_id.rsplit(':', 1)[-1]}")


def _held_out_swe(ctx, node_id, policy, todo, have, g, stage) -> None:
    cfg = ctx.cfg
    variant = AgentVariant.load(ctx.node_variant(node_id))
    if cfg.rollouts.max_steps:
        variant.budget.max_steps = cfg.rollouts.max_steps
    variant.max_tokens_per_step = cfg.rollouts.max_tokens
    sandbox = SandboxConfig(backend=cfg.sandbox, run_id=ctx.run_id)
    stop = StopSignal()
    lock = threading.Lock()

    def one(inst: TaskInstance) -> None:
        if stop.is_set() or ctx.stop_requested():
            stop.request("stop requested")
            return
        traj = Trajectory(run_id=ctx.held_out_run(), instance_id=inst.instance_id, policy=policy.spec,
                          origin="loop:held-out")
        res = run_episode(inst, Agent(policy, variant), sandbox, ctx.store, ctx.held_out_run(), trajectory=traj,
                          stop=stop, grade_retries=1)
        if res.infra_error is not None or res.interrupted or res.report is None:
            return  # not the agent's result: no score, tried again when the node is next gated
        doc = {"node": node_id, "instance_id": inst.instance_id, "score": float(res.report.resolved),
               "trajectory_id": res.trajectory.id}
        ctx.store.put_document(DOC_HELD_OUT, f"{node_id}|{inst.instance_id}", doc, run_id=ctx.run_id)
        with lock:
            have[inst.instance_id] = doc
            _progress(ctx, g, stage, len(have), len(ctx.splits.held_out), f"held-out {node_id.rsplit(':', 1)[-1]}")

    with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="loop-held-out") as pool:
        list(pool.map(one, todo))
    _check_stop(ctx)


def held_out_summary(ctx: LoopContext, scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    vals = [d["score"] for d in scores.values()]
    out = mean_interval(vals, ctx.cfg.gate.alpha)
    if ctx.kind == "toolcall" and scores:
        out["format"] = sum(d["format"] for d in scores.values()) / len(scores)
        out["exact"] = sum(bool(d["exact"]) for d in scores.values()) / len(scores)
    return out


def gate(ctx: LoopContext, g: int, rec: StageRecord, candidate: str, champion: str) -> GenerationRecord:
    """Held-out scores of both, the paired test, the decision; the generation's record."""
    started = time.time()
    before = held_out_scores(ctx, champion, g)
    after = held_out_scores(ctx, candidate, g) if candidate != champion else before
    if candidate == champion:
        result = compare({k: v["score"] for k, v in before.items()}, {k: v["score"] for k, v in before.items()},
                         ctx.cfg.gate)
        result.accepted, result.reason = False, "the search's best-belief node is the champion itself"
    else:
        result = compare({k: v["score"] for k, v in before.items()}, {k: v["score"] for k, v in after.items()},
                         ctx.cfg.gate)
    out = candidate if result.accepted else champion
    cand_node = ctx.state.node(candidate)
    winner = {"node": candidate, "kind": cand_node.info.get("node_kind", "start"),
              "policy": cand_node.info.get("policy"), "label": cand_node.label}
    if "training" in cand_node.info:
        winner["training"] = {k: cand_node.info["training"].get(k) for k in ("version", "kind", "steps", "items",
                                                                            "run_dir")}
    if cand_node.info.get("diff"):
        winner["diff"] = cand_node.info["diff"]
    held = held_out_summary(ctx, after if result.accepted else before)
    rec.result = {"candidate": candidate, "champion": champion, "champion_out": out, **result.to_dict()}
    rec.cost = cost.trajectories_cost(ctx.store, ctx.held_out_run(), since=started)
    return GenerationRecord(generation=g, champion_in=champion, candidate=candidate, champion_out=out,
                            accepted=result.accepted, gate=result.to_dict(), held_out=held, winner=winner,
                            cost={})
