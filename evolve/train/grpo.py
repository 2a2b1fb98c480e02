"""GRPO for multi-turn agents, from stored, scored trajectories (offline) or fresh rollouts (`rollout`).

Trajectories of the same task instance form a group; a trajectory's advantage is its reward minus
the group mean (divided by the group std unless `scale_rewards` is off, as in Dr. GRPO); groups whose
rewards are all equal teach nothing and are skipped. Every assistant token of a trajectory carries
its advantage; tool observations and prompts are context only (see `data`). The loss is
`losses.policy_loss`: token-level clipped ratio with separate low/high clip ranges, an optional k3 KL
to the starting policy, and a choice of normalisation.

Old log-probs (the denominator of the ratio) are the rollout's recorded `Message.logprobs` where
every trained token of a trajectory has one, else computed with the current policy just before the
first update that uses that trajectory (or always, with `recompute_old_logprobs`); later epochs keep
those values, so their ratio measures how far the policy has moved since. After a resume, values not
recorded by the rollout are recomputed with the resumed policy.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from records import PolicyVersion, Trajectory
from tasks.synth.curriculum import CurriculumConfig, category_of

from evolve.curriculum_log import GroupPicker, categories_from_runs, record, resume
from evolve.train.config import TrainConfig
from evolve.train.data import (Batch, Sequence, build_sequences, load_trajectories, micro_batches)
from evolve.train.losses import Normalisation, group_advantages, policy_loss
from evolve.train.errors import NothingLearned, TrainError
from evolve.train.modeling import compute_settings, forward_logprobs, optimizer_step
from evolve.train.session import RUN_ID, TrainSession
from evolve.train.stop import ShouldStop, StopAtStep

log = logging.getLogger(__name__)


class GRPOConfig(TrainConfig):
    """Settings of `evolve train grpo` (and the update half of `grpo-toolcall`)."""

    lr: float = Field(default=2e-5, gt=0)
    """Peak learning rate (AdamW)."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (GRPO); off for Dr. GRPO's unscaled advantages."""
    clip_low: float = Field(default=0.2, ge=0, lt=1)
    """Lower clip range: the ratio is clipped at 1 - clip_low for negative advantages."""
    clip_high: float = Field(default=0.28, ge=0)
    """Upper clip range: the ratio is clipped at 1 + clip_high for positive advantages (DAPO clip-higher)."""
    kl_coef: float = Field(default=0.0, ge=0)
    """Weight of the k3 KL to the starting policy (0: no reference model is loaded)."""
    norm: Normalisation = "token"
    """Loss normalisation: `sequence` (GRPO), `token` (DAPO), `constant` (Dr. GRPO)."""
    norm_len: int | None = Field(default=None, ge=1)
    """Dr. GRPO's constant length for `norm: constant` (default: `max_len`)."""
    mask_truncated: bool = False
    """Leave out of the loss trajectories cut by a budget or the context (DAPO's overlong filtering; they
    still count in their group's baseline). Off by default: where running out of budget is the failure
    to learn from (looping), masking it hides the negative signal."""
    recompute_old_logprobs: bool = False
    """Recompute old log-probs with the current policy even where the rollout recorded them."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the stored trajectories (offline GRPO); later passes are off-policy, kept in check by clipping."""
    min_group_size: int = Field(default=2, ge=2)
    """Groups smaller than this are skipped (no baseline to compare with)."""
    curriculum: Literal["sec", "uniform"] | None = None
    """Which groups each step trains on: None (every group once per epoch, shuffled), `sec` (Self-Evolving
    Curriculum: categories drawn by a bandit fed the groups' mean absolute advantage; `tasks.synth.curriculum`)
    or `uniform` (categories drawn alike). The curriculum's state is stored after every step."""


def advantages_for(seqs: list[Sequence], cfg: GRPOConfig) -> tuple[list[float], list[bool], dict[str, float]]:
    """Per-sequence advantage and whether it trains, grouped by instance; plus counts for the log."""
    ids = {k: i for i, k in enumerate(sorted({s.instance_id for s in seqs}))}
    groups = torch.tensor([ids[s.instance_id] for s in seqs], dtype=torch.long)  # (an empty list would be float)
    rewards = torch.tensor([s.reward if s.reward is not None else math.nan for s in seqs])
    sizes = torch.bincount(groups, minlength=len(ids))
    usable = ~torch.isnan(rewards) & (sizes[groups] >= cfg.min_group_size)
    adv, keep = group_advantages(torch.nan_to_num(rewards), torch.where(usable, groups, -1 - groups),
                                 scale_by_std=cfg.scale_rewards)
    keep &= usable
    train = keep.clone()
    if cfg.mask_truncated:
        train &= torch.tensor([not s.truncated for s in seqs])
    stats = {"groups": float(len(ids)), "groups_skipped": float(len(ids) - len(set(groups[keep].tolist()))),
             "truncated_masked": float((keep & ~train).sum())}
    return adv.tolist(), train.tolist(), stats


