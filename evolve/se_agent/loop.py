"""The SE-Agent driver: iteration 1 runs diverse pilots per instance, each later iteration applies one
operator per instance (built from that instance's pool only) and runs one attempt with the operator's text
added to the agent's prompt; then visible selection. Every product is a run-store document keyed by
instance, so a killed run resumes where it stopped (finished attempts are never redone)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from agent.policy.base import Policy
from evolve.run.episode import StopSignal
from evolve.se_agent.branch import branch_point, prefix
from evolve.se_agent.compress import compress, fit
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.env import Environment
from evolve.se_agent.operators import apply_operator
from evolve.se_agent.prompts import PLANS, TEMPERATURES, build_prompt, check_wiring
from evolve.se_agent.records import (DOC_OPERATOR, DOC_SELECTION, DOC_SLOT, DOC_SUMMARY, Attempt, OperatorOutput,
                                     PoolEntry, SelectionVerdict, instance_prefix, slot_key)
from evolve.se_agent.select import Judge, select
from evolve.se_agent.summarise import summarise
from evolve.store import RunStore
from records import TaskInstance, Trajectory, TrajectoryStatus, TreeNode
from records.trajectory import INTERRUPTED

log = logging.getLogger(__name__)


class Stopped(Exception):
    """A stop was requested (`RunStore.request_stop`); the run can resume."""


def pool(store: RunStore, run_id: str, instance_id: str, before: int | None = None) -> list[PoolEntry]:
    """The instance's pool entries (iteration < `before`), in the order they were run."""
    entries = [PoolEntry.model_validate(d) for _, d in
               store.documents(DOC_SUMMARY, run_id=run_id, key_prefix=instance_prefix(instance_id))]
    entries = [e for e in entries if e.instance_id == instance_id and (before is None or e.iteration < before)]
    return sorted(entries, key=lambda e: (e.iteration, e.slot))


def root_id(run_id: str, instance_id: str) -> str:
    return f"se:{run_id}:{instance_id}"


def node_id(trajectory_id: str) -> str:
    return f"se:{trajectory_id}"


