#!/usr/bin/env bash
# Every benchmark in one command: sets up (idempotent), installs what the benchmarks need (the `bench`
# extra pinned in pyproject.toml: TRL, mini-swe-agent) into .venv, then runs each bench/bench_*.py with
# short settings and prints its table (the rows of the README's "Measured" table).
#   bash scripts/bench.sh                 # all of them
#   bash scripts/bench.sh harness exec    # only these (names without bench_ and .py)
# Exits non-zero if any benchmark failed; the others still run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if ! .venv/bin/python -c 'import trl, minisweagent' 2>/dev/null; then
  echo "[bench] installing the bench extra (TRL, mini-swe-agent)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip install -q -e ".[test,ray,bench]"
fi

# Short settings per benchmark (each script's own defaults otherwise).
declare -A ARGS=(
  [exec]="--calls 300"
  [pool]="--rounds 30"
  [harness]="--reps 3"
  [generation]="--tokens 64 --batch-size 8 --turns 2"
  [grpo]="--steps 3"
  [code_index]="--queries 20"
  [hgm]="--seeds 20"
  [serve]="--repeats 2"
)

if (($#)); then names=("$@"); else
  names=()
  for f in bench/bench_*.py; do n=${f#bench/bench_}; names+=("${n%.py}"); done
fi

failed=()
for name in "${names[@]}"; do
  script="bench/bench_${name}.py"
  [ -f "$script" ] || { echo "[bench] no $script" >&2; failed+=("$name"); continue; }
  echo
  echo "=== $script ${ARGS[$name]:-}"
  start=$(date +%s)
  if [ "$name" = serve ] && ! ARGS[serve]+=" --llama-server $(bash scripts/build_llama_server.sh)"; then
    failed+=("$name"); continue
  fi
  # shellcheck disable=SC2086  # the arguments are words
  if ! MSWEA_SILENT_STARTUP=1 .venv/bin/python "$script" ${ARGS[$name]:-}; then failed+=("$name"); fi
  echo "[bench] $name: $(( $(date +%s) - start )) s"
done

if ((${#failed[@]})); then
  echo "[bench] failed: ${failed[*]}" >&2
  exit 1
fi
