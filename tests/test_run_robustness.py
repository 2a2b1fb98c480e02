"""`evolve run` when things go wrong around the agent: a sandbox removed mid-episode, a missing image, a
grading harness without a verdict, Ctrl-C, a stop request from another process (issue 14, items 4, 6, 7
and 12; issue 9, item 3). Real Docker, real grading, scripted policies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agent.replay import ScriptedPolicy
from evolve.errors import ConfigError
from evolve.run.run_lock import RunLock
from evolve.run.runner import RunConfig, report_ok, run_swe
from evolve.store import RunStore
from evolve.train.data import load_trajectories
from records import Message, TrajectoryStatus
from records.trajectory import INTERRUPTED
from sandbox import SandboxConfig
from tasks.registry import get_suite
from tests.conftest import bwrap_works

pytestmark = pytest.mark.usefixtures("docker_ready")


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


SLEEP = call("bash", command="sleep 600")


def gold(inst) -> list[str]:
    return [call("create", path="/tmp/fix.diff", content=inst.patch),
            call("bash", command="git apply /tmp/fix.diff && git status --short"), call("submit")]


class ByInstance(ScriptedPolicy):
    """Scripted answers chosen by the instance a conversation is about; `sleepers` sleep in their first
    `sleep_episodes` episodes (then act from the script). Counts episodes; says when one starts sleeping."""

    def __init__(self, scripts: dict[str, list[str]], statements: dict[str, str], sleepers=(), sleep_episodes=1):
        super().__init__([])
        self.scripts, self.statements = scripts, statements
        self.sleepers, self.sleep_episodes = set(sleepers), sleep_episodes
        self.episodes: dict[str, int] = {}
        self.sleeping = threading.Event()

    def _instance(self, conv: list[Message]) -> str:
        text = "\n".join(m.content for m in conv[:2])
        return next(iid for iid, s in self.statements.items() if s in text)

    def generate(self, conversations, params, tools=None):
        for conv in conversations:
            if not any(m.role == "assistant" for m in conv):
                iid = self._instance(conv)
                self.episodes[iid] = self.episodes.get(iid, 0) + 1
        return super().generate(conversations, params, tools)

    def responses_for(self, conversation):
        iid = self._instance(conversation)
        if iid in self.sleepers and self.episodes[iid] <= self.sleep_episodes:
            self.sleeping.set()
            return [Message(role="assistant", content=SLEEP)]
        return [Message(role="assistant", content=r) for r in self.scripts[iid]]


@pytest.fixture(scope="module")
def pair():
    suite = get_suite("bundled")
    suite.build_images()
    a, b = suite.instances()[:2]
    return a, b


def policy_for(insts, sleepers=(), sleep_episodes=1) -> ByInstance:
    return ByInstance({i.instance_id: gold(i) for i in insts}, {i.instance_id: i.problem_statement[:80] for i in insts},
                      sleepers, sleep_episodes)


def run_containers(run_id: str) -> list:
    from sandbox.docker import docker_client

    return docker_client().containers.list(all=True, filters={"label": f"evolve.run={run_id}"})


def when_sleeping(policy: ByInstance, run_id: str, action, timeout: float = 120) -> threading.Thread:
    """In a thread: once an episode sleeps in its container, do `action(container)`."""
    def go() -> None:
        assert policy.sleeping.wait(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            live = [c for c in run_containers(run_id) if c.status == "running"]
            if live:
                time.sleep(1.0)  # let the command start
                action(live[0])
                return
            time.sleep(0.2)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def unique_out(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"


# --- 14.6: infrastructure failures -------------------------------------------------------------------

def test_a_removed_sandbox_is_an_infra_error_that_is_retried_and_never_trained_on(pair, tmp_path: Path):
    inst = pair[0]
    out = unique_out(tmp_path, "removed")
    policy = policy_for([inst], sleepers=[inst.instance_id])
    remover = when_sleeping(policy, out.name, lambda c: c.remove(force=True))
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=1, infra_retry_delay=0)
    report = run_swe(cfg, [inst], policy)
    remover.join(5)
    assert report["resolved"] == 1 and report["infra_errors"] == 0 and report_ok(report)
    with RunStore(out, readonly=True) as store:
        first, second = (store.get_trajectory(t) for t in store.trajectory_ids())
        assert first.status == TrajectoryStatus.infra_error and "died" in first.error
        assert store.rewards(first.id) == {} and store.test_report(first.id) is None  # never a -1
        assert second.status == TrajectoryStatus.submitted and store.rewards(second.id)["swe"].total == 1.0
        assert [e["kind"] for e in store.events() if e["kind"] == "infra_error"] == ["infra_error"]
    assert [t.id for t, _ in load_trajectories([out])] == [second.id]
    assert policy.episodes[inst.instance_id] == 2


def test_a_missing_image_is_an_infra_error_within_the_retry_bound_then_a_resume_retries(pair, tmp_path: Path):
    inst = pair[0]
    broken = inst.model_copy(update={"image": "evolve-task-missing:nothing"})
    out = unique_out(tmp_path, "missing")
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=2, infra_retry_delay=0)
    report = run_swe(cfg, [broken], policy_for([inst]))
    row = report["per_instance"][0]
    assert report["infra_errors"] == 1 and report["ungraded"] == 1 and report["resolved_rate"] is None
    assert row["resolved"] is None and "not found" in row["infra_error"] and not report_ok(report)
    assert (out / "predictions.jsonl").read_text() == ""  # an infra error is not a prediction
    with RunStore(out, readonly=True) as store:
        trajs = [store.get_trajectory(t) for t in store.trajectory_ids()]
        assert [t.status for t in trajs] == [TrajectoryStatus.infra_error] * 3  # 1 + infra_retries, no more
        assert all(store.rewards(t.id) == {} for t in trajs)
        assert store.instance_status(out.name) == {inst.instance_id: "infra_error"}
    again = run_swe(cfg, [inst], policy_for([inst]))  # the image is back: the same command retries it
    assert again["resolved"] == 1 and again["infra_errors"] == 0 and report_ok(again)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["model_name_or_path"] for p in preds] == [cfg.policy]
    with pytest.raises(ConfigError, match="was run with --policy"):  # never relabel earlier predictions
        run_swe(cfg.model_copy(update={"policy": "hf:another/model"}), [inst], policy_for([inst]))


def test_a_grading_harness_without_a_verdict_is_shown_not_hidden(pair, tmp_path: Path):
    inst = pair[0]
    silent = inst.model_copy(update={"test_cmd": "echo the tests never ran"})  # no test results in the log
    out = unique_out(tmp_path, "ungraded")
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=2, infra_retry_delay=0)
    policy = policy_for([inst])
    report = run_swe(cfg, [silent], policy)
    assert policy.episodes[inst.instance_id] == 1  # a harness that ran without a verdict: not rerun
    saved = json.loads((out / "report.json").read_text())
    for r in (report, saved):
        row = r["per_instance"][0]
        assert r["graded"] == 0 and r["ungraded"] == 1 and r["grading_errors"] == 1 and r["resolved_rate"] is None
        assert row["resolved"] is None and row["grading_error"].startswith("grading")
        assert row["infra_error"] is None  # a grading error, told apart from a dead episode sandbox
    assert not report_ok(report)
    with RunStore(out, readonly=True) as store:
        (tid,) = store.trajectory_ids()
        assert store.get_trajectory(tid).status == TrajectoryStatus.infra_error
        assert "submitted" in store.get_trajectory(tid).error  # the episode itself was fine
        assert store.rewards(tid) == {}
    from evolve.run_cli import _print_report
    from rich.console import Console

    console = Console(record=True, width=200)
    import evolve.run_cli as run_cli

    saved_console, run_cli.console = run_cli.console, console
    try:
        _print_report(report, out)
    finally:
        run_cli.console = saved_console
    text = console.export_text()
    assert "1 grading errors" in text and "ungraded" in text and "nothing graded" in text


def test_a_grading_sandbox_that_dies_is_graded_again_on_the_same_patch(pair, tmp_path: Path):
    inst = pair[0].model_copy(update={"test_cmd": f"sleep 4; {pair[0].test_cmd}"})  # time to remove it
    out = unique_out(tmp_path, "regrade")
    episode: set[str] = set()
    removed: list[str] = []
    submitting = threading.Event()

    class Watched(ByInstance):
        def generate(self, conversations, params, tools=None):
            if sum(m.role == "assistant" for m in conversations[0]) == 2:  # about to submit
                episode.update(c.id for c in run_containers(out.name))
                submitting.set()
            return super().generate(conversations, params, tools)

    def remove_the_first_grading_sandbox() -> None:
        submitting.wait(120)
        deadline = time.time() + 120
        while time.time() < deadline:
            for c in run_containers(out.name):
                if c.id not in episode:
                    try:
                        c.remove(force=True)
                    except Exception:  # noqa: BLE001 - e.g. still being created: try again
                        continue
                    removed.append(c.id)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=remove_the_first_grading_sandbox, daemon=True)
    watcher.start()
    policy = Watched({inst.instance_id: gold(inst)}, {inst.instance_id: inst.problem_statement[:80]})
    events: list[str] = []
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=1, infra_retry_delay=0)
    report = run_swe(cfg, [inst], policy, on_event=lambda iid, what: events.append(what))
    watcher.join(5)
    assert episode and removed and "grading again (1/1)" in events, events
    assert policy.episodes[inst.instance_id] == 1  # the episode ran once; its patch was graded twice
    assert report["resolved"] == 1 and report_ok(report)
    with RunStore(out, readonly=True) as store:
        (tid,) = store.trajectory_ids()
        assert store.get_trajectory(tid).status == TrajectoryStatus.submitted


# --- 14.4: a graceful stop ---------------------------------------------------------------------------

def test_a_stop_request_stops_promptly_marks_the_running_episode_and_resumes(pair, tmp_path: Path):
    a, b = pair
    out = unique_out(tmp_path, "stop")
    policy = policy_for(pair, sleepers=[a.instance_id])
    asked: list[float] = []

    def request(container) -> None:
        asked.append(time.time())
        with RunStore(out) as other:  # another process's connection, as the TUI's
            other.request_stop(out.name)

    requester = when_sleeping(policy, out.name, request)
    cfg = RunConfig(instances=[a.instance_id, b.instance_id], out=str(out), workers=1, stop_grace=20)
    report = run_swe(cfg, list(pair), policy)
    requester.join(5)
    took = time.time() - asked[0]
    print(f"stop request -> run_swe returned: {took:.1f} s")
    assert took < 15, f"stopping took {took:.1f} s"
    assert report["stopped"] == "stop requested" and not report_ok(report)
    rows = {r["instance_id"]: r for r in report["per_instance"]}
    assert rows[a.instance_id]["interrupted"] and rows[a.instance_id]["error"] == INTERRUPTED
    assert rows[b.instance_id]["status"] == "not run"  # queued: never started
    assert json.loads((out / "report.json").read_text())["stopped"] == "stop requested"
    assert not [c for c in run_containers(out.name) if c.status == "running"]
    RunLock(out).acquire().release()  # the lock went with the run
    again = run_swe(cfg, list(pair), policy_for(pair))
    assert again["resolved"] == 2 and again["stopped"] is None and report_ok(again)
    with RunStore(out, readonly=True) as store:
        assert len(store.trajectory_ids(instance_id=a.instance_id)) == 2
        assert len(store.trajectory_ids(instance_id=b.instance_id)) == 1


CLI = """
import os, sys
import evolve.policies as ep  # every command loads its policies through it
from tests.test_run_robustness import policy_for
from tasks.registry import get_suite
insts = get_suite("bundled").instances()[:2]
sleepers = [insts[0].instance_id] if os.environ["SCRIPT"] == "sleep" else []
ep.load_policy = lambda spec, runs=None: policy_for(insts, sleepers=sleepers, sleep_episodes=99)
from evolve.cli import main
sys.argv = ["evolve", *sys.argv[1:]]
main()
"""


def evolve_cli(args: list[str], script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "SCRIPT": script, "HF_HUB_OFFLINE": "1"},
                            cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.slow
def test_cli_exit_codes_infra_error_then_ctrl_c_then_resume(pair, tmp_path: Path):
    a, b = pair
    out = unique_out(tmp_path, "cli")
    args = ["run", "bundled", "--instances", f"{a.instance_id},{b.instance_id},{a.instance_id}", "--workers", "1",
            "--out", str(out), "--infra-retries", "0"]

    def wait_for_container(proc) -> object:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            live = [c for c in run_containers(out.name) if c.status == "running"]
            if live:
                time.sleep(2.0)
                return live[0]
            time.sleep(0.3)
        raise AssertionError(f"no sandbox started: {proc.communicate()[0][-2000:]}")

    # 1: A's sandbox is removed from outside, B resolves: exit 1, the infra error in the table
    proc = evolve_cli(args, "sleep")
    wait_for_container(proc).remove(force=True)
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1 and "not all instances were graded" in text and "infra" in text, text[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = {r["instance_id"]: r for r in report["per_instance"]}
    assert report["instances"] == 2 and report["infra_errors"] == 1  # --instances A,B,A runs A once
    assert rows[a.instance_id]["infra_error"] and rows[b.instance_id]["resolved"] is True
    # 2: the same command retries A; Ctrl-C while it runs: exit 130, promptly, resumable
    proc = evolve_cli(args, "sleep")
    wait_for_container(proc)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    text = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, text[-3000:]
    assert time.time() - sent < 20 and "stopped (Ctrl-C)" in text and "resume" in text, text[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["stopped"] == "Ctrl-C" and report["interrupted"] == 1 and report["resolved"] == 1
    # 3: the same command resumes and finishes: exit 0, a happy table
    proc = evolve_cli(args, "gold")
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "resolved 2/2" in text, text[-3000:]


# --- 14.7: the local sandbox --------------------------------------------------------------------------

@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")
def test_run_bundled_with_the_local_sandbox_resolves(pair, tmp_path: Path):
    inst = pair[0]
    out = unique_out(tmp_path, "local")
    cfg = RunConfig(instances=[inst.instance_id], out=str(out), workers=1, infra_retries=0,
                    sandbox=SandboxConfig(backend="local"))
    host_pytest = subprocess.run(["/usr/bin/python3", "-c", "import pytest"], capture_output=True).returncode == 0
    if not host_pytest:  # it cannot grade: it must say so before any episode, not fail every instance
        from sandbox import SandboxError

        with pytest.raises(SandboxError, match="apt-get install python3-pytest"):
            run_swe(cfg, [inst], policy_for([inst]))
        with RunStore(out, readonly=True) as store:
            assert store.trajectory_ids() == []
        return
    report = run_swe(cfg, [inst], policy_for([inst]))
    assert report["resolved"] == 1 and report_ok(report), report["per_instance"]
    assert (out / "workspaces").is_dir()


def test_the_local_sandbox_refuses_instances_that_exist_only_as_images(pair, tmp_path: Path):
    from sandbox import SandboxError

    swe = pair[0].model_copy(update={"instance_id": "astropy__astropy-1", "repo": "astropy/astropy",
                                     "suite": "swe-bench-verified", "image": "sweb.eval.x86_64.astropy_1776_astropy-1"})
    cfg = RunConfig(instances=[swe.instance_id], out=str(unique_out(tmp_path, "refuse")), workers=1,
                    sandbox=SandboxConfig(backend="local"))
    with pytest.raises(SandboxError, match="use --sandbox docker"):
        run_swe(cfg, [swe], policy_for([pair[0]]))


def test_a_policy_that_fails_stops_the_run_with_its_error_and_a_report(pair, tmp_path: Path):
    from agent.policy.base import PolicyError

    class Gone(ScriptedPolicy):
        def generate(self, conversations, params, tools=None):
            raise PolicyError("cannot reach http://127.0.0.1:9/v1 (connection refused)")

    a, b = pair
    out = unique_out(tmp_path, "policy")
    cfg = RunConfig(instances=[a.instance_id, b.instance_id], out=str(out), workers=1)
    with pytest.raises(PolicyError, match="cannot reach"):
        run_swe(cfg, list(pair), Gone([]))
    report = json.loads((out / "report.json").read_text())
    assert report["stopped"].startswith("error: PolicyError") and report["not_run"] == 1
    with RunStore(out, readonly=True) as store:
        (tid,) = store.trajectory_ids()
        traj = store.get_trajectory(tid)
        assert traj.infra_failure and store.rewards(tid) == {}  # not the agent's failure, no -1
        assert store.instance_status(out.name)[a.instance_id] == "error"
    assert not [c for c in run_containers(out.name) if c.status == "running"]
