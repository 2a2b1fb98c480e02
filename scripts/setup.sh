#!/usr/bin/env bash
# Idempotent setup of a fresh Debian machine, as root: Debian packages, the Docker engine, the
# virtualenv with pinned dependencies, the base image and the bundled task images.
# Takes a few seconds when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[setup] $*" >&2; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v git >/dev/null || missing+=(git)
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || missing+=(python3-pytest)  # the local sandbox's python
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# `evolve tasks --build --task-repo` runs swebench's image builder, which uses `docker buildx` where it is
# installed (Debian packages it as docker-buildx from trixie on; elsewhere the daemon's classic builder is used)
if ! docker buildx version >/dev/null 2>&1 && apt-cache show docker-buildx >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-buildx >/dev/null || log "could not install docker-buildx"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (no bridge network: sandboxes run with network_mode=none)"
  nohup dockerd --bridge=none --iptables=false >/var/log/evolve-dockerd.log 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start:"; tail -n 20 /var/log/evolve-dockerd.log; exit 1; }
fi

stamp=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.evolve-stamp 2>/dev/null)" != "$stamp" ]; then
  log "creating .venv and installing pinned dependencies"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q torch==2.13.0        # the CPU wheel: keep this exact pin
  # llama-cpp-python compiles llama.cpp (about 13 minutes on 2 cores, once; a portable build)
  .venv/bin/python -c 'import llama_cpp' 2>/dev/null || log "compiling llama-cpp-python (minutes, once)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv/bin/pip install -q -e ".[test,ray]"
  echo "$stamp" > .venv/.evolve-stamp
fi

.venv/bin/evolve sandbox build-base
.venv/bin/evolve tasks bundled --build
