"""The evolution layer: CLI, run orchestration, run store, SE-Agent, HGM, Agent-R, SFT/GRPO."""
