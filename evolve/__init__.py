"""The evolution layer: CLI, run orchestration, run store, SE-Agent, HGM, Agent-R, SFT/GRPO."""

import agent  # noqa: F401 - sets OpenMP's wait policy (see agent/__init__.py) before any evolve module loads torch
