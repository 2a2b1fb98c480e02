"""`evolve loop`: the self-evolving loop as one command, one tree whose nodes are (agent variant, policy version).

Modules, each with one job:

- `config`: `LoopConfig` (`loop.yaml`), the shipped defaults in `configs/`.
- `splits`: the training, search and held-out instances.
- `state`: the records in the run store (generations, stages, nodes) and the layout of the run directory.
- `policies`: a node's policy spec -> a loaded policy (hf, llama.cpp through GGUF, vLLM adapters).
- `data`: a generation's training data.
- `world`: the search's world: evaluations, code children (HGM's meta-agent) and weight children (SFT, GRPO).
- `scheduler`: the learned choice of each expansion's kind, on top of HGM's scheduler.
- `stages`: one function per stage (warm start, rollouts, evolution, search, gate).
- `gate`: the held-out paired test.
- `cost`, `report`: what each generation cost; the per-generation table.
- `run`: `run_loop`, the generations; `cli`: `evolve loop`.
"""
