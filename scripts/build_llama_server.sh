#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (the baseline of bench/bench_serve.py) from the llama.cpp sources vendored
# in the llama-cpp-python sdist that pyproject.toml pins (the llama.cpp `llamacpp:` policies run), with the same
# portable flags setup.sh uses; only that target (minutes on 2 cores). Idempotent; prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -1 | cut -d= -f3)
dir=build/llama-server-$version
src=$dir/llama_cpp_python-$version/vendor/llama.cpp
bin=$src/build/bin/llama-server
if [ ! -x "$bin" ]; then
  mkdir -p "$dir"
  echo "[llama-server] building llama.cpp's server from llama-cpp-python $version's sources (minutes)" >&2
  .venv/bin/pip download -q "llama-cpp-python==$version" --no-binary :all: --no-deps -d "$dir" >&2
  tar xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
  cmake -S "$src" -B "$src/build" -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$src/build" --target llama-server -j"$(nproc)" >&2
fi
echo "$bin"
