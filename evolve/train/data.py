"""Training data from the run store: trajectories -> token sequences with a loss mask -> padded/packed rows.

A trajectory becomes ONE multi-turn sequence rendered with the policy's own chat template:

* Context (system, user, tool observations, the template's turn headers) is in the sequence with mask 0.
* Each assistant turn is located with two renders, ``messages[:i]`` with the generation prompt and
  ``messages[:i+1]`` without it; the difference is the turn's completion text (``content`` plus the
  template's end-of-turn marker). When the turn recorded the ``token_ids`` it was sampled as, those
  ids are spliced in *exactly* instead of re-tokenising its text (with their ``logprobs`` as the
  old log-probs); whatever the template adds after them that was not sampled (the newline after
  ``<|im_end|>``, or the end marker itself when a stop string ended the sample) is context (mask 0).
  A text-only turn (gold answers, API models) is tokenised and trained through its end-of-turn
  marker, so the model learns to stop; trailing whitespace after the marker is context.
* A turn with ``Message.train == False`` (Agent-R's erroneous prefix) is context (mask 0).
* Recorded log-probs are kept as old log-probs only when the rollout ran the trained weights: a
  `llamacpp:` rollout ran quantised weights with its own kernels, so its values are dropped (NaN) and
  the trainer recomputes them (`RECOMPUTED_POLICIES`).
* Anything after the last assistant turn (a final observation) is dropped: it teaches nothing.

Truncation is never silent: a sequence longer than ``max_len`` is either cut after the last whole
assistant turn that fits (``overflow="cut"``) or dropped (``overflow="drop"``); a sequence that keeps no
trained token is dropped. Every outcome is counted in `BuildReport`, which is logged.

Packing (`plan_rows`/`collate`): several short sequences share a row; each restarts its
``position_ids`` at 0 and the trainer passes explicit attention masks (`attention_masks`): no token attends
across a sequence boundary. Padding at a row's end is its own segment. ``pack=False`` puts one sequence per row.

Shared prefixes (`plan_trees`): sequences of a micro-batch that start with the same context (a GRPO group's
prompt, an agent's system prompt) form a tree: the shared context once, then each sequence's own tokens at
their own positions, attending to it and to themselves only. Same log-probs and losses as separate rows
(tests check it), several times fewer tokens for a group of completions of one prompt.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from agent.policy.base import message_dicts
from evolve.store import RunStore
from records import Message, Trajectory

from evolve.train.errors import TokenizerMismatch

log = logging.getLogger(__name__)

Overflow = Literal["cut", "drop"]


@dataclass
class Sequence:
    """One trajectory as tokens."""

    input_ids: list[int]
    """The whole conversation, rendered with the chat template (recorded ids spliced in)."""
    loss_mask: list[int]
    """1 where the token is trained (an assistant token of a ``train=True`` turn), else 0."""
    old_logprobs: list[float]
    """Sampling log-prob of each token where the rollout recorded it, NaN elsewhere."""
    trajectory_id: str = ""
    instance_id: str = ""
    run_id: str = ""
    reward: float | None = None
    """Scalar reward of the trajectory (None when it has none)."""
    truncated: bool = False
    """The episode was cut by a budget or the context (`Trajectory.truncated`)."""
    turn_ends: list[int] = field(default_factory=list)
    """Token index just after each assistant turn (the places a cut may happen)."""
    ref_logprobs: list[float] | None = None
    """Log-prob of each token under the reference policy (GRPO's KL term), NaN where not computed."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def has_old_logprobs(self) -> bool:
        """Every trained token has a recorded sampling log-prob."""
        return all(not math.isnan(lp) for lp, m in zip(self.old_logprobs, self.loss_mask) if m)


@dataclass
class BuildReport:
    """What happened to each trajectory on its way to a sequence; logged, never silent."""

    trajectories: int = 0
    built: int = 0
    cut_at_turn: int = 0
    """Longer than max_len: cut after the last whole assistant turn that fits."""
    dropped_too_long: int = 0
    """Longer than max_len and dropped (overflow='drop', or not even one turn fits)."""
    dropped_no_trainable: int = 0
    """No assistant token left to train on (no assistant turn, all train=False)."""
    dropped_template: int = 0
    """The chat template does not render the conversation prefix-stably (cannot be split into turns)."""
    spliced_turns: int = 0
    """Assistant turns whose recorded token ids were used as sampled."""
    retokenised_turns: int = 0
    """Assistant turns tokenised from their text (no recorded ids)."""
    unaligned_turns: int = 0
    """Recorded ids whose decoded text differs from what the template renders (spliced anyway)."""
    mismatched_turns: int = 0
    """Recorded ids that are not this tokenizer's encoding of the turn (another model's tokenizer sampled them:
    ids out of the vocabulary, or decoding to other text): retokenised from the text, their log-probs dropped."""
    tokens: int = 0
    trained_tokens: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_too_long + self.dropped_no_trainable + self.dropped_template

    def log(self, logger: logging.Logger = log) -> None:
        logger.info("data: %d trajectories -> %d sequences, %d tokens (%d trained); %d spliced, %d retokenised turns",
                    self.trajectories, self.built, self.tokens, self.trained_tokens, self.spliced_turns,
                    self.retokenised_turns)
        if self.cut_at_turn or self.dropped:
            logger.warning("data: %d cut at a turn boundary (too long), dropped %d too long, %d with nothing to "
                           "train, %d the chat template cannot split", self.cut_at_turn, self.dropped_too_long,
                           self.dropped_no_trainable, self.dropped_template)
        if self.unaligned_turns:  # e.g. a special token sampled mid-text, which `content` does not show
            logger.info("data: %d recorded turns kept as sampled although their text renders differently",
                        self.unaligned_turns)
        if self.mismatched_turns:
            logger.warning("data: %d turns were sampled with another tokenizer than the trained model's: "
                           "retokenised from their text (their recorded log-probs dropped)", self.mismatched_turns)


class _TemplateError(ValueError):
    pass


def _render(tokenizer: Any, dicts: list[dict[str, Any]], gen: bool, tools: list[dict] | None) -> str:
    if not dicts:
        return ""
    return tokenizer.apply_chat_template(dicts, tools=tools, add_generation_prompt=gen, tokenize=False)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


OnMismatch = Literal["retokenize", "refuse"]


def same_tokenizer(token_ids: list[int], content: str, tokenizer: Any) -> bool:
    """Whether ``token_ids`` can be this tokenizer's encoding of a turn whose text is ``content``: every id is in
    its vocabulary and they decode (special tokens skipped) to the text, up to surrounding whitespace and a few
    characters at the end (a stop string's last token may run past it, or the sampler may cut a partial one)."""
    if any(not 0 <= t < len(tokenizer) for t in token_ids):
        return False
    decoded = tokenizer.decode(token_ids, skip_special_tokens=True).strip()
    text = content.strip()
    short, long = sorted((decoded, text), key=len)
    return long.startswith(short) and len(long) - len(short) <= 16


def tokenize_messages(messages: list[Message], tokenizer: Any, tools: list[dict] | None = None,
                      report: BuildReport | None = None, on_mismatch: OnMismatch = "retokenize") -> Sequence:
    """Render and tokenise a conversation; see the module docstring for the rules. No length limit.
    Recorded ids that another tokenizer produced (`same_tokenizer` fails) are retokenised from their text, or
    raise `TokenizerMismatch` with ``on_mismatch="refuse"``."""
    report = report if report is not None else BuildReport()
    dicts = message_dicts(messages)
    ids: list[int] = []
    mask: list[int] = []
    old: list[float] = []
    ends: list[int] = []
    done = ""  # text already turned into tokens

    def add(tokens: list[int], trained: bool, logprobs: list[float] | None = None) -> None:
        ids.extend(tokens)
        mask.extend([int(trained)] * len(tokens))
        old.extend(logprobs if logprobs is not None else [math.nan] * len(tokens))

    for i, m in enumerate(messages):
        if m.role != "assistant":
            continue
        prompt = _render(tokenizer, dicts[:i], True, tools)
        full = _render(tokenizer, dicts[:i + 1], False, tools)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise _TemplateError(f"chat template is not prefix-stable at message {i}")
        add(_encode(tokenizer, prompt[len(done):]), False)
        segment = full[len(prompt):]
        if m.token_ids and not same_tokenizer(m.token_ids, m.content, tokenizer):
            if on_mismatch == "refuse":
                raise TokenizerMismatch(f"message {i}: its recorded token ids do not decode to its text with the "
                                        "trained model's tokenizer (sampled by another model?)")
            report.mismatched_turns += 1
            m = m.model_copy(update={"token_ids": None, "logprobs": None})
        if m.token_ids:
            lps = m.logprobs if m.logprobs is not None and len(m.logprobs) == len(m.token_ids) else None
            add(list(m.token_ids), m.train, lps)
            sampled = tokenizer.decode(m.token_ids, skip_special_tokens=False)
            if segment.startswith(sampled):
                rest = segment[len(sampled):]
            elif segment.startswith(m.content) and sampled.startswith(m.content):
                extra = sampled[len(m.content):]  # e.g. the end marker the sampler emitted
                rest = segment[len(m.content):]
                rest = rest[len(extra):] if rest.startswith(extra) else rest
            else:
                report.unaligned_turns += 1
                rest = ""
            add(_encode(tokenizer, rest), False)
            report.spliced_turns += 1
        else:
            body = segment.rstrip()
            add(_encode(tokenizer, body), m.train)
            add(_encode(tokenizer, segment[len(body):]), False)
            report.retokenised_turns += 1
        done = full
        ends.append(len(ids))
    if ids:
        mask[0] = 0  # the first token is never predicted
    return Sequence(input_ids=ids, loss_mask=mask, old_logprobs=old, turn_ends=ends)


RECOMPUTED_POLICIES = ("llamacpp:",)
"""Rollout policy spec prefixes whose recorded log-probs are not the trained model's (quantised weights)."""


def build_sequence(traj: Trajectory, tokenizer: Any, *, max_len: int, overflow: Overflow = "cut",
                   tools: list[dict] | None = None, reward: float | None = None,
                   report: BuildReport | None = None, on_mismatch: OnMismatch = "retokenize") -> Sequence | None:
    """One trajectory as a `Sequence` of at most ``max_len`` tokens, or None (counted in ``report``)."""
    report = report if report is not None else BuildReport()
    report.trajectories += 1
    try:
        seq = tokenize_messages(traj.messages(), tokenizer, tools=tools, report=report, on_mismatch=on_mismatch)
    except TokenizerMismatch as e:
        raise TokenizerMismatch(f"trajectory {traj.id} (policy {traj.policy or '?'}): {e}; set token_mismatch: "
                                "retokenize to train on its text instead") from None
    except _TemplateError as e:
        log.debug("trajectory %s: %s", traj.id, e)
        report.dropped_template += 1
        return None
    if len(seq) > max_len:
        fits = [e for e in seq.turn_ends if e <= max_len and sum(seq.loss_mask[:e]) > 0]
        if overflow == "drop" or not fits:
            report.dropped_too_long += 1
            return None
        cut = fits[-1]
        seq = Sequence(seq.input_ids[:cut], seq.loss_mask[:cut], seq.old_logprobs[:cut],
                       turn_ends=[e for e in seq.turn_ends if e <= cut])
        report.cut_at_turn += 1
    if seq.trained_tokens == 0:
        report.dropped_no_trainable += 1
        return None
    if traj.policy.startswith(RECOMPUTED_POLICIES):
        seq.old_logprobs = [math.nan] * len(seq)
    seq.trajectory_id, seq.instance_id, seq.run_id = traj.id, traj.instance_id, traj.run_id
    seq.reward, seq.truncated = reward, traj.truncated
    report.built += 1
    report.tokens += len(seq)
    report.trained_tokens += seq.trained_tokens
    return seq


def build_sequences(items: list[tuple[Trajectory, float | None]], tokenizer: Any, *, max_len: int,
                    overflow: Overflow = "cut", tools: list[dict] | None = None,
                    on_mismatch: OnMismatch = "retokenize") -> tuple[list[Sequence], BuildReport]:
    """`build_sequence` over ``(trajectory, reward)`` pairs; the report is logged."""
    report = BuildReport()
    out = [s for t, r in items if (s := build_sequence(t, tokenizer, max_len=max_len, overflow=overflow,
                                                        tools=tools, reward=r, report=report,
                                                        on_mismatch=on_mismatch)) is not None]
    report.log()
    return out, report


# --- from the run store --------------------------------------------------------------------------

def pick_reward(rewards: dict[str, Any], name: str | None) -> float | None:
    """The scalar of the named reward; without a name: `combined` if stored, else the only one, else None."""
    if name is not None:
        r = rewards.get(name)
    elif "combined" in rewards:
        r = rewards["combined"]
    elif len(rewards) == 1:
        r = next(iter(rewards.values()))
    else:
        r = None
    return None if r is None else float(r.total)


NEVER_TRAINED = ("hgm:meta", "hgm:smoke")
"""Trajectory origins that are never training data of the task policy: HGM's meta-agent editing an agent
variant (another task, another prompt) and the ungraded smoke episodes that validate a child."""
DEMONSTRATIONS = ("reference", "demonstration")
"""Origins of demonstrations (a task's reference answer, a known fix): successes by construction."""


def trainable(traj: Trajectory) -> bool:
    """Whether a stored trajectory may be training data at all: finished, not an infrastructure failure or an
    interrupted episode, not a meta-agent or smoke episode."""
    return traj.status.value != "running" and not traj.infra_failure and not traj.origin.startswith(NEVER_TRAINED)


def load_trajectories(run_dirs: list[Path], *, reward: str | None = None, min_reward: float | None = None,
                      include_running: bool = False) -> list[tuple[Trajectory, float | None]]:
    """Finished trajectories of every run directory with their reward (``reward`` names which one).
    Infrastructure errors, interrupted episodes and HGM's meta-agent and smoke episodes (`NEVER_TRAINED`) are
    never training data: they are left out.

    ``min_reward`` keeps only trajectories whose reward is at least that (those without one are dropped, except
    demonstrations, `DEMONSTRATIONS`, which are successes by construction).
    """
    out: list[tuple[Trajectory, float | None]] = []
    for d in run_dirs:
        with RunStore(d, readonly=True) as store:
            for traj in store.trajectories():
                if traj.status.value == "running" and not include_running:
                    continue
                if traj.infra_failure:  # an infra error or an interrupted run says nothing about the policy
                    continue
                if traj.origin.startswith(NEVER_TRAINED):
                    continue
                r = pick_reward(store.rewards(traj.id), reward)
                demo = traj.origin.startswith(DEMONSTRATIONS)
                if min_reward is not None and not demo and (r is None or r < min_reward):
                    continue
                out.append((traj, r))
    return out


# --- rows ------------------------------------------------------------------------------------------

def plan_rows(lengths: list[int], max_len: int, pack: bool = True) -> list[list[int]]:
    """Indices of the sequences each row holds: first-fit decreasing into rows of ``max_len`` tokens
    when ``pack``, else one sequence per row (in order)."""
    if not pack:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_len - lengths[i])
    return rows


