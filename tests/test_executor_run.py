"""`evolve run bundled --executor ray` on a real Ray cluster on 127.0.0.1 (2 CPUs) against real Docker:
the same outcomes as `local` with the same replayed policy, an episode whose Ray worker is killed is rerun and
nothing is lost, and a killed driver resumes with the same command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.graph import Agent
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from evolve.store import RunStore
from records import Message, Step, Trajectory
from sandbox import WORKDIR
from tasks.registry import get_suite

pytest.importorskip("ray", reason="Ray is the optional extra `evolve[ray]`")
pytestmark = [pytest.mark.usefixtures("docker_ready"), pytest.mark.docker]


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


@pytest.fixture(scope="module")
def pair():
    suite = get_suite("bundled")
    suite.build_images()
    return suite.instances()[:2]


def replay_file(path: Path, pair, pause: float = 0.0) -> Path:
    """Recorded trajectories for both instances, matched by their prompts: the first resolves (the gold
    patch), the second edits nothing and submits (unresolved). `pause` seconds of `sleep` in each."""
    agent = Agent(ScriptedPolicy([]), AgentVariant.load())
    gold, other = pair
    scripts = {gold.instance_id: [call("create", path="/tmp/fix.diff", content=gold.patch),
                                  call("bash", command=f"sleep {pause}; git apply /tmp/fix.diff"), call("submit")],
               other.instance_id: [call("bash", command=f"sleep {pause}; ls"), call("submit")]}
    lines = []
    for inst in pair:
        steps = [Step(index=k, response=Message(role="assistant", content=r))
                 for k, r in enumerate(scripts[inst.instance_id])]
        lines.append(Trajectory(instance_id=inst.instance_id, prompt=agent.prompt(inst, WORKDIR),
                                steps=steps).model_dump_json())
    path.write_text("\n".join(lines) + "\n")
    return path


def evolve_run(out: Path, policy: Path, pair, *extra: str, **popen) -> subprocess.Popen:
    args = [sys.executable, "-m", "evolve.cli", "run", "bundled", "--instances",
            ",".join(i.instance_id for i in pair), "--policy", f"replay:{policy}", "--workers", "2",
            "--out", str(out), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, **popen)


def finish(proc: subprocess.Popen, timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def outcomes(out: Path, interrupted: int = 0) -> dict[str, tuple]:
    """Per instance: status, resolved, patch and steps of its finished trajectory (one each); besides them only
    `interrupted` trajectories cut by a kill, marked as such."""
    with RunStore(out, readonly=True) as store:
        rows = store.trajectory_summaries()
        cut = [r for r in rows if r["status"] == "error"]
        assert len(cut) == interrupted and all("interrupted" in store.get_trajectory(r["id"]).error for r in cut)
        done = [r for r in rows if r["status"] != "error"]
        assert sorted(r["instance_id"] for r in done) == sorted(store.instance_status(rows[0]["run_id"]))
        return {r["instance_id"]: (r["status"], r["resolved"], store.get_trajectory(r["id"]).patch,
                                   r["steps"]) for r in done}


def ray_workers_running_episodes() -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines() if "ray::run_remote_episode" in line]


def test_ray_gives_the_same_outcomes_as_local(pair, tmp_path: Path):
    policy = replay_file(tmp_path / "replay.jsonl", pair)
    finish(evolve_run(tmp_path / "runs" / "local", policy, pair))
    finish(evolve_run(tmp_path / "runs" / "ray", policy, pair, "--executor", "ray"))
    local, ray = outcomes(tmp_path / "runs" / "local"), outcomes(tmp_path / "runs" / "ray")
    assert local == ray
    assert sorted(r[1] for r in local.values()) == [False, True]


def test_a_killed_worker_reruns_its_episode_and_nothing_is_lost(pair, tmp_path: Path):
    policy = replay_file(tmp_path / "replay.jsonl", pair, pause=4)
    proc = evolve_run(tmp_path / "runs" / "killed", policy, pair, "--executor", "ray")
    deadline = time.time() + 180
    while not (pids := ray_workers_running_episodes()):
        assert proc.poll() is None and time.time() < deadline, "no episode ever ran on a Ray worker"
        time.sleep(0.2)
    time.sleep(1.0)  # mid-episode: in its `sleep`
    os.kill(pids[0], signal.SIGKILL)
    finish(proc)
    got = outcomes(tmp_path / "runs" / "killed")
    assert sorted(r[1] for r in got.values()) == [False, True]
    assert all(r[0] == "submitted" for r in got.values())


def test_a_killed_driver_resumes_with_the_same_command(pair, tmp_path: Path):
    policy = replay_file(tmp_path / "replay.jsonl", pair, pause=3)
    out = tmp_path / "runs" / "driver"
    proc = evolve_run(out, policy, pair, "--executor", "ray", start_new_session=True)
    deadline = time.time() + 180
    while True:  # the driver stores relayed steps as they arrive: wait for the first
        assert proc.poll() is None and time.time() < deadline, "no step reached the store"
        if (out / "evolve.db").exists():
            with RunStore(out, readonly=True) as store:
                if any(r["steps"] for r in store.trajectory_summaries()):
                    break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
    proc.wait()
    with RunStore(out, readonly=True) as store:
        cut = sum(1 for r in store.trajectory_summaries() if r["status"] == "running")
    assert cut >= 1  # the killed driver had stored live steps of at least one running episode
    finish(evolve_run(out, policy, pair, "--executor", "ray"))
    got = outcomes(out, interrupted=cut)
    assert sorted(r[1] for r in got.values()) == [False, True]


def test_a_judge_scores_ray_episodes_on_the_driver(pair, tmp_path: Path):
    """`--judge` with `--executor ray`: the workers run and grade the episodes, the driver judges each returned
    trajectory and stores `judge` and a `combined` reward that weighs both, exactly as a local run does."""
    from evolve.run.executor import ExecutorConfig
    from agent.policy import load_policy
    from evolve.policies import RunsRoot
    from evolve.run.runner import RunConfig, run_swe
    from rewards.combine import RewardWeights

    policy = replay_file(tmp_path / "replay.jsonl", pair)
    got = {}
    for executor in ("local", "ray"):
        out = tmp_path / "runs" / executor
        cfg = RunConfig(suite="bundled", instances=[i.instance_id for i in pair], out=str(out), workers=2,
                        policy=f"replay:{policy}", judge="scripted",
                        rewards=RewardWeights(weights={"swe": 1.0, "judge": 0.5}),
                        executor=ExecutorConfig(backend=executor, num_cpus=2 if executor == "ray" else None))
        judge = ScriptedPolicy(["Plausible.\nSCORE: 6/10"] * 8)
        run_swe(cfg, pair, load_policy(f"replay:{policy}", runs=RunsRoot(tmp_path)), judge_policy=judge)
        with RunStore(out, readonly=True) as store:
            events = [e for e in store.events() if e["kind"] == "ray_episode"]
            assert len(events) == (2 if executor == "ray" else 0)
            got[executor] = {}
            for tid in store.trajectory_ids():
                traj, rewards = store.get_trajectory(tid), store.rewards(tid)
                assert rewards["judge"].total == pytest.approx(0.6)
                assert rewards["combined"].total == pytest.approx(rewards["swe"].total + 0.5 * 0.6)
                got[executor][traj.instance_id] = (rewards["swe"].total, rewards["combined"].total)
    assert got["local"] == got["ray"]
    assert max(swe for swe, _ in got["ray"].values()) == 1.0  # the gold patch resolved
