"""OpenMP threads sleep instead of spinning unless the user says otherwise (agent/__init__.py): on a busy CPU
spinning threads of torch and llama.cpp starve each other (bench/bench_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = "import os, agent.policy; print(os.environ['OMP_WAIT_POLICY'])"


def probe(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_agent_makes_openmp_threads_sleep_between_regions():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert probe(env) == "PASSIVE"


def test_a_policy_the_user_set_is_kept():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_WAIT_POLICY": "ACTIVE"}
    assert probe(env) == "ACTIVE"