@dataclass
class Tree:
    """Sequences laid out together: their shared context once (``trunk`` tokens), then each one's own tokens.

    The members' first ``trunk`` tokens are equal and carry no loss, so computing them once changes no
    log-prob: each member's tokens attend to the trunk and to their own earlier tokens (`attention_masks`),
    at their own positions. A single sequence is a tree with no trunk."""

    members: list[int]
    """Indices of the sequences."""
    trunk: int = 0
    """Leading tokens shared by every member (context only: no trained target among them or right after)."""

    def length(self, seqs: list[Sequence]) -> int:
        return self.trunk + sum(len(seqs[i]) - self.trunk for i in self.members)


def _shareable(seqs: list[Sequence], members: list[int]) -> int:
    """Trunk length of a tree of ``members`` (sorted by tokens): their common prefix, ending before the first
    trained target of any of them."""
    a, b = seqs[members[0]].input_ids, seqs[members[-1]].input_ids
    n = min(len(a), len(b))
    same = (torch.tensor(a[:n]) == torch.tensor(b[:n])).tolist() + [False]
    common = same.index(False)
    first_trained = min(seqs[i].loss_mask.index(1) for i in members)
    return max(0, min(common, first_trained - 1))


def plan_trees(seqs: list[Sequence], idx: list[int], max_len: int, min_shared: int = 16) -> list[Tree]:
    """Group sequences ``idx`` into trees that share a leading context (a GRPO group's prompt, a system
    prompt): sorted by tokens, a sequence joins the tree before it when the shared trunk is at least
    ``min_shared`` tokens, saves tokens overall and the tree fits ``max_len``."""
    trees: list[Tree] = []
    for i in sorted(idx, key=lambda i: seqs[i].input_ids):
        if trees:
            t = trees[-1]
            k = _shareable(seqs, t.members + [i])
            grown = Tree(t.members + [i], k)
            if (k >= min_shared and len(t.members) * k >= (len(t.members) - 1) * t.trunk
                    and grown.length(seqs) <= max_len):
                trees[-1] = grown
                continue
        trees.append(Tree([i]))
    return trees


