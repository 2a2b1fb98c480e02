"""The run store: round trips, a reader beside a writer, SIGKILL mid-write, bad directories."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evolve.store import RunStore, StoreError
from records import Message, PolicyVersion, Reward, Step, TaskInstance, TestReport, ToolCall, Trajectory, TreeNode
from records.trajectory import TrajectoryStatus


def _step(i: int) -> Step:
    return Step(index=i, response=Message(role="assistant", content=f"call {i}", token_ids=[1, 2, i],
                                          logprobs=[-0.1, -0.2, -0.3]),
                tool_calls=[ToolCall(name="bash", arguments={"command": f"echo {i}"})],
                observation=Message(role="tool", content=f"{i}\n", name="bash"), completion_tokens=3)


def test_round_trip(tmp_path: Path):
    with RunStore(tmp_path) as store:
        store.put_run("r1", "run", {"suite": "bundled"})
        inst = TaskInstance(instance_id="i1", suite="bundled", FAIL_TO_PASS=["t::a"])
        store.put_instance("r1", inst)
        traj = Trajectory(run_id="r1", instance_id="i1", prompt=[Message(role="user", content="fix it")])
        store.put_trajectory(traj)
        for i in range(3):
            store.append_step(traj.id, _step(i))
        traj.status, traj.patch = TrajectoryStatus.submitted, "diff"
        store.put_trajectory(traj.model_copy(update={"steps": []}))
        store.put_test_report(traj.id, TestReport(instance_id="i1", resolved=True, patch_applied=True))
        store.put_reward(traj.id, Reward(name="swe", total=1.0, parts={"resolved": 1.0}))
        store.put_policy_version(PolicyVersion(base="hf:tiny"))
        store.put_tree_node(TreeNode(variant_dir="/v"))
        store.set_instance_status("r1", "i1", "done")
    with RunStore(tmp_path, readonly=True) as ro:
        got = ro.get_trajectory(traj.id)
        assert got.status == TrajectoryStatus.submitted and got.patch == "diff"
        assert [s.response.token_ids for s in got.steps] == [[1, 2, 0], [1, 2, 1], [1, 2, 2]]
        assert len(got.messages()) == 1 + 2 * 3
        assert ro.instance_status("r1") == {"i1": "done"}
        assert ro.instances("r1")[0].FAIL_TO_PASS == ["t::a"]
        assert ro.test_report(traj.id).resolved
        assert ro.rewards(traj.id)["swe"].parts == {"resolved": 1.0}
        summary = ro.trajectory_summaries("r1")[0]
        assert summary["steps"] == 3 and summary["resolved"] is True
        with pytest.raises(sqlite3.OperationalError):
            ro.put_run("r2", "run", {})


def test_resume_keeps_statuses(tmp_path: Path):
    with RunStore(tmp_path) as store:
        store.put_run("r", "run", {"a": 1})
        store.put_instance("r", TaskInstance(instance_id="x"))
        store.set_instance_status("r", "x", "done")
    with RunStore(tmp_path) as store:  # a second start of the same run
        store.put_run("r", "run", {"a": 1})
        store.put_instance("r", TaskInstance(instance_id="x"))
        assert store.instance_status("r") == {"x": "done"}
        assert len(store.runs()) == 1


WRITER = """
import sys
from evolve.store import RunStore
from records import Message, Step, Trajectory
store = RunStore(sys.argv[1])
traj = Trajectory(id="t", instance_id="i")
store.put_trajectory(traj)
i = 0
while True:
    big = "x" * 20000
    store.append_step("t", Step(index=i, response=Message(role="assistant", content=big)))
    store.log_event("step", i=i)
    print(i, flush=True)
    i += 1
"""


def test_sigkill_mid_write_loses_nothing_stored(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    reader_counts = []
    last = -1
    deadline = time.time() + 60
    while last < 200 and time.time() < deadline:
        last = int(proc.stdout.readline())
        if last % 50 == 10:  # another process reads while the writer writes
            with RunStore(tmp_path, readonly=True) as ro:
                reader_counts.append(len(ro.get_trajectory("t").steps))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(tmp_path / "evolve.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with RunStore(tmp_path) as store:
        steps = store.get_trajectory("t").steps
        assert len(steps) >= last + 1  # everything the writer reported as done is there
        assert [s.index for s in steps] == list(range(len(steps)))
        assert all(len(s.response.content) == 20000 for s in steps)
    assert reader_counts and reader_counts == sorted(reader_counts)


def test_not_a_run_directory(tmp_path: Path):
    with pytest.raises(StoreError, match="not a run directory"):
        RunStore(tmp_path / "nothing", readonly=True)
    (tmp_path / "evolve.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not an Evolve run store"):
        RunStore(tmp_path)
