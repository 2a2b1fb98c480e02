"""One training run's bookkeeping: its output directory, store records, checkpoints and the final version.

Layout of ``--out DIR`` (itself a run directory, so `version:ID` finds what it produced)::

    DIR/evolve.db                   run `train` (config, status), PolicyVersion, TrainStep per step
    DIR/checkpoints/step-000050/    weights (adapter or full) + optimizer.pt + scheduler.pt + state.pt
    DIR/final/                      the trained weights the PolicyVersion points at

A checkpoint is written to a temporary directory and renamed into place, so a training killed at any
moment resumes from the last complete one: same weights, optimiser moments, scheduler, step, data
position and RNG states (Python, torch, CUDA).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from records import PolicyVersion, TrainStep

from agent.policy.threads import free_cores
from evolve.run.run_lock import RunLock
from evolve.store import DB_NAME, RunStore
from evolve.train.config import TrainConfig
from evolve.train.errors import NothingLearned
from evolve.train.modeling import TrainError, check_model_spec, load_for_training, resolve_device, resolve_dtype
from evolve.train.versions import get_version, version_spec

log = logging.getLogger(__name__)

RUN_ID = "train"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Multiplier of the peak lr at each step: linear warm-up, then constant/cosine/linear decay."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1.0 - t
    return f


@dataclass
class TrainSession:
    """Everything about one training run but its update step."""

    out: Path
    kind: str
    """`sft` or `grpo`."""
    cfg: TrainConfig
    data_ids: list[str] = field(default_factory=list)
    """Run ids (or trajectory ids) the training reads."""
    store: RunStore = field(init=False)
    lock: RunLock = field(init=False)
    version_id: str = field(init=False)
    base: str = field(init=False)
    """Spec of the base model (`hf:...`)."""
    start_adapter: str | None = field(init=False)
    parent_id: str | None = field(init=False)
    device: torch.device = field(init=False)
    finished: PolicyVersion | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        runs_root = self.cfg.runs_root or self.out.parent
        prior = None
        if (self.out / DB_NAME).exists():
            with RunStore(self.out, readonly=True) as old:
                prior = {r["id"]: r for r in old.runs()}.get(RUN_ID)
                versions = {v.id: v for v in old.policy_versions()}
        if prior is not None:  # a resume: same version id and starting point as the first start
            c = prior["config"]
            if c.get("kind") != self.kind:
                raise TrainError(f"{self.out} holds a {c.get('kind')} training; give another --out")
            self.version_id, self.base = c["version_id"], c["base"]
            self.start_adapter, self.parent_id = c["start_adapter"], c["parent_id"]
            if prior["status"] == "done":
                self.finished = versions.get(self.version_id)
            base_v = None
        elif self.cfg.policy.startswith("version:"):
            parent = get_version(self.cfg.policy.split(":", 1)[1], runs_root)
            self.base, kw = version_spec(parent)
            self.start_adapter, self.parent_id = kw.get("adapter"), parent.id
            if self.start_adapter and self.cfg.lora is None:
                raise TrainError(f"policy {self.cfg.policy} is a LoRA adapter: train it with lora settings "
                                 "(full fine-tuning of a merged adapter is not supported)")
            self.version_id, base_v = PolicyVersion(base="").id, None
        else:
            self.base, self.start_adapter = _absolute(self.cfg.policy), None
            digest = hashlib.sha1(self.base.encode()).hexdigest()[:10]
            base_v = PolicyVersion(id=f"base-{digest}", base=self.base, kind="base")
            self.version_id, self.parent_id = PolicyVersion(base="").id, base_v.id
        if prior is None:
            check_model_spec(self.base)
        self.lock = RunLock(self.out, f"evolve train {self.kind}").acquire()  # one writer; the TUI tells a dead one
        try:
            self.store = RunStore(self.out)
        except BaseException:
            self.lock.release()
            raise
        if base_v is not None:
            self.store.put_policy_version(base_v)
        self.device = resolve_device(self.cfg.device)
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        elif self.device.type == "cpu":
            torch.set_num_threads(free_cores())
        self.store.put_run(RUN_ID, "train", {"kind": self.kind, "version_id": self.version_id, "base": self.base,
                                            "start_adapter": self.start_adapter, "parent_id": self.parent_id,
                                            "config": self.cfg.model_dump(mode="json"), "data": self.data_ids},
                           status="done" if self.finished else "running")
        if self.finished is None:  # the version exists from the first step on: its curves can be watched live
            self._put_version("training")

    def _put_version(self, status: str, metrics: dict[str, float] | None = None, path: str = "") -> PolicyVersion:
        before = next((v for v in self.store.policy_versions() if v.id == self.version_id), None)
        version = PolicyVersion(id=self.version_id, parent_id=self.parent_id, base=self.base, kind=self.kind, path=path,
                                adapter=self.cfg.lora is not None, data=self.data_ids,
                                metrics=metrics if metrics is not None else (before.metrics if before else {}),
                                status=status, created_at=time.time() if status == "ready" or before is None
                                else before.created_at)
        self.store.put_policy_version(version)
        return version

    # --- model --------------------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted((self.out / "checkpoints").glob("step-*")) if self.cfg.resume else []
        return ckpts[-1] if ckpts else None

    def load_model(self, checkpoint: Path | None = None) -> tuple[Any, Any]:
        """The model to train: from ``checkpoint`` when resuming, else the starting policy."""
        dtype = resolve_dtype(self.cfg.dtype, self.device, full_finetune=self.cfg.lora is None)
        kw = dict(lora=self.cfg.lora, device=self.device, dtype=dtype,
                  gradient_checkpointing=self.cfg.gradient_checkpointing, attention=self.cfg.attention)
        if checkpoint is None:
            return load_for_training(self.base, adapter=self.start_adapter, **kw)
        if self.cfg.lora is not None:
            return load_for_training(self.base, adapter=str(checkpoint / "model"), **kw)
        return load_for_training(f"hf:{checkpoint / 'model'}", **kw)

    def load_reference(self) -> Any:
        """A frozen copy of the starting policy (for the KL term), in the trained model's dtype (so the KL
        starts at 0, not at the rounding between two precisions)."""
        dtype = resolve_dtype(self.cfg.dtype, self.device, full_finetune=self.cfg.lora is None)
        model, _ = load_for_training(self.base, adapter=self.start_adapter, lora=None, device=self.device,
                                     dtype=dtype, trainable=False, attention=self.cfg.attention)
        return model

    def optimizer(self, model: Any, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(self.cfg, total_steps))
        return opt, sched

    # --- checkpoints ---------------------------------------------------------------------------------
    def save_checkpoint(self, step: int, model: Any, tokenizer: Any, opt: torch.optim.Optimizer, sched: Any,
                        extra: dict[str, Any] | None = None) -> Path:
        root = self.out / "checkpoints"
        final = root / f"step-{step:06d}"
        tmp = root / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        torch.save(sched.state_dict(), tmp / "scheduler.pt")
        torch.save({"step": step, "rng": rng_state(), "extra": extra or {}, "version_id": self.version_id},
                   tmp / "state.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        for old in sorted(root.glob("step-*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
        return final

    def restore(self, checkpoint: Path, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
        """Load optimiser, scheduler and RNG state; return the saved state (``step``, ``extra``)."""
        opt.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=self.device, weights_only=False))
        sched.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=False))
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        set_rng_state(state["rng"])
        log.info("resumed from %s (step %d)", checkpoint, state["step"])
        return state

    # --- records -------------------------------------------------------------------------------------
    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self.store.put_train_step(TrainStep(policy_version_id=self.version_id, step=step, metrics=metrics))
        self._put_version("training", dict(metrics))
        log.info("%s step %d: %s", self.kind, step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    def finish(self, model: Any, tokenizer: Any, metrics: dict[str, float]) -> PolicyVersion:
        """Save the final weights and store the new policy version."""
        path = self.out / "final"
        tmp = self.out / ".tmp-final"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
        version = self._put_version("ready", metrics, str(path.resolve()))
        self.store.set_run_status(RUN_ID, "done")
        self.finished = version
        log.info("stored policy version %s (%s) at %s", version.id, self.kind, path)
        return version

    def stopped(self, step: int, why: str) -> None:
        """A stop ended the training after `step` steps (its checkpoint saved): the run and its version say so,
        and the same command resumes from there."""
        self._put_version("stopped")
        self.store.set_run_status(RUN_ID, "stopped")
        log.warning("%s training stopped after step %d (%s); run the same command to resume", self.kind, step, why)

    def close(self, error: BaseException | None = None) -> None:
        """Close the store and let go of the run directory; a training that ended in an error says so in its run and
        version (a kill leaves them `running`/`training`, and the TUI shows the run dead)."""
        try:
            if error is not None and self.finished is None:
                interrupted = isinstance(error, KeyboardInterrupt)
                empty = isinstance(error, NothingLearned)  # no update: the starting weights, never a new version
                try:
                    self._put_version("stopped" if interrupted else "no-updates" if empty else "failed")
                    if not empty:  # its trainer already said so in the run's status
                        self.store.set_run_status(RUN_ID, "stopped" if interrupted else "error")
                except Exception as e:  # noqa: BLE001 - the store itself may have failed: the first error is the story
                    log.debug("recording the training's end: %s", e)
            self.store.close()
        finally:
            self.lock.release()


def _absolute(spec: str) -> str:
    """`hf:relative/dir` -> `hf:/absolute/dir` (so the version stays loadable from anywhere)."""
    if spec.startswith("hf:") and Path(spec[3:]).expanduser().is_dir():
        return f"hf:{Path(spec[3:]).expanduser().resolve()}"
    return spec
