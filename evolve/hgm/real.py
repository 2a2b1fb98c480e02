"""The real world of the search: self-modification by the agent itself, and evaluation in Docker sandboxes.

Expansion of a parent (every step stored, the child kept with its diff even when rejected):
1. choose what to improve from the parent's own record (`diagnosis.choose_topic`);
2. the meta policy writes a problem statement (`hgm:diagnosis` document; user-visible information only,
   unless `privileged_diagnosis`);
3. the edit: the Evolve agent with the PARENT's variant and the meta policy runs in a sandbox whose workspace
   is a copy of the parent's variant directory (nothing else: no hidden tests, no run store), with the
   problem statement as its issue. Its patch, applied to a copy of the parent, is the child; its trajectory is
   stored with origin `hgm:meta`;
4. validation: the child loads (`AgentVariant.load`: tools valid, submit kept), its own tests pass in a
   sandbox, and one smoke episode ends without an infrastructure error. A failure rejects the child with
   its reason.

Evaluation of (node, task): one episode through `evolve.run.episode.run_episode` (a fresh sandbox, grading with
the hidden tests in another fresh one). An infrastructure error is reported as such; the scheduler requeues
the task and never counts it against the node.

With `episodes` set (`--executor ray`) every sandbox runs on the Ray cluster: evaluations and the smoke
episode as episodes (`RayEpisodes.run`), the edit and the child's tests as Ray tasks (`evolve.hgm.remote`,
the variant directory shipped as bytes). The diagnosis (one meta-policy call), the variant directories and
the run store stay on the driver, which stores every returned record.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, Field

from agent.batching import BatchingPolicy
from agent.graph import Agent
from agent.policy.base import Policy
from agent.variant import AgentVariant, VariantError
from agent.variant_safety import ALLOWED_MODES, patch_link_problem, unsafe_entry
from agent.variant_dir import GIT, VariantTestResult, commit_variant, copy_variant, run_variant_tests, variant_diff
from evolve.hgm.diagnosis import choose_topic, diagnose, diagnosis_messages
from evolve.hgm.remote import EditJob, pack_dir, run_remote_edit, run_remote_variant_tests
from evolve.hgm.world import Evaluation, Expansion, NodeView
from evolve.run.episode import EpisodeResult, StopSignal, run_episode
from evolve.run.remote_episode import WORKER_LOADED, ServedPolicy, TaskLost, worker_policy_spec
from evolve.store import RunStore
from records import TaskInstance, Trajectory, TrajectoryStatus
from rewards.combine import RewardWeights
from sandbox import SandboxConfig, SandboxError, start_sandbox

log = logging.getLogger(__name__)


class RealWorldConfig(BaseModel):
    """How the Docker world self-modifies and evaluates."""

    privileged_diagnosis: bool = False
    """Show the diagnosis the hidden tests' names and results (HGM's and DGM's setting); off: only what a user
    would see (issue, trajectory, patch)."""
    topic_probs: dict[str, float] = Field(default_factory=lambda: {
        "empty_patches": 0.25, "context_exceeded": 0.25, "budget_exhausted": 0.25, "parse_errors": 0.25})
    """Chance of each generic topic when the parent shows it (else a failed task is chosen)."""
    topic_min_fraction: float = Field(default=0.1, ge=0, le=1)
    """A generic topic qualifies when at least this fraction of the parent's evaluated tasks show it."""
    meta_max_steps: int = Field(default=30, ge=1)
    """Step budget of the meta-agent's edit episode."""
    smoke: bool = True
    """Validate a child with one ungraded episode on the first task (must end without an infra error)."""
    variant_test_timeout: float = Field(default=120.0, gt=0)
    """Seconds each of a child's own tests may run in the sandbox."""
    diagnosis_max_tokens: int = Field(default=1024, ge=1)
    """Most tokens of the meta policy's diagnosis reply."""


