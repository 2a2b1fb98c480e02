#!/usr/bin/env bash
# Set up (idempotent) and run the main job on its embedded defaults: the agent with the embedded
# Gemma 3 270M policy on two bundled SWE-style instances, graded in fresh sandboxes. Extra arguments
# go to `evolve run` (e.g. --policy openai:http://127.0.0.1:8000/v1#model --limit 12 --max-steps 30).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/evolve run bundled --limit 2 --workers 2 --max-steps 3 --max-tokens-per-step 64 "$@"
