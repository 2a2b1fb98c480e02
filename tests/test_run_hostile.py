"""One episode's failure ends that episode only, and what the agent did to its own sandbox is its own failure
(issue 18, items 4 and 5). Real Docker (and bubblewrap), real grading, `replay:` trajectories through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from agent.graph import Agent
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from evolve.run.runner import RunConfig, report_ok, run_swe
from evolve.store import RunStore
from records import Message, Step, Trajectory, TrajectoryStatus
from sandbox import WORKDIR, SandboxConfig
from tasks.registry import get_suite
from tests.conftest import bwrap_works

pytestmark = pytest.mark.usefixtures("docker_ready")

ROOT = Path(__file__).resolve().parent.parent


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


def gold(inst) -> list[str]:
    return [call("create", path="/tmp/fix.diff", content=inst.patch),
            call("bash", command="git apply /tmp/fix.diff && git status --short"), call("submit")]


@pytest.fixture(scope="module")
def trio():
    suite = get_suite("bundled")
    suite.build_images()
    return suite.instances()[:3]


def replay_file(path: Path, scripts: list) -> Path:
    """A `replay:` file holding one trajectory per (instance, responses), keyed by the prompt the default variant
    gives the instance."""
    agent = Agent(ScriptedPolicy([]), AgentVariant.load())
    with open(path, "w") as f:
        for inst, responses in scripts:
            traj = Trajectory(instance_id=inst.instance_id, prompt=agent.prompt(inst, WORKDIR),
                              steps=[Step(index=i, response=Message(role="assistant", content=r))
                                     for i, r in enumerate(responses)])
            f.write(traj.model_dump_json() + "\n")
    return path


def evolve(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})


def rows_of(out: Path) -> dict[str, dict]:
    return {r["instance_id"]: r for r in json.loads((out / "report.json").read_text())["per_instance"]}


# --- item 4: a patch over the limit, with other instances in the run -----------------------------------

def test_a_patch_over_64_mb_and_a_killed_server_end_their_episodes_only(trio, tmp_path: Path):
    big, killer, fine = trio
    out = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
    replay = replay_file(tmp_path / "hostile.jsonl", [
        (big, [call("bash", command="yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 70M > big.txt; ls -l big.txt"),
               call("submit")]),
        (killer, [call("bash", command="kill -9 $PPID; sleep 5"), call("submit")]),
        (fine, gold(fine)),
    ])
    r = evolve("run", "bundled", "--instances", ",".join(i.instance_id for i in trio), "--workers", "3",
               "--max-steps", "3", "--policy", f"replay:{replay}", "--out", str(out))
    assert "Traceback" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-4000:]
    report = json.loads((out / "report.json").read_text())
    rows = rows_of(out)
    assert rows[fine.instance_id]["resolved"] is True
    assert report["infra_errors"] == 0 and report["grading_errors"] == 0 and report["errors"] == 2, report
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]  # every instance ran and was graded: exit 0
    with RunStore(out, readonly=True) as store:
        by_instance = {store.get_trajectory(t).instance_id: store.get_trajectory(t) for t in store.trajectory_ids()}
        t = by_instance[big.instance_id]
        assert t.status == TrajectoryStatus.error and t.patch == "" and "over the limit" in t.error, t.error
        assert "over the limit" in t.steps[1].observation.content  # the submit was refused, with the reason
        assert store.rewards(t.id)["swe"].total == -1.0  # graded as the empty patch it stored: the agent's failure
        t = by_instance[killer.instance_id]
        assert t.sandbox_ended_by_agent and "step 1" in t.error, t.error
        assert "kill -9 $PPID" in t.steps[0].response.content and "sandbox died" in t.steps[0].observation.content
        assert store.rewards(t.id)["swe"].total == -1.0 and not t.infra_failure


# --- item 4: a full workspace disk (the local sandbox's workspaces on a small tmpfs) ----------------------

@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_a_full_workspace_disk_ends_that_episode_only(trio, tmp_path: Path, monkeypatch):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    small = Path(tempfile.mkdtemp(prefix="evolve-small-disk-"))  # sandboxes' uids must reach it: not under tmp_path
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=1777", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        monkeypatch.setenv("EVOLVE_SANDBOX_DIR", str(small / "sandboxes"))
        fill, fine = trio[0], trio[1]
        policy = ByStatement({fill.problem_statement[:80]: [
            call("bash", command="head -c 64M /dev/zero > fill.bin; df -h . | tail -1"), call("submit")],
            fine.problem_statement[:80]: gold(fine)})
        out = tmp_path / "full"
        cfg = RunConfig(instances=[fill.instance_id, fine.instance_id], out=str(out), workers=1, max_steps=3,
                        sandbox=SandboxConfig(backend="local"))
        report = run_swe(cfg, [fill, fine], policy)
        rows = rows_of(out)
        assert rows[fine.instance_id]["resolved"] is True, rows
        row = rows[fill.instance_id]
        assert row["status"] == "error" and "could not be taken" in row["error"], row
        assert report["infra_errors"] == 0 and report_ok(report)
    finally:
        subprocess.run(["umount", "-l", str(small)])
        small.rmdir()


class ByStatement(ScriptedPolicy):
    def __init__(self, scripts: dict[str, list[str]]):
        super().__init__([])
        self.scripts = scripts

    def responses_for(self, conversation):
        text = "\n".join(m.content for m in conversation[:2])
        script = next(s for key, s in self.scripts.items() if key in text)
        return [Message(role="assistant", content=r) for r in script]


# --- item 5: kill -9 $PPID, on both backends ----------------------------------------------------------

@pytest.mark.parametrize("backend", ["docker", "local"])
def test_killing_the_command_server_is_never_an_infra_error(trio, tmp_path: Path, backend: str):
    if backend == "local" and not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    inst = trio[0]
    policy = ByStatement({inst.problem_statement[:80]: [call("bash", command="kill -9 $PPID; sleep 3; echo survived"),
                                                        *gold(inst)]})
    out = tmp_path / f"kill-{backend}"
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=2, infra_retry_delay=0,
                    sandbox=SandboxConfig(backend=backend))
    report = run_swe(cfg, [inst], policy)
    assert report["infra_errors"] == 0 and report_ok(report), report
    with RunStore(out, readonly=True) as store:
        (tid,) = store.trajectory_ids()  # no retry: it was not the infrastructure's failure
        t = store.get_trajectory(tid)
        assert "kill -9 $PPID" in t.steps[0].response.content
        if backend == "docker":  # the server died: the agent's failure, the step that did it stored
            assert t.sandbox_ended_by_agent and len(t.steps) == 1 and store.rewards(tid)["swe"].total == -1.0
        else:  # the server is the sandbox's pid 1: the kill does nothing and the episode goes on to resolve
            assert "survived" in t.steps[0].observation.content and store.rewards(tid)["swe"].total == 1.0


# --- item 7: view of a FIFO and of a 256 MB file --------------------------------------------------------

def test_view_of_a_fifo_and_of_a_huge_file_answer_at_once(trio):
    import resource

    from sandbox import start_sandbox

    inst = trio[0]
    steps = [call("bash", command="mkfifo pipe && truncate -s 256M huge.log && echo made"),
             call("view", path="pipe"), call("view", path="huge.log"), call("view", path="/dev/zero")]
    sb = start_sandbox(SandboxConfig(), image=inst.image)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        traj = Agent(ScriptedPolicy(steps), AgentVariant.load()).run(inst, sb)
    finally:
        sb.stop()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    seen = [s.observation.content for s in traj.steps]
    assert "pipe is a FIFO, not a regular file" in seen[1], seen[1]
    assert "over the limit" in seen[2] and "sed -n" in seen[2], seen[2]
    assert "character device" in seen[3], seen[3]
    assert traj.status == TrajectoryStatus.submitted  # the episode went on to its end
    assert grown_mb < 100, f"host memory grew {grown_mb:.0f} MB"
