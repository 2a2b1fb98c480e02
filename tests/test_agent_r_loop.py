"""`evolve agent-r`'s iteration loop on the real path (Docker, a bundled instance, a scripted sampling policy, a
tiny real model trained by the existing trainer): a stop request ends it gracefully, a rerun resumes without
searching again, the iteration trains a new policy version from the exported data and evaluates it on a
held-out instance; the command's user errors are one line with exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.agent_r.config import AgentRConfig  # noqa: E402
from evolve.agent_r.loop import AgentRRunConfig, run_agent_r  # noqa: E402
from evolve.store import RunStore  # noqa: E402

HELD_OUT = "bundled__linediff-1"


@pytest.mark.docker
@pytest.mark.slow
def test_loop_stops_resumes_trains_and_evaluates(tmp_path, docker_ready):
    from agent.policy import load_policy
    from evolve.policies import RunsRoot
    from tasks.registry import get_suite
    from tests.test_agent_r_docker import INSTANCE, MenuPolicy

    model = build_tiny_model(tmp_path.parent / "tiny-64")
    suite = get_suite("bundled")
    train, held = suite.select([INSTANCE]), suite.select([HELD_OUT])
    out = tmp_path / "run"
    cfg = AgentRRunConfig(instances=[INSTANCE], held_out=[HELD_OUT], policy="menu", train_policy=f"hf:{model}",
                          max_steps=2, max_tokens_per_step=16, iterations=1, sft_steps=2, full=True, device="cpu",
                          search=AgentRConfig(rollouts=2, n_gen=2, max_depth=3), out=str(out))
    menus: list[MenuPolicy] = []

    def load(spec: str):
        if spec == "menu":
            menus.append(MenuPolicy())
            return menus[-1]
        return load_policy(spec, runs=RunsRoot(out))

    def stop_when_searching(text: str) -> None:
        if "searching" in text:
            with RunStore(out) as other:  # another handle, as the TUI's stop button would use
                other.request_stop(out.name)

    first = run_agent_r(cfg, train, held, load, say=stop_when_searching)
    assert first.get("stopped") and not (out / "it1" / "sft").exists()
    with RunStore(out, readonly=True) as store:
        assert {r["id"]: (r["kind"], r["status"]) for r in store.runs()}[out.name] == ("agent-r", "stopped")
        assert store.document("agent-r:instance", f"{out.name}-it1/{INSTANCE}") is not None

    report = run_agent_r(cfg, train, held, load)
    assert not report.get("stopped")
    assert sum(m.verifier_calls for m in menus[1:]) == 0  # the search was not redone
    row = report["iterations"][0]
    assert row["splices"] >= 1 and row["good"] >= 1 and row["trained"]
    assert row["policy"] == "menu" and report["before"]["policy"] == "menu"
    e = row["eval"]
    assert e["policy"].startswith(("hf:", "version:")) and e["instances"] == 1 and len(e["episodes"]) == 2
    assert {"success", "recovered", "damage_removed", "repeat_rate", "loop_episodes"} <= e.keys()
    with RunStore(out, readonly=True) as store:
        versions = [v for v in store.policy_versions() if v.id == row["trained"]]
        assert not versions  # versions live in the SFT run directory, found through runs_root
    from evolve.train.versions import get_version

    v = get_version(row["trained"], out)
    assert v.kind == "sft" and v.data == [f"{out.name}-it1-data"]
    # a rerun of a finished run does nothing new
    again = run_agent_r(cfg, train, held, load)
    assert again["iterations"][0]["trained"] == row["trained"]


@pytest.mark.parametrize("args,msg", [
    (["bundled", "--alpha", "high"], "alpha must be a number"),
    (["bundled", "--beta", "2"], "beta must be a number"),
    (["toolcall", "--held-out", "train"], "no instances to search"),
    (["toolcall", "--held-out", "toolcall__nope-1"], "has no instance 'toolcall__nope-1'"),
    (["bundled", "--iterations", "0"], "--iterations must be at least 1"),
    (["bundled", "--instances", "bundled__unitconv-1", "--held-out", "bundled__unitconv-1"], "no instances to search"),
])
def test_cli_user_errors(args, msg, tmp_path):
    from typer.testing import CliRunner

    from evolve.cli import app
    from evolve.errors import user_errors

    r = CliRunner().invoke(app, ["agent-r", *args, "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, user_errors()) and msg in str(r.exception) and "\n" not in str(r.exception)
    assert not (tmp_path / "o").exists()  # nothing was created before the input was checked


def test_cli_prints_one_line_and_exits_2(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, "-m", "evolve.cli", "agent-r", "bundled", "--alpha", "high", "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: agent-r alpha must be a number in [0, 1], not 'high'"
