"""Rewards: pure functions from test reports or trajectories to a `Reward` with its parts."""
