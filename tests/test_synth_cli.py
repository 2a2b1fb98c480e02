"""`evolve tasks synthesize` and `evolve tasks demos` from the command line: one-line user errors, a synthesis
killed mid-way that resumes without losing or doubling anything, the result run by `evolve run synth:FILE`
and demonstrated by scripted trajectories through the real agent loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_synth_validate import calc_repo

ROOT = Path(__file__).resolve().parents[1]


def evolve(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, env=env,
                          cwd=kw.get("cwd", ROOT), timeout=kw.get("timeout", 600))


@pytest.mark.parametrize("args,message", [
    (["synthesize", "no-such-package"], "unknown source 'no-such-package'"),
    (["synthesize", "toolz==0.1"], "only toolz==1.2.0 is pinned"),
    (["synthesize", "bundled:nope"], "no bundled repository 'nope'"),
    (["synthesize", "bundled", "--methods", "magic"], "--methods takes procedural and/or llm"),
    (["synthesize", "bundled", "--methods", "llm"], "--methods llm needs --policy"),
    (["synthesize", "bundled", "--families", "flip"], "unknown bug family 'flip'"),
    (["synthesize", "/tmp"], "not a git repository"),
    (["demos", "/no/such.jsonl"], "no such file"),
])
def test_user_errors_are_one_line(args, message):
    r = evolve("tasks", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_tasks_still_lists_suites_and_names_synth():
    r = evolve("tasks")
    assert r.returncode == 0 and "bundled" in r.stdout and "toolcall" in r.stdout
    r = evolve("run", "synth:/no/such.jsonl")
    assert r.returncode == 2 and "evolve tasks synthesize" in r.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_killed_synthesis_resumes_then_runs_and_demonstrates(tmp_path):
    from sandbox.docker import prune

    repo = calc_repo(tmp_path)
    out = tmp_path / "suite.jsonl"
    cmd = [sys.executable, "-m", "evolve.cli", "tasks", "synthesize", str(repo), "--n", "50", "--families",
           "flip_operator,change_constant", "--out", str(out), "--workers", "1", "--batch", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    prune()  # the killed synthesis's sandbox (its owner is dead)
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) >= 1, "the synthesis was killed before it kept a task"

    r = evolve("tasks", "synthesize", str(repo), "--n", "50", "--families", "flip_operator,change_constant",
               "--out", str(out), "--workers", "1", "--batch", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [row["instance_id"] for row in rows]
    assert len(ids) == len(set(ids)) and ids[:len(first)] == [row["instance_id"] for row in first]
    assert sorted(row["extra"]["function"] for row in rows) == ["add", "clamp", "clamp"]
    attempts = [json.loads(line) for line in (tmp_path / "suite.jsonl.attempts").read_text().splitlines()]
    keys = [a["key"] for a in attempts if a["kind"] == "bug"]
    assert len(keys) == len(set(keys)), "a bug was tried twice"
    assert {a["function"] for a in attempts if a["verdict"] == "rejected"} == {"noisy"}

    # every command takes it as a suite; the demonstrations resolve through the real loop with replay
    listed = evolve("tasks", f"synth:{out}")
    assert listed.returncode == 0 and "git-calc/flip_operator" in listed.stdout
    demos = evolve("tasks", "demos", str(out), "--out", str(tmp_path / "demos"), "--split", "train", cwd=tmp_path)
    assert demos.returncode == 0, demos.stdout + demos.stderr
    assert "3/3 resolved" in demos.stdout
    from evolve.train.data import load_trajectories

    trained = load_trajectories([tmp_path / "demos"], min_reward=1.0)
    assert len(trained) == 3
    for traj, _ in trained:
        names = [s.tool_calls[0].name for s in traj.steps]
        assert names == ["bash", "view", "str_replace", "bash", "submit"][:len(names)] and names[-1] == "submit"
        assert "passed" in traj.steps[-2].observation.content
