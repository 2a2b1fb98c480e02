"""Supervised fine-tuning on stored trajectories: loss-masked next-token training of the assistant turns.

LoRA through PEFT (default) or full fine-tuning; gradient accumulation over micro-batches; a
checkpoint every `save_every` steps from which a killed training resumes exactly (see `session`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from records import PolicyVersion, Trajectory

from evolve.train.config import TrainConfig
from evolve.train.data import Batch, build_sequences, epoch_order, load_trajectories, micro_batches
from evolve.train.losses import masked_nll
from evolve.train.modeling import TrainError, compute_settings, forward_logprobs, optimizer_step
from evolve.train.session import TrainSession
from evolve.train.stop import ShouldStop, StopAtStep

log = logging.getLogger(__name__)


class SFTConfig(TrainConfig):
    """Settings of `evolve train sft`."""

    epochs: float = Field(default=1.0, gt=0)
    """Passes over the data (fractions allowed); `max_steps` overrides."""
    min_reward: float | None = 1.0
    """Rejection sampling: train only on trajectories whose reward is at least this. The default 1.0 keeps
    successes: a resolved SWE instance (reward 1), a ToolRL answer with the right format and mostly right calls,
    Agent-R's exported revision and good paths (reward 1); demonstrations (origin `reference`) always count.
    None: every finished trajectory, failures included. HGM's meta-agent trajectories are never trained on."""


def sft_step(model: Any, opt: torch.optim.Optimizer, sched: Any, batches: list[Batch],
             cfg: TrainConfig) -> dict[str, float]:
    """One optimiser step over the micro-batches of a batch: mean NLL of every trained token."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    n_tok = float(sum(b.mask.sum() for b in batches))
    loss_sum = 0.0
    for b in batches:
        b = b.to(device)
        logp, _, _ = forward_logprobs(model, b, **compute_settings(cfg, device))
        loss = masked_nll(logp, torch.ones_like(logp), num_tokens=n_tok)
        loss.backward()
        loss_sum += loss.item()
    grad_norm, lr = optimizer_step(model, opt, sched, cfg.max_grad_norm)
    seconds = time.perf_counter() - t0
    tokens = sum(b.tokens for b in batches)
    return {"loss": loss_sum, "grad_norm": grad_norm, "lr": lr, "tokens": float(tokens),
            "trained_tokens": n_tok, "tokens_per_s": tokens / seconds}


def train_sft(cfg: SFTConfig, run_dirs: list[Path], out: Path, *,
              items: list[tuple[Trajectory, float | None]] | None = None,
              stop_after: int | None = None, should_stop: ShouldStop | None = None) -> PolicyVersion | None:
    """SFT on the trajectories of ``run_dirs`` (or the given ``(trajectory, reward)`` items); store and
    return the new policy version. ``stop_after`` ends the process's work after that many steps without
    finishing (as a kill would; for tests of resuming) and returns None. Ctrl-C, or ``should_stop`` answering a
    reason, ends it after the step in flight with a checkpoint and the version `stopped` (resumable): None."""
    if items is None:
        items = load_trajectories(run_dirs, reward=cfg.reward, min_reward=cfg.min_reward)
    if not items:
        where = ", ".join(str(d) for d in run_dirs) or "the given data"
        raise TrainError(f"no finished trajectories to train on in {where}"
                         + (f" with reward >= {cfg.min_reward} (successes; --all-trajectories trains on every "
                            "finished one)" if cfg.min_reward is not None else ""))
    data_ids = sorted({t.run_id for t, _ in items if t.run_id}) or [str(d) for d in run_dirs]
    session = TrainSession(out, "sft", cfg, data_ids=data_ids)
    error: BaseException | None = None
    try:
        if session.finished is not None:
            log.info("%s already finished: policy version %s", out, session.finished.id)
            return session.finished
        ckpt = session.latest_checkpoint()
        torch.manual_seed(cfg.seed)
        model, tok = session.load_model(ckpt)
        seqs, _ = build_sequences(items, tok, max_len=cfg.max_len, overflow=cfg.overflow,
                                 on_mismatch=cfg.token_mismatch)
        if not seqs:
            raise TrainError("no trajectory has an assistant turn to train on within max_len "
                             f"({cfg.max_len} tokens); see the data report above")
        per_epoch = math.ceil(len(seqs) / cfg.batch_size)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
        opt, sched = session.optimizer(model, total)
        step = session.restore(ckpt, opt, sched)["step"] if ckpt else 0
        metrics: dict[str, float] = {}
        saved = step
        with StopAtStep(should_stop) as stop:  # Ctrl-C in a step only raises the flag read after it
            while step < total:
                why = stop.reason()
                if why is not None:
                    if saved != step:
                        session.save_checkpoint(step, model, tok, opt, sched)
                    session.stopped(step, why)
                    return None
                epoch, k = divmod(step, per_epoch)
                idx = epoch_order(len(seqs), cfg.seed, epoch)[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                batches = micro_batches(seqs, idx, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len,
                                        pack=cfg.pack, share_prefix=cfg.share_prefix, pad_id=tok.pad_token_id)
                metrics = sft_step(model, opt, sched, batches, cfg)
                metrics["epoch"] = step / per_epoch
                session.log_step(step, metrics)
                step += 1
                if step % cfg.save_every == 0 or step == total:
                    session.save_checkpoint(step, model, tok, opt, sched)
                    saved = step
                if stop_after is not None and step >= stop_after and step < total:
                    return None
        return session.finish(model, tok, {k: metrics[k] for k in ("loss", "grad_norm") if k in metrics}
                              | {"steps": float(total), "sequences": float(len(seqs))})
    except BaseException as e:
        error = e
        raise
    finally:
        session.close(error)
