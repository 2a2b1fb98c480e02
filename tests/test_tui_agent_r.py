"""Agent-R's work is reachable from its run, and a stop ends its SFT (issue 22, item 6 and "found outside the TUI"):
a real `evolve agent-r toolcall` with a tiny model (as tests/test_agent_r_toolcall_cli.py) is stopped from another
process while its SFT trains; it ends within seconds with the training checkpointed and its version `stopped`. The
TUI opened on its directory shows its searched trajectories (stored under `RUN-it1`) on the run's own dashboard, and
its Training screen finds the version three levels down (`it1/sft`); the same command resumes and finishes it."""

from __future__ import annotations

import asyncio
import os
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


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_agent_r_stops_during_sft_and_its_records_are_reachable_from_its_run(tmp_path: Path):
    start = _start_policy(tmp_path)
    out = tmp_path / "agent-r"
    proc = _cli(out, start, sft_steps=STEPS)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and _sft_steps(out / "it1" / "sft") < 2:
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        with RunStore(out) as store:
            store.request_stop(out.name)
        asked = time.time()
        text = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.time() - asked
    print(f"stop request during SFT -> exit: {took:.1f} s")
    assert proc.returncode == 0 and "stopped" in text, text[-3000:]
    assert took < 30, took
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
