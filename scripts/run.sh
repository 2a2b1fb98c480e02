#!/usr/bin/env bash
# Set up (idempotent) and run the main job on its embedded defaults: `evolve loop toolcall` with the embedded
# Gemma 3 270M (evolve/loop/configs/toolcall.yaml: a warm start on reference answers, then generations of
# rollouts, Agent-R, SFT and GRPO children in one HGM tree and a held-out gate), printing the per-generation
# table. Extra arguments go to `evolve loop` (e.g. --generations 3 --out runs/loop-toolcall --config my.yaml).
# The evaluation entry for SWE tasks is `evolve run swe-bench-verified` (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/evolve loop toolcall "$@"