@dataclass
class Batch:
    """Padded rows of sequences, ready for the model; shifted so index t predicts ``targets[:, t]``."""

    input_ids: Tensor
    """(R, L) token ids (padding: the pad id)."""
    position_ids: Tensor
    """(R, L) positions, restarting at 0 for each packed sequence (and for the padding)."""
    targets: Tensor
    """(R, L-1) next tokens: ``input_ids[:, 1:]``."""
    mask: Tensor
    """(R, L-1) float, 1 where ``targets`` is a trained token."""
    old_logprobs: Tensor
    """(R, L-1) recorded sampling log-probs of ``targets`` (NaN where not recorded)."""
    seq_ids: Tensor
    """(R, L-1) long, index (into the collated list) of the sequence each target belongs to, -1 for padding."""
    advantages: Tensor
    """(R, L-1) float, the advantage of the target's sequence (0 without advantages)."""
    ref_logprobs: Tensor
    """(R, L-1) reference-policy log-probs of ``targets`` (NaN where not computed)."""
    group_ids: Tensor
    """(R, L) long, which tree (or lone sequence, or padding) of its row each token belongs to."""
    branch_ids: Tensor
    """(R, L) long, 0 for a tree's shared trunk, k >= 1 for the tokens of its k-th member."""

    @property
    def tokens(self) -> int:
        return int((self.seq_ids >= 0).sum()) + self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def attention_masks(batch: Batch, window: int | None = None) -> tuple[Tensor, Tensor | None]:
    """(R, 1, L, L) boolean masks, True where a query may attend to a key: same tree, the key in the trunk or in
    the query's own branch, at a position not after the query's; with ``window``, also the same mask limited to
    keys fewer than ``window`` positions back (sliding-window layers). Returns ``(full, sliding or None)``."""
    g, b, pos = batch.group_ids, batch.branch_ids, batch.position_ids
    allowed = ((g[:, :, None] == g[:, None, :]) & ((b[:, None, :] == 0) | (b[:, :, None] == b[:, None, :]))
               & (pos[:, None, :] <= pos[:, :, None]))
    sliding = allowed & (pos[:, :, None] - pos[:, None, :] < window) if window else None
    return allowed[:, None], sliding[:, None] if sliding is not None else None


