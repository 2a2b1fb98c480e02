"""Careless input to `evolve run` / `evolve trajectories`: one line, exit 2, nothing run, nothing corrupted.

Every case here used to run (or half-run) with a traceback, or silently do something else (issue 14,
items 3, 8, 11, 12). No Docker: each fails before a sandbox would start.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.errors import ConfigError
from evolve.run_cli import parse_weights
from evolve.run.run_lock import LOCK_NAME, RunLock, RunLocked
from evolve.store import DB_NAME, RunStore, StoreError
from records import Reward, Trajectory, TrajectoryStatus
from rewards.combine import RewardWeights, combine


def evolve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def assert_one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-800:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and expected in r.stderr, r.stderr[-1500:]
    assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


# --- 14.3: reward weights ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("swe=inf", "finite"), ("swe=nan", "finite"), ("swe=-inf", "finite"), ("swe=1e999", "finite"),
    ("sw=1", "unknown reward 'sw'"), ("swe=1,swe=2", "twice"), ("swe", "NAME=NUMBER"), ("", "empty"),
])
def test_bad_weights_are_refused_when_parsed(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_weights(text)


def test_weights_that_the_run_cannot_produce_are_refused() -> None:
    w = parse_weights("swe=1,judge=0.5")
    w.check_available({"swe", "judge"})
    with pytest.raises(ValueError, match="needs --judge"):
        w.check_available({"swe"})
    parse_weights("swe=1,judge=0").check_available({"swe"})  # a zero weight needs nothing


def test_non_finite_weights_and_rewards_never_reach_the_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite"):
        RewardWeights(weights={"swe": math.inf})
    with pytest.raises(ValueError, match="finite"):
        combine({"swe": Reward(name="swe", total=1.0)}, {"swe": math.nan})
    with pytest.raises(ValueError, match="non-finite"):
        combine({"swe": Reward(name="swe", total=1e308)}, {"swe": 1e10})  # overflows to inf
    with RunStore(tmp_path) as store:
        traj = Trajectory(instance_id="i")
        store.put_trajectory(traj)
        for bad in (Reward(name="combined", total=math.inf), Reward(name="combined", total=math.nan),
                    Reward(name="swe", total=1.0, parts={"resolved": math.nan})):
            with pytest.raises(ValueError, match="non-finite"):
                store.put_reward(traj.id, bad)
        store.put_reward(traj.id, Reward(name="swe", total=-1.0))
    with RunStore(tmp_path, readonly=True) as store:  # every later read still works
        assert {k: v.total for k, v in store.rewards(traj.id).items()} == {"swe": -1.0}


@pytest.mark.parametrize("weights,message", [
    ("swe=inf", "finite"), ("swe=nan", "finite"), ("bogus=1", "unknown reward"),
    ("swe=1,judge=1", "needs --judge"),
])
def test_cli_refuses_bad_weights_before_anything_runs(tmp_path: Path, weights: str, message: str) -> None:
    out = tmp_path / "run"
    r = evolve("run", "bundled", "--limit", "1", "--out", str(out), "--reward-weights", weights)
    assert_one_line_error(r, message)
    assert not (out / DB_NAME).exists()  # nothing stored, no episode ran


# --- 14.11 / 14.12: bad values and unusable places ----------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (("--limit", "0"), "--limit must be at least 1"),
    (("--limit", "-1"), "--limit must be at least 1"),
    (("--max-steps", "0"), "--max-steps must be at least 1"),
    (("--max-steps", "-3"), "--max-steps must be at least 1"),
    (("--instances", " , "), "--instances names no instance"),
])
def test_cli_refuses_bad_numbers(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = tmp_path / "run"
    assert_one_line_error(evolve("run", "bundled", "--out", str(out), *args), message)
    assert not out.exists()


def test_cli_refuses_unusable_out_directories(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    for out, message in ((a_file, "is a file"), (a_file / "below", "cannot create the run directory"),
                         (Path("/proc/evolve-cannot-be-here"), "cannot create the run directory")):
        assert_one_line_error(evolve("run", "bundled", "--limit", "1", "--out", str(out)), message)
    assert a_file.read_text() == "not a directory"


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    db = sqlite3.connect(out / DB_NAME)
    db.execute("CREATE TABLE accounts (id INTEGER, owner TEXT)")
    db.execute("INSERT INTO accounts VALUES (1, 'alice')")
    db.commit()
    db.close()
    before = (out / DB_NAME).read_bytes()
    with pytest.raises(StoreError, match="not an Evolve run store"):
        RunStore(out)
    assert_one_line_error(evolve("run", "bundled", "--limit", "1", "--out", str(out)), "not an Evolve run store")
    db = sqlite3.connect(out / DB_NAME)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["accounts"]
    db.close()
    assert (out / DB_NAME).read_bytes() == before


def test_an_empty_dataset_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    r = evolve("run", "swe-bench-verified", "--dataset", str(data), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert "no instances" in r.stderr or "empty" in r.stderr, r.stderr[-1500:]


def test_export_to_a_directory_is_refused_without_leaving_a_temp_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore(run) as store:
        store.put_trajectory(Trajectory(instance_id="i", status=TrajectoryStatus.submitted))
        store.put_trajectory(Trajectory(instance_id="i", status=TrajectoryStatus.infra_error, error="sandbox died"))
    target = tmp_path / "exports"
    target.mkdir()
    r = evolve("trajectories", str(run), "--export", str(target))
    assert_one_line_error(r, "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports", "run"] and not any(target.iterdir())
    blocked = tmp_path / "afile"
    blocked.write_text("x")
    assert_one_line_error(evolve("trajectories", str(run), "--export", str(blocked / "t.jsonl")), "--export")
    ok = evolve("trajectories", str(run), "--export", str(target / "t.jsonl"))  # for replay: no infra errors
    assert ok.returncode == 0 and len((target / "t.jsonl").read_text().splitlines()) == 1
    assert [p.name for p in target.iterdir()] == ["t.jsonl"]
    ok = evolve("trajectories", str(run), "--export", str(target / "t.jsonl"), "--all")
    assert ok.returncode == 0 and len((target / "t.jsonl").read_text().splitlines()) == 2
    from evolve.trajectories import load_stored_trajectories

    assert [t.status for t in load_stored_trajectories(run)] == [TrajectoryStatus.submitted]


# --- 14.8: one run per directory ---------------------------------------------------------------------

HOLD = """
import sys, time
from evolve.run.run_lock import RunLock
RunLock(sys.argv[1], "holder for a test").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def hold_lock(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_on_a_run_directory_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock(out).acquire()
        r = evolve("run", "bundled", "--limit", "1", "--out", str(out))
        assert_one_line_error(r, "in use by another Evolve process")
        assert not (out / DB_NAME).exists()
        r = evolve("run", "toolcall", "--limit", "1", "--out", str(out))
        assert_one_line_error(r, "in use by another Evolve process")
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with its process: nothing stale
        holder.wait()
    with RunLock(out) as lock, RunLock(out):  # re-entrant within a process
        assert lock.held and (out / LOCK_NAME).exists()
    assert not lock.held


def test_the_lock_is_exclusive_between_processes_not_threads_of_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RunLock(out):
        script = ("import sys\nfrom evolve.run.run_lock import RunLock, RunLocked\n"
                  "try:\n    RunLock(sys.argv[1]).acquire()\nexcept RunLocked as e:\n    print('refused:', e)\n")
        r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60)
        assert "refused:" in r.stdout and str(os.getpid()) in r.stdout, r.stdout + r.stderr
    started = time.time()
    r = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60)
    assert "refused" not in r.stdout and time.time() - started < 30


