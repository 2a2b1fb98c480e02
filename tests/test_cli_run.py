"""The `evolve` CLI end to end: `evolve run toolcall` with a tiny real model, `evolve tasks`, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_model import build_tiny_model


def evolve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_run_toolcall_reports_each_reward_part_and_resumes(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    out = tmp_path / "runs" / "tc"
    r = evolve("run", "toolcall", "--policy", f"hf:{model}", "--limit", "6", "--out", str(out),
               "--max-tokens-per-step", "48")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["instances"] == 6
    for part in ("mean_format", "mean_correctness", "mean_total"):
        assert part in report
    assert -3 <= report["mean_correctness"] <= 3 and 0 <= report["mean_format"] <= 1
    assert "mean format" in r.stdout
    again = evolve("run", "toolcall", "--policy", f"hf:{model}", "--limit", "6", "--out", str(out),
                   "--max-tokens-per-step", "48")
    assert again.returncode == 0
    from evolve.store import RunStore

    with RunStore(out, readonly=True) as store:
        assert len(store.trajectory_ids()) == 6  # nothing redone


def test_tasks_lists_suites_and_instances():
    r = evolve("tasks")
    assert r.returncode == 0 and "bundled" in r.stdout and "toolcall" in r.stdout
    r = evolve("tasks", "toolcall")
    assert r.returncode == 0 and "toolcall__" in r.stdout


def test_user_errors_are_one_line(tmp_path: Path):
    cases = [
        (("run", "no-such-suite"), "unknown suite"),
        (("run", "bundled", "--instances", "nope"), "has no instance"),
        (("run", "toolcall", "--policy", "carrier:pigeon", "--out", str(tmp_path / "x")), "unknown policy spec"),
        (("run", "bundled", "--sandbox", "vm"), "--sandbox must be docker or local"),
        (("run", "swe-bench-verified", "--dataset", str(tmp_path / "missing.jsonl")), "does not exist"),
        (("run", "toolcall", "--policy", "hf:/nonexistent/model", "--out", str(tmp_path / "y")), ""),
    ]
    for args, expected in cases:
        r = evolve(*args)
        assert r.returncode == 2, (args, r.stdout[-500:], r.stderr[-1500:])
        assert "Traceback" not in r.stderr and expected in r.stderr, (args, r.stderr[-1500:])
        assert len(r.stderr.strip().splitlines()) <= 3, r.stderr


def test_swe_bench_offline_says_what_to_provide(tmp_path: Path):
    r = evolve("run", "swe-bench-verified")
    assert r.returncode == 2 and "--dataset" in r.stderr and "Traceback" not in r.stderr
    # a local dataset copy in SWE-bench's classic format: no eval script, so no row can be graded
    row = {"instance_id": "demo__demo-1", "repo": "demo/demo", "base_commit": "abc", "problem_statement": "x",
           "patch": "", "test_patch": "", "FAIL_TO_PASS": '["test_a"]', "PASS_TO_PASS": "[]", "version": "1.0",
           "environment_setup_commit": "abc"}
    data = tmp_path / "verified.jsonl"
    data.write_text(json.dumps(row) + "\n")
    r = evolve("run", "swe-bench-verified", "--dataset", str(data), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "demo__demo-1: no `eval_script`" in " ".join(r.stderr.split()), r.stderr[-1500:]
    # in the current format, whose image is not in the daemon: says exactly which image to load
    row |= {"eval_script": ": '>>>>> Start Test Output'\npytest -rA\n: '>>>>> End Test Output'\n",
            "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}
    data.write_text(json.dumps(row) + "\n")
    r = evolve("run", "swe-bench-verified", "--dataset", str(data), "--out", str(tmp_path / "run"))
    text = " ".join(r.stderr.split())
    assert r.returncode == 2 and "docker load" in text and "Traceback" not in text, r.stderr[-1500:]
    assert "swebench/sweb.eval.x86_64.demo_1776_demo-1:latest" in text


def test_every_command_has_help():
    for args in (("--help",), ("run", "--help"), ("tasks", "--help"), ("serve", "--help"), ("sandbox", "--help"),
                 ("sandbox", "build-base", "--help"), ("sandbox", "prune", "--help"), ("sandbox", "smoke", "--help"),
                 ("train", "--help"), ("train", "sft", "--help"), ("train", "grpo", "--help"),
                 ("train", "grpo-toolcall", "--help"), ("train", "versions", "--help"), ("hgm", "--help"),
                 ("tree", "--help"), ("tree", "show", "--help"), ("tree", "diff", "--help"), ("tree", "best", "--help"),
                 ("tree", "export", "--help"), ("se-agent", "--help"), ("agent-r", "--help"), ("tui", "--help"),
                 ("trajectories", "--help")):
        r = evolve(*args)
        assert r.returncode == 0 and "Usage" in r.stdout, (args, r.stderr[-500:])
