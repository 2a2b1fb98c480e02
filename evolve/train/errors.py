"""The error training raises for problems a user can fix (kept apart from `modeling` so that checking for it
does not import torch)."""

from __future__ import annotations


class TrainError(RuntimeError):
    """A problem the user can fix (no trajectories, bad config, unknown model or version)."""