# --- 14.6: what training reads -----------------------------------------------------------------------

def test_training_never_reads_infra_errors_or_interrupted_episodes(tmp_path: Path) -> None:
    from evolve.train.data import load_trajectories
    from records.trajectory import INTERRUPTED

    with RunStore(tmp_path) as store:
        kept = Trajectory(instance_id="a", status=TrajectoryStatus.submitted)
        failed = Trajectory(instance_id="a", status=TrajectoryStatus.error, error="git diff failed")
        infra = Trajectory(instance_id="a", status=TrajectoryStatus.infra_error, error="the sandbox died")
        cut = Trajectory(instance_id="a", status=TrajectoryStatus.error, error=INTERRUPTED)
        for t in (kept, failed, infra, cut):
            store.put_trajectory(t)
        store.put_reward(kept.id, Reward(name="swe", total=1.0))
        store.put_reward(failed.id, Reward(name="swe", total=-1.0))
    got = {t.id for t, _ in load_trajectories([tmp_path])}
    assert got == {kept.id, failed.id}  # the agent's own failure is data; the infrastructure's is not
    assert json.loads(infra.model_dump_json())["status"] == "infra_error"


# --- 14.12: an unreachable judge, duplicates, an empty selection ---------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_an_unreachable_judge_is_found_before_any_episode(tmp_path: Path) -> None:
    from agent.policy import load_policy
    from agent.replay import ScriptedPolicy
    from evolve.run.runner import RunConfig, run_swe
    from tasks.registry import get_suite

    inst = get_suite("bundled").instances()[0]
    judge = load_policy(f"openai:http://127.0.0.1:{free_port()}/v1#judge")
    out = tmp_path / "run"
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), judge="openai:...",
                    rewards=RewardWeights(weights={"swe": 1.0, "judge": 0.5}))
    started = time.time()
    with pytest.raises(ConfigError, match="the judge .* does not answer"):
        run_swe(cfg, [inst], ScriptedPolicy([]), judge_policy=judge)
    assert time.time() - started < 60 and not out.exists()  # before a sandbox, before the store
    with pytest.raises(ConfigError, match="no instances"):
        run_swe(cfg, [], ScriptedPolicy([]))
    with pytest.raises(ConfigError, match="needs --judge"):  # judge weighted, no judge given
        run_swe(cfg, [inst, inst], ScriptedPolicy([]))
    assert not out.exists()
