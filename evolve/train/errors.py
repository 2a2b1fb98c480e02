"""The error training raises for problems a user can fix (kept apart from `modeling` so that checking for it
does not import torch)."""

from __future__ import annotations


class TrainError(RuntimeError):
    """A problem the user can fix (no trajectories, bad config, unknown model or version)."""


class NothingLearned(TrainError):
    """A training run made no optimiser update (every GRPO group had equal rewards): no policy version is stored,
    since it would be the starting weights under a new name (and become `version:latest`)."""


class TrainingStopped(Exception):
    """A training ended early by a stop request or Ctrl-C, after a step, checkpointed (its version `stopped`); the
    same command resumes it. Raised by callers that need a version to go on (the loop)."""


class TokenizerMismatch(TrainError):
    """Recorded token ids that the trained model's tokenizer did not produce (with `token_mismatch: refuse`)."""
