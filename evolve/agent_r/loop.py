"""`evolve agent-r SUITE`: Agent-R's iterations. Each iteration searches every training instance with the
CURRENT policy version (MCTS, pairs, verifier, splices, replay check), exports the kept revision trajectories and
the good paths (`it<K>/data`, a run store `evolve train sft` reads), fine-tunes with the existing trainer
(`it<K>/sft`, a new policy version), and evaluates the new version on held-out instances (success, revision
ability, loops). Iteration 0's evaluation is the starting policy's.

Everything goes to the run store at `--out` (`put_run(kind="agent-r")`); a rerun resumes: searched instances
(`agent-r:instance` documents), finished trainings (their `TrainSession`) and evaluations (`agent-r:eval`) are
reused. A stop request (`store.request_stop`, the TUI's stop) is honoured between instances and stages and after
the SFT's step in flight; Ctrl-C likewise (during the SFT after its step, elsewhere at once): the run is `stopped`
and the report says why (`stopped`).
The SWE search's branches (sandbox replays and their grading) run on the run's one executor (`--executor`:
threads here, or Ray tasks); their records come back to this process, the store's one writer.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from agent.policy import DEFAULT_POLICY
from agent.variant import DEFAULT_VARIANT, AgentVariant, with_undo
from evolve.agent_r.build import build_instance
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.evaluate import evaluate
from evolve.agent_r.export import export_sft_data
from evolve.agent_r.swe import SweWorld
from evolve.agent_r.toolcall import ToolcallWorld
from evolve.agent_r.toolcall_evaluate import evaluate_toolcall
from evolve.agent_r.verifier import policy_ask
from evolve.errors import ConfigError
from evolve.run.executor import ExecutorConfig, make_executor
from evolve.store import RunStore
from records import TaskInstance, Trajectory
from sandbox import SandboxConfig, prune_orphans
from tasks.toolcall.prompt import build_messages

log = logging.getLogger(__name__)


class AgentRRunConfig(BaseModel):
    """One `evolve agent-r` run."""

    model_config = ConfigDict(extra="forbid")

    suite: str = "bundled"
    """Suite to search: a SWE suite (bundled, swe-bench-*) or `toolcall`."""
    kind: Literal["swe", "toolcall"] = "swe"
    """The suite's kind, which picks the world: `swe` (the agent in sandboxes, rewarded by grading with the hidden
    tests) or `toolcall` (one answer per episode, rewarded by ToolRL's reward)."""
    instances: list[str] = Field(default_factory=list)
    """Instances searched for training data (empty: the suite's, cut to `limit`, minus the held-out ones)."""
    held_out: list[str] = Field(default_factory=list)
    """Instances used only for evaluation, never searched."""
    policy: str = DEFAULT_POLICY
    """Policy that samples (and verifies) in iteration 1; later iterations use the version the last trained."""
    train_policy: str = "hf:gemma3-270m"
    """Weights iteration 1 fine-tunes (the transformers copy of `policy`'s model)."""
    variant: str = str(DEFAULT_VARIANT)
    """Agent variant directory (`undo` is added to its tools where it lacks it: revision turns call it)."""
    max_steps: Optional[int] = Field(default=None, ge=1)
    """Step budget of evaluation episodes (default: the variant's)."""
    max_tokens_per_step: Optional[int] = Field(default=None, ge=1)
    """Tokens per policy call (default: the variant's; 256 for toolcall)."""
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    """How sandboxes start."""
    workers: int = Field(default=2, ge=1)
    """Branches of one expansion executed in parallel (with `local`; on Ray the cluster's CPUs bound them)."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """Where the SWE search's branch episodes, their grading and the splices' replays run: threads here
    (`local`) or tasks on a Ray cluster (`ray`). Sampling, the verifier, SFT and the held-out evaluation stay
    here; the toolcall world has no sandbox work and runs only `local`."""
    iterations: int = Field(default=1, ge=1)
    """Search -> data -> SFT -> new version rounds."""
    search: AgentRConfig = Field(default_factory=AgentRConfig)
    """MCTS, pairing, verifier and splice settings."""
    sft_steps: int = Field(default=20, ge=1)
    """Optimiser steps of each iteration's SFT."""
    sft_lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate of each iteration's SFT."""
    full: bool = False
    """Full fine-tuning instead of a LoRA adapter."""
    device: str = "auto"
    """Training device (`auto`, `cpu`, `cuda`, ...)."""
    max_len: int = Field(default=4096, ge=64)
    """Most tokens of one training sequence."""
    evaluate: bool = True
    """Evaluate each version on the held-out instances."""
    out: str = "runs/agent-r"
    """Run directory (the store, data and trained versions); rerunning with it resumes."""


def _trajectories(store: RunStore, ids: list[str]) -> list[Trajectory]:
    return [store.get_trajectory(i) for i in ids]


def prepared_variant(cfg: AgentRRunConfig) -> AgentVariant | None:
    """The variant the SWE world acts with (budget overrides applied, `undo` added); None for toolcall."""
    if cfg.kind == "toolcall":
        return None
    variant = AgentVariant.load(cfg.variant)
    if cfg.max_steps is not None:
        variant.budget.max_steps = cfg.max_steps
    if cfg.max_tokens_per_step is not None:
        variant.max_tokens_per_step = cfg.max_tokens_per_step
    return with_undo(variant)  # revision turns are undo calls: the agent (and its evaluation) offers it


class InstanceSearch:
    """Agent-R's search of one instance with a given policy (MCTS, pairs, verifier, splices, replay check), stored
    under a tree id and marked done with an `agent-r:instance` document, so a resumed caller never searches it
    again. Used by `run_agent_r`'s iterations and by `evolve loop`'s trajectory-evolution stage."""

    def __init__(self, cfg: AgentRRunConfig, store: RunStore, run_id: str, executor: Any,
                 variant: AgentVariant | None = None):
        self.cfg, self.store, self.run_id, self.executor = cfg, store, run_id, executor
        self.toolcall = cfg.kind == "toolcall"
        self.variant = variant if variant is not None or self.toolcall else prepared_variant(cfg)
        self.sandbox_cfg = cfg.sandbox.model_copy(update={"run_id": run_id})

    def world(self, inst: TaskInstance, policy: Any, it_run: str, k: int):
        cfg = self.cfg
        if self.toolcall:
            return ToolcallWorld(inst, policy, build_messages, temperature=cfg.search.temperature,
                                 max_tokens=cfg.max_tokens_per_step or 256, seed=cfg.search.seed + 1000 * k,
                                 store=self.store, run_id=it_run)
        return SweWorld(inst, policy, self.variant, self.sandbox_cfg, self.store, it_run,
                        temperature=cfg.search.temperature, workers=cfg.workers, seed=cfg.search.seed,
                        executor=self.executor)

    def search(self, inst: TaskInstance, policy: Any, it_run: str, k: int,
               say: Callable[[str], None] = lambda text: None) -> dict:
        """The instance's `agent-r:instance` summary (splice and good-path ids among it), searching it first
        unless a finished search is stored."""
        cfg, store = self.cfg, self.store
        tree_id = f"{it_run}/{inst.instance_id}"
        done = store.document("agent-r:instance", tree_id)
        if done is not None:
            return done
        _abandon(store, tree_id)
        say(f"iteration {k}: searching {inst.instance_id}")
        store.log_event("agent-r:search", run_id=self.run_id, iteration=k, instance_id=inst.instance_id)
        if not self.toolcall:  # containers left by a killed earlier driver or a killed Ray worker
            prune_orphans(self.run_id, docker=self.sandbox_cfg.backend == "docker")
        world = self.world(inst, policy, it_run, k)
        ask = policy_ask(policy, cfg.search.verifier_max_tokens, cfg.search.verifier_temperature, cfg.search.seed)
        build_instance(world, cfg.search, ask, instance_id=inst.instance_id, store=store, run_id=it_run,
                       tree_id=tree_id, rng=random.Random(cfg.search.seed + k), path_trajectory=world.path_trajectory)
        return store.document("agent-r:instance", tree_id)

    def training_data(self, done: dict) -> tuple[list[Trajectory], list[Trajectory]]:
        """(revision splices, good paths with every turn learned) of a finished instance search."""
        splices = _trajectories(self.store, done["splice_ids"])
        good = []
        for g in _trajectories(self.store, done["good_ids"]):
            for s in g.steps:
                s.response.train = True
            good.append(g)
        return splices, good


def run_agent_r(cfg: AgentRRunConfig, train: list[TaskInstance], held_out: list[TaskInstance],
                load_policy: Callable[[str], Any], say: Callable[[str], None] = lambda text: None) -> dict:
    """Run (or resume) the iterations; returns the report (also `report.json` and an `agent-r:report` document).
    `load_policy(spec)` loads `cfg.policy` or `version:ID`. A stop request or Ctrl-C ends it `stopped` (the report's
    `stopped` says which; Ctrl-C during the SFT lets the step in flight finish and checkpoints it)."""
    from evolve.train.sft import SFTConfig, train_sft  # imports torch: only when Agent-R runs

    if not train:
        raise ConfigError("agent-r: no instances to search (the selection minus --held-out is empty)")
    check_executor(cfg)
    out = Path(cfg.out)
    run_id = out.resolve().name
    toolcall = cfg.kind == "toolcall"
    variant = prepared_variant(cfg)
    sandbox_cfg = cfg.sandbox.model_copy(update={"run_id": run_id})

    def evaluate_version(policy: Any, k: int) -> dict:
        if toolcall:
            return evaluate_toolcall(policy, held_out, build_messages, store, f"{run_id}-eval{k}", f"it{k}",
                                     max_tokens=cfg.max_tokens_per_step or 256)
        return evaluate(policy, held_out, variant, sandbox_cfg, store, f"{run_id}-eval{k}", f"it{k}")

    started = time.time()
    report: dict[str, Any] = {"run_id": run_id, "iterations": []}
    # one executor for the run: every instance's searches share it; a Ray cluster started for it stops at the end
    with RunStore(out) as store, make_executor(cfg.executor, cfg.workers) as branches:
        store.put_run(run_id, "agent-r", cfg.model_dump(mode="json"))
        searcher = InstanceSearch(cfg, store, run_id, branches, variant)
        stopped = lambda: store.stop_requested(run_id, since=started)  # noqa: E731
        try:
            spec, train_from = cfg.policy, cfg.train_policy
            policy = load_policy(spec)
            if cfg.evaluate and held_out:
                report["before"] = _evaluation(store, f"{run_id}/it0", lambda: evaluate_version(policy, 0), run_id)
                say(f"iteration 0 (before): {_line(report['before'])}")
            for k in range(1, cfg.iterations + 1):
                it_run = f"{run_id}-it{k}"
                row: dict[str, Any] = {"iteration": k, "policy": spec}
                splices: list[Trajectory] = []
                good: list[Trajectory] = []
                for n, inst in enumerate(train):
                    if stopped():
                        return _stop(store, run_id, report, out)
                    done = searcher.search(inst, policy, it_run, k,
                                           say=lambda text: say(f"{text} ({n + 1}/{len(train)})"))
                    more_splices, more_good = searcher.training_data(done)
                    splices += more_splices
                    good += more_good
                    say(f"iteration {k}: {inst.instance_id}: {done['splices_kept']} splice(s) kept, {done['good']} "
                        f"good path(s), dropped {done['dropped'] or 'none'} ({done['policy_calls']} policy calls)")
                row.update(splices=len(splices), good=len(good))
                if not splices and not good:
                    row["trained"] = None
                    say(f"iteration {k}: no training data (no successful path): the policy stays {spec}")
                else:
                    if stopped():
                        return _stop(store, run_id, report, out)
                    data = export_sft_data(splices + good, out / f"it{k}" / "data", f"{it_run}-data",
                                           {"iteration": k, "policy": spec})
                    sft = SFTConfig(policy=train_from, runs_root=out, lora=None if cfg.full else SFTConfig().lora,
                                    max_steps=cfg.sft_steps, lr=cfg.sft_lr, device=cfg.device, max_len=cfg.max_len,
                                    batch_size=min(8, len(splices) + len(good)), micro_batch_size=2)
                    say(f"iteration {k}: SFT on {len(splices)} revision + {len(good)} good trajectories")
                    version = train_sft(sft, [data], out / f"it{k}" / "sft",
                                        should_stop=lambda: "stop requested" if stopped() else None)
                    if version is None:  # a stop request or Ctrl-C ended the training after a step, checkpointed
                        return _stop(store, run_id, report, out, "stop requested" if stopped() else "Ctrl-C")
                    row["trained"] = version.id
                    spec = train_from = f"version:{version.id}"
                    close = getattr(policy, "close", None)
                    if close is not None:
                        close()
                    policy = load_policy(spec)
                previous = report["iterations"][-1].get("eval") if report["iterations"] else report.get("before")
                if cfg.evaluate and held_out and row.get("trained") is None and previous is not None:
                    row["eval"] = {**previous, "label": f"it{k}", "same_as_previous": True}  # the policy did not change
                elif cfg.evaluate and held_out:
                    row["eval"] = _evaluation(store, f"{run_id}/it{k}", lambda: evaluate_version(policy, k), run_id)
                    say(f"iteration {k}: {_line(row['eval'])}")
                store.put_document("agent-r:iteration", f"{run_id}/it{k}", row, run_id=run_id)
                report["iterations"].append(row)
            store.set_run_status(run_id, "finished")
            report["seconds"] = round(time.time() - started, 1)
            store.put_document("agent-r:report", run_id, report, run_id=run_id)
        except KeyboardInterrupt:  # Ctrl-C outside the SFT's steps (a search, an evaluation, a model loading)
            return _stop(store, run_id, report, out, "Ctrl-C")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def check_executor(cfg: AgentRRunConfig) -> None:
    """Only the SWE world has work to move: refuse `--executor ray` for toolcall with a one-line error."""
    if cfg.kind == "toolcall" and cfg.executor.backend != "local":
        raise ConfigError("--executor ray moves the SWE search's sandbox work; the toolcall world has none "
                          "(its episodes are one policy call): use --executor local")


def _evaluation(store: RunStore, key: str, run: Callable[[], dict], run_id: str) -> dict:
    found = store.document("agent-r:eval", key)
    if found is None:
        found = run()
        store.put_document("agent-r:eval", key, found, run_id=run_id)
    return found


def _line(e: dict) -> str:
    if "reward" in e:  # toolcall
        return (f"held-out ToolRL reward {e['reward']:.3f} (ToolRL total {e['toolrl']:.2f}), "
                f"exact {e['success']:.2f}, "
                f"recovered after an injected wrong answer {e['recovered']:.2f} (withdrawn or replaced "
                f"{e['damage_removed']:.2f}), repeat rate {e['repeat_rate']:.2f}, "
                f"loop episodes {e['loop_episodes']:.2f}")
    return (f"held-out success {e['success']:.2f}, recovered after an injected bad step {e['recovered']:.2f} "
            f"(damage removed {e['damage_removed']:.2f}), repeat rate {e['repeat_rate']:.2f}, "
            f"loop episodes {e['loop_episodes']:.2f}")


def _stop(store: RunStore, run_id: str, report: dict, out: Path, why: str = "stop requested") -> dict:
    """The run ends `stopped` (`why`: "stop requested" or "Ctrl-C"), resumable by the same command."""
    store.set_run_status(run_id, "stopped")
    report["stopped"] = why
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _abandon(store: RunStore, tree_id: str) -> None:
    """Nodes a killed search of this tree left: moved to `<tree_id>#abandoned`, so the tree shown is the new one."""
    for node in store.tree(tree_id=tree_id):
        store.put_tree_node(node.model_copy(update={"tree_id": f"{tree_id}#abandoned", "status": "abandoned"}))
