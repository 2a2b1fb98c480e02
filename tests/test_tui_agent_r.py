"""Agent-R's work is reachable from its run, and a stop ends its SFT (issue 22, item 6 and "found outside the TUI"):
a real `evolve agent-r toolcall` with a tiny model (as tests/test_agent_r_toolcall_cli.py) is stopped from another
process while its SFT trains; it ends within seconds with the training checkpointed and its version `stopped`. The
TUI opened on its directory shows its searched trajectories (stored under `RUN-it1`) on the run's own dashboard, and
its Training screen finds the version three levels down (`it1/sft`); the same command resumes and finishes it.
Ctrl-C during its SFT (a SIGINT to the real command) ends it the same way: exit 130 with one line saying it stopped and
how to resume, no traceback, no run of the store left "running", and the same command resumes it; Ctrl-C during its
search ends its run `stopped` too."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_r_toolcall_cli import HELD_OUT, ROOT, TRAIN, _start_policy  # noqa: E402

from evolve.store import RunStore  # noqa: E402
from tests.tui_fixtures import settle  # noqa: E402
from tui.app import EvolveApp  # noqa: E402
from tui.screens.dashboard import DashboardScreen  # noqa: E402
from tui.screens.training import TrainingScreen  # noqa: E402


STEPS = 12


def _cli(out: Path, start: Path, sft_steps: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "evolve.cli", "agent-r", "toolcall", "--instances", ",".join(TRAIN),
            "--held-out", ",".join(HELD_OUT), "--iterations", "1", "--policy", f"hf:{start}", "--train-policy",
            f"hf:{start}", "--rollouts", "1", "--n-gen", "4", "--temperature", "1.0", "--alpha", "0.1", "--beta", "0.05",
            "--max-tokens-per-step", "160", "--sft-steps", str(sft_steps), "--full", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _sft_steps(sft: Path) -> int:
    try:
        with RunStore(sft, readonly=True) as store:
            return sum(len(store.train_steps(v.id)) for v in store.policy_versions())
    except Exception:  # noqa: BLE001 - not created yet
        return 0


async def _look(out: Path) -> tuple[int, list[str], dict[str, str]]:
    app = EvolveApp(out, poll=0.2)
    app.animation_level = "none"
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        dash = app.screen
        assert isinstance(dash, DashboardScreen) and dash.run.kind == "agent-r"
        end = time.time() + 30
        while dash.ov is None and time.time() < end:
            await pilot.pause(0.1)
        family = list(dash.family)
        total = dash.total
        await pilot.press("v")
        await settle(app, pilot)
        training = app.screen
        assert isinstance(training, TrainingScreen)
        return total, family, {v.id: v.status for v in training.versions.values() if v.kind == "sft"}


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """The starting policy both tests search with (built once: a minute of SFT on a busy machine)."""
    return _start_policy(tmp_path_factory.mktemp("start"))


def _wait_for_sft(proc: subprocess.Popen, out: Path, steps: int = 2) -> None:
    """Until the command's SFT has stored `steps` steps (a generous wait on a busy machine, not a timing claim)."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and _sft_steps(out / "it1" / "sft") < steps:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert _sft_steps(out / "it1" / "sft") >= steps, "the SFT never reached its second step"


