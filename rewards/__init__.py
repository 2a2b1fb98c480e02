"""Rewards: pure functions from test reports or trajectories to a `Reward` with its parts.

- `rewards.toolrl`: ToolRL's format + tool-call correctness reward.
- `rewards.swe`: SWE outcome reward from a `TestReport`.
- `rewards.judge`: rubric-based LLM-as-judge (the model is passed in as a function).
- `rewards.combine`: weighted sum of rewards that keeps every part.
"""