def collate(seqs: list[Sequence], rows: list[list[int | Tree]], pad_id: int,
            advantages: list[float] | None = None, train: list[bool] | None = None) -> Batch:
    """Rows of (packed) sequences or trees as tensors. ``train[i] == False`` masks sequence i out entirely."""
    rows = [[x if isinstance(x, Tree) else Tree([x]) for x in row] for row in rows]
    width = max(sum(t.length(seqs) for t in row) for row in rows)
    R = len(rows)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    mask = torch.zeros((R, width))
    old = torch.full((R, width), math.nan)
    sid = torch.full((R, width), -1, dtype=torch.long)
    adv = torch.zeros((R, width))
    ref = torch.full((R, width), math.nan)
    grp = torch.zeros((R, width), dtype=torch.long)
    br = torch.zeros((R, width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for g, tree in enumerate(row):
            k = tree.trunk
            if k:  # the shared context, once (no loss on it: see `plan_trees`)
                first = seqs[tree.members[0]]
                ids[r, at:at + k] = torch.tensor(first.input_ids[:k])
                pos[r, at:at + k] = torch.arange(k)
                sid[r, at:at + k] = tree.members[0]
                grp[r, at:at + k] = g
                at += k
            for branch, i in enumerate(tree.members, start=1):
                s, n = seqs[i], len(seqs[i]) - k
                ids[r, at:at + n] = torch.tensor(s.input_ids[k:])
                pos[r, at:at + n] = torch.arange(k, k + n)
                if train is None or train[i]:
                    mask[r, at:at + n] = torch.tensor(s.loss_mask[k:], dtype=torch.float)
                old[r, at:at + n] = torch.tensor(s.old_logprobs[k:], dtype=torch.float)
                sid[r, at:at + n] = i
                grp[r, at:at + n] = g
                br[r, at:at + n] = branch
                if advantages is not None:
                    adv[r, at:at + n] = advantages[i]
                if s.ref_logprobs is not None:
                    ref[r, at:at + n] = torch.tensor(s.ref_logprobs[k:], dtype=torch.float)
                at += n
        pos[r, at:] = torch.arange(width - at)  # padding: a segment of its own
        grp[r, at:] = len(row)
    return Batch(input_ids=ids, position_ids=pos, targets=ids[:, 1:], mask=mask[:, 1:], old_logprobs=old[:, 1:],
                 seq_ids=sid[:, 1:], advantages=adv[:, 1:], ref_logprobs=ref[:, 1:], group_ids=grp, branch_ids=br)


def micro_batches(seqs: list[Sequence], idx: list[int], *, micro_batch_size: int, max_len: int, pack: bool,
                  pad_id: int, advantages: list[float] | None = None,
                  train: list[bool] | None = None, share_prefix: bool = False) -> list[Batch]:
    """The sequences ``idx`` of one optimiser step, as micro-batches of ``micro_batch_size`` sequences
    (each packed into rows of ``max_len`` tokens when ``pack``; with ``share_prefix``, sequences that start
    with the same context are laid out as trees that compute it once, `plan_trees`)."""
    out = []
    for k in range(0, len(idx), micro_batch_size):
        chunk = idx[k:k + micro_batch_size]
        trees = plan_trees(seqs, chunk, max_len) if share_prefix else [Tree([i]) for i in chunk]
        rows = plan_rows([t.length(seqs) for t in trees], max_len, pack)
        out.append(collate(seqs, [[trees[j] for j in row] for row in rows], pad_id, advantages, train))
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A deterministic shuffle of ``range(n)`` for one epoch (so a resumed run sees the same order)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()
