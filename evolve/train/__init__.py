"""Policy updates: SFT and GRPO of a local model from stored, scored trajectories.

Modules, each with one job (nothing heavy is imported here):

- `data`: trajectories -> token sequences (chat template, spliced sampled ids, loss mask, truncation,
  packing) -> batches.
- `losses`: the pure loss functions (masked NLL, group advantages, clipped policy gradient, k3 KL).
- `sft`: `SFTConfig`, `sft_step`, `train_sft`.
- `grpo`: `GRPOConfig`, `grpo_step`, `train_grpo` (offline, from run directories).
- `rollout`: `ToolcallGRPOConfig`, `train_grpo_toolcall` (online GRPO on the tool-calling suite).
- `session`: output directory, checkpoints/resume, policy versions and per-step records.
- `versions`: `resolve_policy("version:ID", runs_root)` -> a `load_policy` spec and options (what
  `evolve.policies.RunsRoot` gives `agent.policy.load_policy` for `version:` specs).
- `errors`: `TrainError` (importable without torch).
- `cli`: the `evolve train` typer sub-app.
"""