class DockerWorld:
    """Expansions and evaluations of agent variants, for real, stored in the run store."""

    def __init__(self, instances: list[TaskInstance], root_variant: str | Path, task_policy: Policy,
                 meta_policy: Policy, sandbox_cfg: SandboxConfig, store: RunStore, run_id: str, work_dir: str | Path,
                 cfg: RealWorldConfig | None = None, seed: int = 0):
        self.instances = {i.instance_id: i for i in instances}
        self.task_ids = list(self.instances)
        self.task_policy, self.meta_policy = task_policy, meta_policy
        self.sandbox_cfg, self.store, self.run_id = sandbox_cfg, store, run_id
        self.work = Path(work_dir)
        self.cfg = cfg or RealWorldConfig()
        self.seed = seed
        self.episodes = None
        """`evolve.run.remote_episode.RayEpisodes` when the sandbox work runs on a Ray cluster (`--executor ray`),
        None: here. On Ray: each evaluation and each child's smoke episode is an episode task; each edit (the
        meta-agent on a copy of the parent's variant, shipped as bytes) and each child's own tests are Ray
        tasks on the same executor. Always here: the diagnosis (a meta-policy call), the variant directories
        (children are made and loaded here) and the run store. The meta policy reaches the workers as the
        task policy does: the same spec when it is the same policy, else loaded by each worker (`openai:`,
        `replay:`) or served by this process. `close()` releases it all."""
        self.policy_of: Callable[[NodeView], Policy] | None = None
        """The policy a node acts with (`evolve loop`: each node is a (variant, policy version) pair); None: every
        node acts with `task_policy`. A child's smoke episode acts with its parent's policy."""
        self.meta_policy_of: Callable[[NodeView], Policy] | None = None
        """The meta policy that diagnoses and edits a parent (`evolve loop`: the parent's own policy unless a
        meta policy is configured); None: `meta_policy`. Only with the local executor."""
        self.max_steps: int | None = None
        """Step budget of evaluation episodes over the variants' own (`evolve loop`'s `rollouts.max_steps`)."""
        self.max_tokens_per_step: int | None = None
        """Tokens per policy call over the variants' own."""
        self.outcome_runs: list[str] | None = None
        """Search ids whose outcome rows describe a parent when choosing what to improve (`evolve loop`: a
        champion's evaluations of earlier generations too); None: this run's."""
        self._meta_spec: str | None = None
        self._served_meta = None
        self._variants: dict[str, AgentVariant] = {}
        self._lock = threading.Lock()
        root_dir = self.work / "variants" / "root"
        if not (root_dir / "variant.yaml").exists():
            if root_dir.exists():
                shutil.rmtree(root_dir)
            copy_variant(root_variant, root_dir, "root variant")
        self.root_dir = root_dir

    # --- the interface ----------------------------------------------------------------------------------
    def root(self) -> NodeView:
        return NodeView("root", None, 0, variant_dir=str(self.root_dir))

    def variant(self, variant_dir: str) -> AgentVariant:
        with self._lock:
            if variant_dir not in self._variants:
                v = AgentVariant.load(variant_dir)
                if self.max_steps is not None:
                    v.budget.max_steps = self.max_steps
                if self.max_tokens_per_step is not None:
                    v.max_tokens_per_step = self.max_tokens_per_step
                self._variants[variant_dir] = v
            return self._variants[variant_dir]

    def _task_policy(self, node: NodeView) -> Policy:
        return self.policy_of(node) if self.policy_of is not None else self.task_policy

    def evaluate(self, node: NodeView, task_id: str) -> Evaluation:
        inst = self.instances[task_id]
        started = time.time()
        policy = self._task_policy(node)
        traj = Trajectory(run_id=self.run_id, instance_id=task_id, policy=policy.spec, origin="hgm:eval")
        if self.episodes is not None:
            res = self.episodes.run(inst, self.variant(node.variant_dir), self.sandbox_cfg, self.store, self.run_id,
                                    traj, True, RewardWeights(), StopSignal())
        else:
            agent = Agent(policy, self.variant(node.variant_dir))
            res = run_episode(inst, agent, self.sandbox_cfg, self.store, self.run_id, grade=True, trajectory=traj)
        info: dict[str, Any] = {"trajectory_status": res.trajectory.status.value}
        tokens = res.trajectory.prompt_tokens + res.trajectory.completion_tokens
        if res.infra_error is not None or res.interrupted:
            info["error"] = res.infra_error or "interrupted"
            return Evaluation("infra_error", res.trajectory.id, info, time.time() - started, tokens)
        resolved = bool(res.report and res.report.resolved)
        return Evaluation("pass" if resolved else "fail", res.trajectory.id, info, time.time() - started, tokens)

    def expand(self, parent: NodeView, child_id: str) -> Expansion:
        started = time.time()
        safe = child_id.replace(":", "_").replace("/", "_")
        rng = np.random.default_rng([self.seed, zlib.crc32(child_id.encode())])
        rows = [r for run in (self.outcome_runs or [self.run_id])
                for r in self.store.outcomes(run_id=run, node_id=parent.id)]
        trajs = {r["trajectory_id"]: self.store.get_trajectory(r["trajectory_id"]) for r in rows
                 if r.get("trajectory_id") and r["status"] in ("pass", "fail", "timeout")}
        topic = choose_topic(rows, trajs, rng, self.cfg.topic_probs, self.cfg.topic_min_fraction)
        if topic is None:
            return Expansion(False, reason="nothing to improve: the parent failed no task", latency=time.time() - started)
        # 1-2: diagnosis
        inst = self.instances.get(topic.task_id) if topic.kind == "task" else None
        traj = trajs.get(topic.trajectory_id or "")
        report = self.store.test_report(traj.id) if traj is not None else None
        messages = diagnosis_messages(topic, parent.variant_dir, inst, traj, report, self.cfg.privileged_diagnosis)
        meta = self.meta_policy_of(parent) if self.meta_policy_of is not None else self.meta_policy
        problem, reply, tokens = diagnose(meta, messages, self.cfg.diagnosis_max_tokens)
        self.store.put_document("hgm:diagnosis", child_id, {
            "parent": parent.id, "topic": topic.kind, "task_id": topic.task_id, "trajectory_id": topic.trajectory_id,
            "privileged": self.cfg.privileged_diagnosis, "prompt": [m.model_dump() for m in messages],
            "reply": reply, "problem_statement": problem}, run_id=self.run_id)
        info: dict[str, Any] = {"topic": topic.kind, "task_id": topic.task_id, "privileged": self.cfg.privileged_diagnosis}
        if not problem.strip():
            return Expansion(False, reason="the diagnosis was empty", diagnosis=problem, info=info, tokens=tokens,
                             latency=time.time() - started)
        # 3: the edit, by the parent's own agent, in a sandbox holding only a copy of the parent's variant
        child_dir = self.work / "variants" / safe
        patch, meta_id, meta_tokens, edit_error = self._edit(parent, child_id, safe, problem, meta)
        info["meta_trajectory_id"] = meta_id
        tokens += meta_tokens
        if edit_error:
            return Expansion(False, reason=edit_error, diagnosis=problem, info=info, tokens=tokens,
                             latency=time.time() - started)
        if not patch.strip():
            return Expansion(False, reason="the edit changed nothing", diagnosis=problem, info=info, tokens=tokens,
                             latency=time.time() - started)
        if child_dir.exists():
            shutil.rmtree(child_dir)  # a half-made child of a killed run
        apply_error = _make_child(parent.variant_dir, child_dir, patch, f"{child_id}: {problem.splitlines()[0][:60]}")
        diff = variant_diff(parent.variant_dir, child_dir) if not apply_error else patch
        if apply_error:
            return Expansion(False, reason=apply_error, diff=diff, diagnosis=problem, info=info, tokens=tokens,
                             latency=time.time() - started)
        # 4: validation
        reason, validation, smoke_tokens = self._validate(child_dir, self._task_policy(parent))
        info["validation"] = validation
        return Expansion(reason is None, variant_dir=str(child_dir) if reason is None else str(child_dir),
                         reason=reason or "validated", diff=diff, diagnosis=problem, info=info,
                         tokens=tokens + smoke_tokens, latency=time.time() - started)

    # --- the steps ----------------------------------------------------------------------------------------
    def _edit(self, parent: NodeView, child_id: str, safe: str, problem: str,
              meta: Policy | None = None) -> tuple[str, str, int, str]:
        """Run the parent's agent on a copy of the parent's variant; (patch, meta trajectory id, tokens, error)."""
        meta = meta or self.meta_policy
        ws = self.work / "edits" / safe
        if ws.exists():
            shutil.rmtree(ws)
        copy_variant(parent.variant_dir, ws, f"parent {parent.id}")
        loaded = self.variant(parent.variant_dir)
        variant = _keep_files(loaded.model_copy(deep=True), loaded)
        variant.budget.max_steps = min(variant.budget.max_steps, self.cfg.meta_max_steps)
        inst = TaskInstance(instance_id=f"hgm-edit-{safe}", suite="hgm", problem_statement=problem)
        traj = Trajectory(run_id=self.run_id, instance_id=inst.instance_id, policy=meta.spec, origin="hgm:meta")
        self.store.put_trajectory(traj)
        if self.episodes is not None:
            traj, error = self._edit_remote(ws, variant, inst, traj, child_id)
            return traj.patch, traj.id, traj.prompt_tokens + traj.completion_tokens, error
        agent = Agent(meta, variant, on_step=lambda t, s: self.store.append_step(t.id, s))
        error = ""
        try:
            with start_sandbox(self.sandbox_cfg, workspace=ws) as sb:
                traj = agent.run(inst, sb, traj)
        except SandboxError as e:
            traj.status, traj.error, traj.finished_at = TrajectoryStatus.infra_error, str(e), time.time()
            error = f"the edit's sandbox failed: {e}"
        finally:
            shutil.rmtree(ws, ignore_errors=True)
        self.store.put_trajectory(traj)
        return traj.patch, traj.id, traj.prompt_tokens + traj.completion_tokens, error

    def _edit_remote(self, ws: Path, variant: AgentVariant, inst: TaskInstance, traj: Trajectory,
                     child_id: str) -> tuple[Trajectory, str]:
        """The edit as a Ray task (the workspace shipped as bytes); its trajectory stored here when it returns.
        A task that failed beyond Ray's retries is the edit's error (an infra_error trajectory)."""
        try:
            data = pack_dir(ws, with_git=True)
        finally:
            shutil.rmtree(ws, ignore_errors=True)
        job = EditJob(data, variant, inst, self.sandbox_cfg, self.meta_worker_spec(), traj, self.episodes.relay.queue)
        fut = self.episodes.executor.submit(run_remote_edit, job)
        self.store.log_event("ray_task", run_id=self.run_id, job="hgm:edit", node_id=child_id, trajectory_id=traj.id)
        try:
            traj, error = self.episodes.wait(fut, self.store)
        except TaskLost as e:
            traj.status, traj.error, traj.finished_at = TrajectoryStatus.infra_error, str(e), time.time()
            error = f"the edit's Ray task failed: {e}"
        self.episodes.relay.store_result(self.store, EpisodeResult(traj))
        return traj, error

    def meta_worker_spec(self) -> str:
        """The spec a worker loads for the meta policy (served from here when workers cannot load it; a
        ConfigError when a served policy cannot reach a cluster of several machines)."""
        with self._lock:
            if self._meta_spec is None:
                if self.meta_policy is self.task_policy:
                    self._meta_spec = self.episodes.spec
                elif self.meta_policy.spec.startswith(WORKER_LOADED):
                    self._meta_spec = worker_policy_spec(self.meta_policy.spec)
                else:  # served unbatched: the server batches the workers' calls itself
                    meta = self.meta_policy.inner if isinstance(self.meta_policy, BatchingPolicy) else self.meta_policy
                    self._served_meta = ServedPolicy(meta, self.episodes.executor.nodes())
                    self._meta_spec = self._served_meta.spec
            return self._meta_spec

    def close(self) -> None:
        """Release the Ray executor and the meta policy's server (nothing to do when all runs here)."""
        if self._served_meta is not None:
            self._served_meta.close()
            self._served_meta = None
        if self.episodes is not None:
            self.episodes.close()

    def _validate(self, child_dir: Path, policy: Policy | None = None) -> tuple[str | None, dict[str, Any], int]:
        """(rejection reason or None, validation log, tokens); the smoke episode acts with `policy` (default: the
        task policy)."""
        policy = policy or self.task_policy
        log_: dict[str, Any] = {}
        try:
            variant = AgentVariant.load(child_dir)
        except VariantError as e:
            log_["load"] = str(e)
            return f"does not load: {e}", log_, 0
        log_["load"] = "ok"
        tests, why = self._variant_tests(child_dir)
        if tests is None:
            log_["tests"] = why
            return f"its tests could not run: {why}", log_, 0
        log_["tests"] = tests.model_dump()
        if not tests.passed:
            return f"its own tests fail: {tests.reason}", log_, 0
        if not self.cfg.smoke:
            return None, log_, 0
        inst = self.instances[self.task_ids[0]]
        traj = Trajectory(run_id=self.run_id, instance_id=inst.instance_id, policy=policy.spec, origin="hgm:smoke")
        if self.episodes is not None:
            res = self.episodes.run(inst, variant, self.sandbox_cfg, self.store, self.run_id, traj, False,
                                    RewardWeights(), StopSignal())
        else:
            res = run_episode(inst, Agent(policy, variant), self.sandbox_cfg, self.store, self.run_id,
                              grade=False, trajectory=traj)
        log_["smoke"] = {"trajectory_id": res.trajectory.id, "status": res.trajectory.status.value,
                         "infra_error": res.infra_error}
        tokens = res.trajectory.prompt_tokens + res.trajectory.completion_tokens
        if res.infra_error is not None:
            return f"the smoke episode hit an infrastructure error: {res.infra_error}", log_, tokens
        if res.trajectory.status == TrajectoryStatus.error:
            return f"the smoke episode crashed: {res.trajectory.error}", log_, tokens
        return None, log_, tokens

    def _variant_tests(self, child_dir: Path) -> tuple[VariantTestResult | None, str]:
        """The child's own tests in a fresh sandbox (here, or a Ray task given the directory as bytes);
        (result, '') or (None, why they could not run: its sandbox or its Ray task failed)."""
        if self.episodes is not None:
            fut = self.episodes.executor.submit(run_remote_variant_tests, pack_dir(child_dir), self.sandbox_cfg,
                                                self.cfg.variant_test_timeout)
            self.store.log_event("ray_task", run_id=self.run_id, job="hgm:variant_tests", variant_dir=str(child_dir))
            try:
                return self.episodes.wait(fut, self.store)
            except TaskLost as e:
                return None, f"the Ray task failed: {e}"
        try:
            with start_sandbox(self.sandbox_cfg) as sb:
                return run_variant_tests(child_dir, sb, timeout=self.cfg.variant_test_timeout), ""
        except SandboxError as e:
            return None, f"sandbox failed: {e}"