@torch.no_grad()
def fill_logprobs(model: Any, seqs: list[Sequence], idx: list[int], cfg: TrainConfig, pad_id: int,
                  field: str = "old_logprobs") -> int:
    """Compute log-probs of the trained tokens of sequences ``idx`` with ``model`` into ``seq.<field>``
    (`old_logprobs` or `ref_logprobs`). Returns the number of tokens computed."""
    if not idx:
        return 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n = 0
    for b in micro_batches(seqs, idx, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len, pack=cfg.pack,
                           share_prefix=cfg.share_prefix, pad_id=pad_id):
        logp, _, keep = forward_logprobs(model, b.to(device), **compute_settings(cfg, device))
        keep = keep.cpu()  # indexes the batch's CPU tensors below
        for sid, pos, lp in zip(b.seq_ids[keep].tolist(), b.position_ids[:, 1:][keep].tolist(), logp.tolist()):
            s = seqs[sid]
            if getattr(s, field) is None:
                setattr(s, field, [math.nan] * len(s))
            getattr(s, field)[pos] = lp
            n += 1
    model.train(was_training)
    return n


def grpo_step(model: Any, opt: torch.optim.Optimizer, sched: Any, batches: list[Batch],
              cfg: GRPOConfig) -> dict[str, float]:
    """One optimiser step of the clipped policy-gradient loss over the micro-batches of a batch."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    n_tok = float(sum(b.mask.sum() for b in batches))
    n_seq = float(torch.unique(torch.cat([b.seq_ids[b.mask > 0] for b in batches])).numel())
    loss_sum = ent_sum = kl_sum = ratio_sum = low = high = 0.0
    for b in batches:
        b = b.to(device)
        logp, ent, keep = forward_logprobs(model, b, entropy=True, **compute_settings(cfg, device))
        loss, st = policy_loss(logp, b.old_logprobs[keep], b.advantages[keep], torch.ones_like(logp),
                               clip_low=cfg.clip_low, clip_high=cfg.clip_high, norm=cfg.norm,
                               seq_ids=b.seq_ids[keep], ref_logp=b.ref_logprobs[keep] if cfg.kl_coef else None,
                               kl_coef=cfg.kl_coef, num_seqs=n_seq, num_tokens=n_tok,
                               max_len=cfg.norm_len or cfg.max_len)
        loss.backward()
        loss_sum += loss.item()
        ent_sum, kl_sum, ratio_sum = ent_sum + ent.sum().item(), kl_sum + st.kl_sum, ratio_sum + st.ratio_sum
        low, high = low + st.clipped_low, high + st.clipped_high
    grad_norm, lr = optimizer_step(model, opt, sched, cfg.max_grad_norm)
    tokens = sum(b.tokens for b in batches)
    n = max(n_tok, 1.0)
    return {"loss": loss_sum, "kl": kl_sum / n, "clip_fraction": (low + high) / n, "clip_low": low / n,
            "clip_high": high / n, "entropy": ent_sum / n, "ratio": ratio_sum / n, "grad_norm": grad_norm,
            "lr": lr, "tokens": float(tokens), "trained_tokens": n_tok,
            "tokens_per_s": tokens / (time.perf_counter() - t0)}


def prepare_old_and_ref(model: Any, ref_model: Any | None, seqs: list[Sequence], idx: list[int],
                        cfg: GRPOConfig, pad_id: int, done: set[int] | None = None) -> None:
    """Before an update on sequences ``idx``: fill missing (or, with `recompute_old_logprobs`, all) old
    log-probs with the current policy, and reference log-probs. Sequences in ``done`` were prepared
    before (an earlier epoch) and keep their values; ``idx`` is added to it."""
    todo = [i for i in idx if done is None or i not in done]
    need = [i for i in todo if cfg.recompute_old_logprobs or not seqs[i].has_old_logprobs]
    for i in need:
        seqs[i].old_logprobs = [math.nan] * len(seqs[i])
    fill_logprobs(model, seqs, need, cfg, pad_id, "old_logprobs")
    if ref_model is not None and cfg.kl_coef:
        fill_logprobs(ref_model, seqs, [i for i in todo if seqs[i].ref_logprobs is None], cfg, pad_id,
                      "ref_logprobs")
    if done is not None:
        done.update(idx)


def train_grpo(cfg: GRPOConfig, run_dirs: list[Path], out: Path, *,
               items: list[tuple[Trajectory, float | None]] | None = None,
               should_stop: ShouldStop | None = None) -> PolicyVersion | None:
    """Offline GRPO on the scored trajectories of ``run_dirs``; store and return the new policy version. Ctrl-C, or
    ``should_stop`` answering a reason, ends it after the step in flight, checkpointed and resumable: None."""
    if items is None:
        items = load_trajectories(run_dirs, reward=cfg.reward)
    scored = [(t, r) for t, r in items if r is not None]
    if not scored:
        where = ", ".join(str(d) for d in run_dirs) or "the given data"
        raise TrainError(f"no scored trajectories in {where}" + (f" (reward {cfg.reward!r})" if cfg.reward else "")
                         + "; GRPO needs rewards: grade the run first")
    session = TrainSession(out, "grpo", cfg, data_ids=sorted({t.run_id for t, _ in scored if t.run_id}))
    error: BaseException | None = None
    try:
        if session.finished is not None:
            return session.finished
        ckpt = session.latest_checkpoint()
        torch.manual_seed(cfg.seed)
        model, tok = session.load_model(ckpt)
        seqs, _ = build_sequences(scored, tok, max_len=cfg.max_len, overflow=cfg.overflow,
                                 on_mismatch=cfg.token_mismatch)
        if not seqs:
            raise TrainError("no trajectory has an assistant turn to train on within max_len "
                             f"({cfg.max_len} tokens); see the data report above")
        adv, train, gstats = advantages_for(seqs, cfg)
        log.info("grpo: %d groups, %d skipped (all rewards equal or too small), %d truncated masked out",
                 gstats["groups"], gstats["groups_skipped"], gstats["truncated_masked"])
        trainable = [i for i, t in enumerate(train) if t]
        if not trainable:
            session.store.set_run_status(RUN_ID, "no-updates")
            raise NothingLearned("no group of trajectories has differing rewards: GRPO has nothing to learn and "
                                 f"stored no policy version ({int(gstats['groups'])} groups; sample several "
                                 "trajectories per instance, e.g. `evolve run --attempts 4 --temperature 1`)")
        # Whole groups stay together in a step; the order of groups is shuffled per epoch.
        by_group: dict[str, list[int]] = defaultdict(list)
        for i in trainable:
            by_group[seqs[i].instance_id].append(i)
        per_epoch = math.ceil(len(trainable) / cfg.batch_size)
        total = cfg.max_steps or cfg.epochs * per_epoch
        opt, sched = session.optimizer(model, total)
        step = session.restore(ckpt, opt, sched)["step"] if ckpt else 0
        ref_model = session.load_reference() if cfg.kl_coef else None
        prepared: set[int] = set()
        metrics: dict[str, float] = {}
        picker = _curriculum_picker(cfg, session, seqs, run_dirs, set(trainable)) if cfg.curriculum else None
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
                if picker is not None:
                    idx = picker.next_batch(cfg.batch_size, scale=cfg.scale_rewards)
                    record(session.store, RUN_ID, picker.cur, step)
                else:
                    keys = sorted(by_group)
                    random.Random(cfg.seed * 100_003 + epoch).shuffle(keys)
                    order = [i for key in keys for i in by_group[key]]
                    idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                prepare_old_and_ref(model, ref_model, seqs, idx, cfg, tok.pad_token_id, prepared)
                batches = micro_batches(seqs, idx, micro_batch_size=cfg.micro_batch_size, max_len=cfg.max_len,
                                        pack=cfg.pack, share_prefix=cfg.share_prefix, pad_id=tok.pad_token_id,
                                        advantages=adv, train=train)
                metrics = grpo_step(model, opt, sched, batches, cfg)
                metrics["reward"] = sum(seqs[i].reward or 0.0 for i in idx) / len(idx)
                session.log_step(step, metrics)
                step += 1
                if step % cfg.save_every == 0 or step == total:
                    session.save_checkpoint(step, model, tok, opt, sched)
                    saved = step
        final = {k: metrics[k] for k in ("loss", "reward", "kl", "clip_fraction", "entropy")}
        return session.finish(model, tok, final | {"steps": float(total), **gstats})
    except BaseException as e:
        error = e
        raise
    finally:
        session.close(error)


def _curriculum_picker(cfg: GRPOConfig, session: TrainSession, seqs: list[Sequence], run_dirs: list[Path],
                       trainable: set[int]):
    """The group picker of `--curriculum`: every scored group is a candidate (one whose rewards are all equal
    trains nothing and feeds its category a zero reward), categories from the runs' stored instances, the
    bandit resumed from the store."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(seqs):
        if s.reward is not None:
            groups[s.instance_id].append(i)
    groups = {g: ids for g, ids in groups.items() if len(ids) >= cfg.min_group_size}
    rewards = {g: [float(seqs[i].reward) for i in ids] for g, ids in groups.items()}
    cats = categories_from_runs([d for d in run_dirs if Path(d).exists()]) if run_dirs else {}
    names = sorted({cats.get(g, category_of(g)) for g in groups})
    cur = resume(session.store, RUN_ID, names, CurriculumConfig(mode=cfg.curriculum), seed=cfg.seed)
    return GroupPicker(cur, groups, rewards, cats, trainable)
