"""What a run says when grading or the infrastructure fails, and the user mistakes around them (issue 18, item 16):
an image without Python is a retried infrastructure error; a grading error has one name and is said once; a
runner script rewritten inside the tests directory is tampering; `--sandbox local` on a SWE-bench suite is refused
before anything loads, with a report; exporting a run that holds only infrastructure errors says so and fails."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from agent.replay import ScriptedPolicy
from evolve.run.runner import RunConfig, report_ok, run_swe
from evolve.store import RunStore
from records import Trajectory, TrajectoryStatus
from tasks.guard import review, runner_files
from tasks.registry import get_suite

ROOT = Path(__file__).resolve().parent.parent


def call(name: str, **params) -> str:
    return f"<think>go</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': params})}\n</tool_call>"


def evolve(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> str:
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr, r.stdout + r.stderr
    assert needle in text, text
    return text


@pytest.fixture(scope="module")
def bundled():
    suite = get_suite("bundled")
    suite.build_images()
    return suite.instances()[0]


@pytest.mark.usefixtures("docker_ready")
def test_an_image_without_python_is_an_infra_error_that_is_retried(bundled, tmp_path):
    from sandbox.docker import docker_client

    client = docker_client()
    tag = f"evolve-test-nopython:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM {bundled.image}\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3* /usr/bin/python\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, network_mode="none")
    try:
        out = tmp_path / "nopython"
        cfg = RunConfig(instances=[bundled.instance_id], out=str(out), workers=1, infra_retries=1,
                        infra_retry_delay=0)
        report = run_swe(cfg, [bundled.model_copy(update={"image": tag})], ScriptedPolicy([call("submit")]))
    finally:
        client.images.remove(tag, force=True)
    row = report["per_instance"][0]
    assert report["infra_errors"] == 1 and report["interrupted"] == 0 and report["stopped"] is None, report
    assert "has no python3" in row["infra_error"] and "sandbox did not start" in row["infra_error"], row
    with RunStore(out, readonly=True) as store:
        trajs = [store.get_trajectory(t) for t in store.trajectory_ids()]
        assert [t.status for t in trajs] == [TrajectoryStatus.infra_error] * 2  # tried, then retried once
        assert store.instance_status(out.name) == {bundled.instance_id: "infra_error"}


@pytest.mark.usefixtures("docker_ready")
def test_a_grading_error_has_one_name_and_is_said_once(bundled, tmp_path, caplog):
    silent = bundled.model_copy(update={"test_cmd": "echo the tests never ran"})  # no results, patch or not
    out = tmp_path / "ungraded"
    events: list[str] = []
    cfg = RunConfig(instances=[bundled.instance_id], out=str(out), workers=1, infra_retries=2, infra_retry_delay=0)
    with caplog.at_level(logging.INFO, logger="evolve"):
        policy = ScriptedPolicy([call("bash", command="echo '# x' >> README.md"), call("submit")])
        report = run_swe(cfg, [silent], policy, on_event=lambda iid, what: events.append(what))
    row = report["per_instance"][0]
    assert row["status"] == "grading_error" and report["grading_errors"] == 1 and report["infra_errors"] == 0
    assert row["grading_error"].startswith("grading error: the eval script gives no test results even without")
    said = [e for e in events if "no test results" in e]
    assert len(said) == 1 and said[0].startswith("grading error:"), events
    assert not [r for r in caplog.records if r.name.startswith("evolve") and "no test results" in r.getMessage()]
    assert not report_ok(report)


def test_the_runner_script_is_tampering_even_inside_the_tests_directory():
    """Django's eval runs `./tests/runtests.py`, and its test patch touches tests/...: rewriting the runner is
    tampering, not a test file restored without blame."""
    script = ("#!/bin/bash\ncd /testbed\n: '>>>>> Start Test Output'\n./tests/runtests.py --verbosity 2 "
              "--settings=test_sqlite --parallel 1 model_fields.tests\n: '>>>>> End Test Output'\n")
    r = review(["tests/runtests.py", "tests/model_fields/tests.py"],
               test_patch_files=["tests/model_fields/tests.py"], existed=lambda p: True,
               read=lambda p, before: "", importable=set(), path_roots=[""], runners=runner_files(script))
    assert r.tampering == ["tests/runtests.py: the eval script's test command runs it"]
    assert r.ignored == ["tests/model_fields/tests.py"] and r.restore == ["tests/runtests.py",
                                                                         "tests/model_fields/tests.py"]


def test_the_local_sandbox_refuses_a_swebench_suite_up_front_with_a_report(bundled, tmp_path):
    row = {k: v for k, v in bundled.model_dump().items() if k not in ("image", "test_cmd", "extra", "suite")}
    row |= {"instance_id": "evolve__local-1", "repo": "astropy/astropy", "eval_script": "#!/bin/bash\n: '>>>>> Start Test Output'\n"
            "pytest\n: '>>>>> End Test Output'\n", "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n")
    out = tmp_path / "run"
    r = evolve("run", "swe-bench-verified", "--dataset", str(data), "--sandbox", "local", "--out", str(out),
               "--policy", "hf:/nonexistent/never-loaded")
    one_line_error(r, "evolve__local-1: the local sandbox needs the task's repository as a directory")
    assert "use --sandbox docker" in r.stderr and "loading policy" not in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["stopped"].startswith("error: evolve__local-1: the local sandbox") and report["not_run"] == 1


def test_exporting_a_run_of_only_infrastructure_errors_says_so_and_fails(tmp_path):
    run = tmp_path / "run"
    with RunStore(run) as store:
        store.put_trajectory(Trajectory(instance_id="i", status=TrajectoryStatus.infra_error, error="sandbox died"))
    target = tmp_path / "t.jsonl"
    r = evolve("trajectories", str(run), "--export", str(target))
    one_line_error(r, "holds only infrastructure errors or interrupted episodes (1)")
    assert "--all" in r.stderr and not target.exists()
    ok = evolve("trajectories", str(run), "--export", str(target), "--all")
    assert ok.returncode == 0 and len(target.read_text().splitlines()) == 1
    empty = tmp_path / "empty"
    with RunStore(empty):
        pass
    r = evolve("trajectories", str(empty), "--export", str(tmp_path / "e.jsonl"))
    one_line_error(r, "holds no trajectories")