def _statuses(out: Path) -> dict[str, str]:
    """Every run of the command's stores (the Agent-R run, its SFT) with its status."""
    found = {}
    for db in sorted(out.rglob("evolve.db")):
        with RunStore(db.parent, readonly=True) as store:
            found |= {f"{db.parent.relative_to(out)}:{r['id']}": r["status"] for r in store.runs()}
    return found


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_agent_r_stops_during_sft_and_its_records_are_reachable_from_its_run(tmp_path: Path, start: Path):
    out = tmp_path / "agent-r"
    proc = _cli(out, start, sft_steps=STEPS)
    try:
        _wait_for_sft(proc, out)
        with RunStore(out) as store:
            store.request_stop(out.name)
        text = proc.communicate(timeout=900)[0]  # a generous wait on a busy machine, never a timing claim
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in text, text[-3000:]
    sft = out / "it1" / "sft"
    with RunStore(sft, readonly=True) as store:
        run = store.runs()[0]
        version = next(v for v in store.policy_versions() if v.id == run["config"]["version_id"])
        stored = len(store.train_steps(version.id))
    assert run["status"] == "stopped" and version.status == "stopped" and 2 <= stored < STEPS
    assert [p.name for p in (sft / "checkpoints").iterdir()] == [f"step-{stored:06d}"]

    total, family, versions = asyncio.run(_look(out))
    assert total > 0 and f"{out.name}-it1" in family, (total, family)  # the search's trajectories, on the run's page
    assert versions == {version.id: "stopped"}

    again = _cli(out, start, sft_steps=STEPS)
    text = again.communicate(timeout=900)[0]
    assert again.returncode == 0 and "stopped" not in text, text[-3000:]
    _, _, versions = asyncio.run(_look(out))
    assert versions == {version.id: "ready"}


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_ctrl_c_during_agent_r_sft_stops_it_saved_and_the_same_command_resumes(tmp_path: Path, start: Path):
    out = tmp_path / "agent-r"
    steps = 40  # enough that the SFT is still training when the signal lands two steps in
    proc = _cli(out, start, sft_steps=steps)
    try:
        _wait_for_sft(proc, out)
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "Ctrl-C: stopping after the step in flight" in text, text[-3000:]  # said when pressed, not a minute later
    said = [line for line in text.splitlines() if line.startswith("stopped") and "resume" in line]
    assert said == ["stopped: Ctrl-C; run the same command to resume"], text[-3000:]
    statuses = _statuses(out)
    assert statuses == {f".:{out.name}": "stopped", f"it1/data:{out.name}-it1-data": "finished",  # its exported data
                        "it1/sft:train": "stopped"}, statuses
    sft = out / "it1" / "sft"
    with RunStore(sft, readonly=True) as store:
        version = next(v for v in store.policy_versions() if v.id == store.runs()[0]["config"]["version_id"])
        before = {t.step: t.created_at for t in store.train_steps(version.id)}
    stored = len(before)
    assert version.status == "stopped" and 2 <= stored < steps
    assert [p.name for p in (sft / "checkpoints").iterdir()] == [f"step-{stored:06d}"]

    again = _cli(out, start, sft_steps=steps)
    text = again.communicate(timeout=900)[0]
    assert again.returncode == 0 and "stopped" not in text and "Traceback" not in text, text[-3000:]
    assert _statuses(out) == {f".:{out.name}": "finished", f"it1/data:{out.name}-it1-data": "finished",
                              "it1/sft:train": "done"}
    with RunStore(sft, readonly=True) as store:
        assert [v.status for v in store.policy_versions() if v.id == version.id] == ["ready"]
        after = {t.step: t.created_at for t in store.train_steps(version.id)}
    assert sorted(after) == list(range(steps))
    assert {k: after[k] for k in before} == before  # resumed from its checkpoint: the steps before it were not redone


def test_ctrl_c_during_agent_r_search_leaves_its_run_stopped_then_it_resumes(tmp_path: Path):
    """Ctrl-C outside the SFT (here while the search samples: a real SIGINT to this process) ends the run `stopped`,
    not "running"; the same call resumes and finishes it (its policy's answers earn no reward: nothing to train)."""
    from agent.policy.replay import ScriptedPolicy
    from evolve.agent_r.config import AgentRConfig
    from evolve.agent_r.loop import AgentRRunConfig, run_agent_r
    from tasks.registry import get_suite

    class CtrlCOnSecondCall(ScriptedPolicy):
        calls = 0

        def generate(self, conversations, params, tools=None):
            type(self).calls += 1
            if type(self).calls == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C mid-search
            return super().generate(conversations, params, tools)

    out = tmp_path / "agent-r"
    cfg = AgentRRunConfig(suite="toolcall", kind="toolcall", instances=TRAIN[:2], policy="scripted",
                          train_policy="hf:unused", evaluate=False, search=AgentRConfig(rollouts=2, n_gen=2),
                          out=str(out))
    train = get_suite("toolcall").select(TRAIN[:2])
    try:
        report = run_agent_r(cfg, train, [], lambda spec: CtrlCOnSecondCall([]))
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped run_agent_r: its run is left running")
    assert CtrlCOnSecondCall.calls == 2 and report["stopped"] == "Ctrl-C"
    assert _statuses(out) == {f".:{out.name}": "stopped"}
    assert '"stopped": "Ctrl-C"' in (out / "report.json").read_text()
    again = run_agent_r(cfg, train, [], lambda spec: ScriptedPolicy([]))
    assert not again.get("stopped") and again["iterations"][0]["trained"] is None
    assert _statuses(out) == {f".:{out.name}": "finished"}