def _keep_files(copy: AgentVariant, original: AgentVariant) -> AgentVariant:
    """A deep copy of a loaded variant loses its tools/ and tests/ (private state): give them back."""
    copy._directory, copy._sandbox_specs, copy._files = original._directory, original._sandbox_specs, original._files
    return copy


def _make_child(parent_dir: str, child_dir: Path, patch: str, message: str) -> str:
    """Copy the parent and apply the edit's patch (git apply writes files, runs nothing); '' or an error.

    The patch is the agent's: one that would create a symbolic link (or a submodule) is refused before the
    host's git sees it to apply, both by reading its headers and by git's own summary of it; the applied
    child is scanned again, so nothing in it can point outside it."""
    problem = patch_link_problem(patch)
    if problem:
        return f"the edit's patch is refused: {problem}"
    copy_variant(parent_dir, child_dir, "parent")
    patch_file = child_dir.parent / f".{child_dir.name}.patch"
    patch_file.write_text(patch if patch.endswith("\n") else patch + "\n")
    try:
        summary = subprocess.run([*GIT, "apply", "--summary", str(patch_file)], cwd=child_dir,
                                 capture_output=True, text=True)
        made = {m.group(1) for line in summary.stdout.splitlines()
                if (m := re.match(r"\s*(?:create mode|mode change \d+ =>) (\d+) ", line))}
        if made - set(ALLOWED_MODES):
            return (f"the edit's patch is refused: it makes an entry of git mode "
                    f"{', '.join(sorted(made - set(ALLOWED_MODES)))} (a symbolic link or a submodule); "
                    f"a variant holds only regular files")
        r = subprocess.run([*GIT, "apply", "--whitespace=nowarn", str(patch_file)], cwd=child_dir,
                           capture_output=True, text=True)
    finally:
        patch_file.unlink(missing_ok=True)
    if r.returncode != 0:
        return f"the edit's patch does not apply to the parent: {r.stderr.strip()[-300:]}"
    problem = unsafe_entry(child_dir)
    if problem:
        return f"the edit's patch is refused: {problem}"
    commit_variant(child_dir, message)
    return ""