class SEAgent:
    """One SE-Agent run over `instances` in `env`, writing to `store`."""

    def __init__(self, cfg: SEAgentConfig, instances: list[TaskInstance], env: Environment, store: RunStore,
                 run_id: str, operator_policy: Policy | None, judge: Judge | None,
                 on_event: Callable[[str, str], None] = lambda instance_id, what: None):
        self.cfg, self.instances, self.env, self.store, self.run_id = cfg, instances, env, store, run_id
        self.operator_policy, self.judge, self.on_event = operator_policy, judge, on_event
        self.started = time.time()
        self.by_id = {i.instance_id: i for i in instances}
        self.stopper = StopSignal()
        if hasattr(env, "stop"):
            env.stop = self.stopper

    # --- the plan of one attempt ---------------------------------------------------------------------
    def pilot(self, instance: TaskInstance, iteration: int, slot: int, index: int, origin: str) -> Attempt:
        """Pilot number `index`: 0 is the plain agent; the others differ in temperature, seed and plan."""
        temperature = self.env_temperature() if index == 0 else TEMPERATURES[index % len(TEMPERATURES)]
        return Attempt(instance_id=instance.instance_id, iteration=iteration, slot=slot, origin=origin,
                       temperature=temperature, seed=self.cfg.seed + 1000 * iteration + slot,
                       planning=PLANS[index % len(PLANS)])

    def env_temperature(self) -> float:
        variant = getattr(self.env, "variant", None)
        return float(getattr(variant, "temperature", 0.0))

    def attempt(self, instance: TaskInstance, iteration: int, slot: int) -> Attempt:
        iid = instance.instance_id
        if iteration == 1:
            return self.pilot(instance, 1, slot, slot, "se-agent:pilot")
        operator = self.cfg.operator_for(iteration)
        if operator is None:  # independent re-sampling: another pilot
            return self.pilot(instance, iteration, slot, self.cfg.pilots + iteration - 2, "se-agent:resample")
        key = f"{iid}/{iteration:02d}"
        doc = self.store.document(DOC_OPERATOR, key)
        if doc is None:
            entries = pool(self.store, self.run_id, iid, before=iteration)
            self.on_event(iid, f"iteration {iteration}: {operator}")
            out = apply_operator(operator, instance, entries, iteration, self.operator_policy,
                                 focus_text=self.focus_text, max_chars=self.cfg.operator_max_chars,
                                 max_tokens=self.cfg.operator_max_tokens, seed=self.cfg.seed + iteration)
            self.store.put_document(DOC_OPERATOR, key, out, run_id=self.run_id)
            self.store.log_event("se-agent:operator", run_id=self.run_id, instance_id=iid, iteration=iteration,
                                 operator=operator, fallback=out.fallback, chars_cut=out.chars_cut)
        else:
            out = OperatorOutput.model_validate(doc)
        assert out.instance_id == iid, f"operator output of {out.instance_id} looked up for {iid}"
        parent = out.sources[0] if out.sources else None
        branch = 0
        if self.cfg.branch and parent is not None:
            variant = getattr(self.env, "variant", None)
            max_steps = variant.budget.max_steps if variant is not None else 1_000_000
            branch = branch_point(self.store.get_trajectory(parent), max_steps)
        return Attempt(instance_id=iid, iteration=iteration, slot=slot, origin=f"se-agent:{operator}",
                       temperature=self.env_temperature(), seed=self.cfg.seed + 1000 * iteration + slot,
                       strategy=out.text, operator_key=key, parent_id=parent, branch_step=branch)

    def focus_text(self, trajectory_id: str) -> tuple[str, int]:
        """The compressed trajectory for an operator prompt and the characters cut from it."""
        comp = compress(self.store.get_trajectory(trajectory_id))
        text, cut = fit(comp.text, self.cfg.operator_max_chars // 3)
        return text, comp.chars_cut + cut

    # --- one attempt, resumable ----------------------------------------------------------------------
    def check_stop(self) -> None:
        if not self.stopper.is_set() and self.store.stop_requested(self.run_id, since=self.started):
            self.stopper.request("stop requested")
        if self.stopper.is_set():
            raise Stopped()

    def run_slot(self, instance: TaskInstance, iteration: int, slot: int) -> None:
        key = slot_key(instance.instance_id, iteration, slot)
        if self.store.document(DOC_SUMMARY, key) is not None:
            return
        self.check_stop()
        attempt = self.attempt(instance, iteration, slot)
        base = self.env.base_prompt(instance)
        traj = self._finished_trajectory(key)
        if traj is not None and traj.status == TrajectoryStatus.infra_error:
            traj = None  # the infrastructure failed it last time: run it again
        retries = 0
        while traj is None or (traj.status == TrajectoryStatus.infra_error and retries < self.cfg.infra_retries):
            if traj is not None:
                retries += 1
                self.on_event(instance.instance_id, f"infra error ({traj.error}); retry {retries}")
            traj = Trajectory(run_id=self.run_id, instance_id=instance.instance_id, origin=attempt.origin,
                              parent_id=attempt.parent_id, prompt=build_prompt(base, attempt))
            if attempt.branch_step and attempt.parent_id:  # continue the parent from its branch point
                traj.steps = prefix(self.store.get_trajectory(attempt.parent_id), attempt.branch_step)
                traj.branch_step = attempt.branch_step
            self.store.put_document(DOC_SLOT, key, {"trajectory_id": traj.id, "attempt": attempt.model_dump()},
                                    run_id=self.run_id)
            traj = self.env.run(instance, attempt, traj)
            self.check_stop()  # an episode cut by a stop is interrupted, not a pool entry
        stored = self.store.get_trajectory(traj.id)
        check_wiring(stored, base, attempt)  # the operator's text reached the agent, the tool instructions stayed
        outcome = self.env.visible(instance, stored)
        entry = summarise(instance, stored, attempt, outcome, self.operator_policy,
                          max_chars=self.cfg.summary_max_chars, max_tokens=self.cfg.operator_max_tokens)
        parent = node_id(attempt.parent_id) if attempt.parent_id else root_id(self.run_id, instance.instance_id)
        self.store.put_tree_node(TreeNode(
            id=node_id(stored.id), parent_id=parent, tree_id=instance.instance_id, kind="se-agent",
            label=f"it{iteration} {attempt.origin.removeprefix('se-agent:')}" + (f" #{slot}" if iteration == 1 else ""),
            status=outcome.label(), trajectory_id=stored.id,
            info={"run_id": self.run_id, "iteration": iteration, "slot": slot, "operator_key": attempt.operator_key,
                  "outcome_label": outcome.label(),
                  "outcome": outcome.model_dump(), "temperature": attempt.temperature,
                  "planning": attempt.planning[:120], "branch_step": attempt.branch_step}))
        self.store.put_document(DOC_SUMMARY, key, entry, run_id=self.run_id)
        self.store.log_event("se-agent:attempt", run_id=self.run_id, instance_id=instance.instance_id,
                             iteration=iteration, slot=slot, trajectory_id=stored.id, outcome=outcome.label())
        self.on_event(instance.instance_id, f"iteration {iteration}: {attempt.origin} -> {outcome.label()}")

    def _finished_trajectory(self, key: str) -> Trajectory | None:
        """The slot's trajectory when an earlier run finished it; an unfinished one is closed as interrupted."""
        doc = self.store.document(DOC_SLOT, key)
        if doc is None:
            return None
        try:
            traj = self.store.get_trajectory(doc["trajectory_id"])
        except (KeyError, LookupError):
            return None
        if traj.error == INTERRUPTED:
            return None
        if traj.status != TrajectoryStatus.running and traj.finished_at is not None:
            return traj
        traj.status, traj.error = TrajectoryStatus.error, INTERRUPTED
        self.store.put_trajectory(traj)
        return None

    # --- the run -------------------------------------------------------------------------------------
    def run(self) -> bool:
        """Run (or resume) every iteration and the selection; False when a stop request ended it early."""
        for inst in self.instances:
            self.store.put_tree_node(TreeNode(id=root_id(self.run_id, inst.instance_id), tree_id=inst.instance_id,
                                              kind="se-agent", label=inst.instance_id, status="instance",
                                              info={"run_id": self.run_id}))
        done = threading.Event()

        def poll() -> None:  # a stop request cuts running episodes too, not only queued attempts
            while not done.wait(1.0):
                if self.store.stop_requested(self.run_id, since=self.started):
                    self.stopper.request("stop requested")
                    return

        poller = threading.Thread(target=poll, name="se-agent-stop-poll", daemon=True)
        poller.start()
        try:
            for iteration in range(1, self.cfg.iterations + 1):
                slots = self.cfg.pilots if iteration == 1 else 1
                jobs = [(inst, iteration, s) for inst in self.instances for s in range(slots)]
                self._parallel(lambda job: self.run_slot(*job), jobs)
                self.store.log_event("se-agent:iteration", run_id=self.run_id, iteration=iteration)
            self._parallel(self.select_instance, self.instances)
        except Stopped:
            return False
        finally:
            done.set()
        return not self.stopper.is_set()

    def _parallel(self, fn, items) -> None:
        """`fn` over `items` on `workers` threads; the first real error stops the rest and is raised."""
        errors: list[BaseException] = []

        def guarded(item) -> None:
            if errors:
                return
            try:
                fn(item)
            except Stopped:
                raise
            except BaseException as e:
                errors.append(e)
                self.stopper.request(f"error: {e}")
                raise

        if self.cfg.workers <= 1:
            for item in items:
                guarded(item)
            return
        with ThreadPoolExecutor(max_workers=self.cfg.workers) as ex:
            futures = [ex.submit(guarded, item) for item in items]
        stopped = False
        for fut in futures:
            exc = fut.exception()
            stopped = stopped or isinstance(exc, Stopped)
        if errors:
            raise errors[0]
        if stopped:
            raise Stopped()

    def select_instance(self, instance: TaskInstance) -> SelectionVerdict:
        entries = pool(self.store, self.run_id, instance.instance_id)
        doc = self.store.document(DOC_SELECTION, instance.instance_id)
        if doc is not None:
            old = SelectionVerdict.model_validate(doc)
            if old.candidates == [e.trajectory_id for e in entries]:
                return old
            for node in self.store.tree(tree_id=instance.instance_id, kind="se-agent"):  # more iterations ran
                if node.status == "selected":
                    node.status = node.info.get("outcome_label", "promising")
                    self.store.put_tree_node(node)
        self.check_stop()
        patches = {e.trajectory_id: self.store.get_trajectory(e.trajectory_id).patch for e in entries}
        verdict = select(instance.problem_statement, entries, patches, self.judge)
        verdict.instance_id = instance.instance_id
        if verdict.selected:
            node = next(n for n in self.store.tree(tree_id=instance.instance_id, kind="se-agent")
                        if n.id == node_id(verdict.selected))
            node.status, node.info = "selected", {**node.info, "selection": verdict.method}
            self.store.put_tree_node(node)
        self.store.put_document(DOC_SELECTION, instance.instance_id, verdict, run_id=self.run_id)
        self.on_event(instance.instance_id, f"selected {verdict.selected} ({verdict.method})")
        return verdict


