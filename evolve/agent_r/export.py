"""Export Agent-R's training data for `evolve train sft` with the loss masks intact.

The data is a run directory of its own (a run store holding only the revision and good trajectories), so
`evolve train sft DIR` trains on exactly it. Masks are `Message.train` on each assistant turn, which the
trainer's data builder honours (`evolve.train.data`: a `train=False` turn is context, mask 0): the bad prefix
is context, the revision turn and the good continuation are learned. Nothing is flattened into
input/output pairs (upstream's `rewrite()` dropped every flag that way)."""

from __future__ import annotations

from pathlib import Path

from evolve.store import RunStore
from records import Reward, Trajectory


def export_sft_data(trajectories: list[Trajectory], out: Path, run_id: str, config: dict | None = None) -> Path:
    """Store `trajectories` (their `train` flags as they are) in a fresh run store at `out`; idempotent.
    Each gets a reward `agent-r` of 1 (they all reached a good final state), so `--min-reward` keeps them."""
    with RunStore(out) as store:
        store.put_run(run_id, "agent-r-data", config or {}, status="finished")
        for traj in trajectories:
            t = traj.model_copy(update={"run_id": run_id})
            store.put_trajectory(t)
            store.put_reward(t.id, Reward(name="agent-r", total=1.0, parts={"splice": float(t.origin == "agent-r:splice")}))
    return out


def masked_in_tokens(trajectories: list[Trajectory], tokenizer) -> int:
    """Tokens the trainer should learn, counted independently of the trainer: each learned assistant turn's
    sampled token ids when recorded, else its text plus its end-of-turn token."""
    n = 0
    for t in trajectories:
        for s in t.steps:
            if s.response.train and s.response.token_ids:
                n += len(s.response.token_ids)  # trained exactly as sampled
            elif s.response.train:
                n += len(tokenizer(s.response.content, add_special_tokens=False)["input_ids"]) + 1
    return n
