"""SWE-bench rows and images, on a stand-in instance image built locally (no registry here).

The stand-in is a bundled repository in an image named as swebench names an official instance image,
with a `pip` that fails as pip does without network; its row is in the current SWE-bench format (an eval
script that reinstalls the repository first, as the official ones do). Checked: rows are validated before
anything runs (classic rows without an eval script fail in one line, naming the instance and the field);
`eval_type` is honoured; a failed reinstall is an infrastructure error unless the tests resolve anyway;
images are found under swebench's names, and a missing one is named exactly, fast.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from sandbox import SandboxError
from sandbox.docker import docker_client
from tasks.grading import grade
from tasks.images import ensure_swebench_images, image_exists
from tasks.registry import get_suite
from tasks.spec import eval_script_from_test_cmd, instance_image_key
from tasks.swebench_suite import SWEBenchSuite

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]

STANDIN = "evolve__standin-1"
LOCAL_ONLY = "evolve__standin-2"
MISSING = "evolve__missing-3"
OFFLINE_PIP = """#!/bin/sh
echo "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(': Failed to establish a \
new connection: [Errno -3] Temporary failure in name resolution')': /simple/setuptools/"
echo "ERROR: Could not find a version that satisfies the requirement setuptools>=40.8.0 (from versions: none)"
exit 1
"""


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """The first bundled instance as a current-format SWE-bench row, its image under swebench's names."""
    suite = get_suite("bundled")
    inst = suite.instances()[0]
    suite.build_images()
    client = docker_client()
    dockerfile = f"FROM {inst.image}\nCOPY pip /usr/local/bin/pip\nRUN chmod 755 /usr/local/bin/pip\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (("Dockerfile", dockerfile), ("pip", OFFLINE_PIP)):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    buf.seek(0)
    published = instance_image_key(STANDIN)
    image, _ = client.images.build(fileobj=buf, custom_context=True, tag=published, rm=True, network_mode="none")
    local_name = instance_image_key(LOCAL_ONLY, namespace=None)
    image.tag(*local_name.rsplit(":", 1))
    script = eval_script_from_test_cmd(inst).replace("cd /testbed\n", "cd /testbed\npip install -e .\n", 1)
    row = {k: v for k, v in inst.model_dump().items() if k not in ("image", "test_cmd", "extra", "suite")}
    row |= {"instance_id": STANDIN, "eval_script": script, "log_parser": "parse_log_pytest",
            "eval_type": "pass_and_fail"}
    rows = [row, {**row, "instance_id": LOCAL_ONLY}, {**row, "instance_id": MISSING}]
    classic = {k: v for k, v in row.items() if k not in ("eval_script", "log_parser", "eval_type")}
    classic["FAIL_TO_PASS"], classic["PASS_TO_PASS"] = json.dumps(row["FAIL_TO_PASS"]), json.dumps(row["PASS_TO_PASS"])
    tmp = tmp_path_factory.mktemp("swebench-rows")
    current_file, classic_file = tmp / "current.jsonl", tmp / "classic.jsonl"
    current_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    classic_file.write_text(json.dumps(classic) + "\n")
    yield {"inst": inst, "current": current_file, "classic": classic_file, "tmp": tmp}
    for name in (published, local_name):
        client.images.remove(name, force=True)


def evolve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_current_rows_grade_and_a_failed_reinstall_is_an_infra_error(standin):
    suite = SWEBenchSuite("swe-bench-verified", dataset=str(standin["current"]))
    (row,) = suite.select([STANDIN])
    assert row.image == "swebench/sweb.eval.x86_64.evolve_1776_standin-1:latest"
    gold = grade(row, standin["inst"].patch)
    # the reinstall failed, but the tests ran the patched code and resolved: the verdict stands
    assert gold.resolved and gold.infra_error is None, gold.log_tail[-1500:]
    unfixed = grade(row, row.test_patch)  # applies, fixes nothing
    assert not unfixed.resolved and unfixed.fail_to_pass_failure
    assert unfixed.infra_error and "reinstall" in unfixed.infra_error and "network_unreachable" in unfixed.infra_error
    assert "ran on the image's previous install" in unfixed.infra_error
    silent = row.model_copy(update={"eval_script": row.eval_script.replace(standin["inst"].test_cmd, "echo no tests")})
    never = grade(silent, row.test_patch)  # the reinstall failed and the tests never started: say that, not more
    assert never.infra_error and "the tests did not run" in never.infra_error, never.infra_error
    assert "previous install" not in never.infra_error


def test_eval_type_is_honoured(standin):
    suite = SWEBenchSuite("swe-bench-verified", dataset=str(standin["current"]))
    (row,) = suite.select([STANDIN])
    absent = row.FAIL_TO_PASS + ["tests/test_ttl.py::test_that_is_not_in_the_log"]
    fail_only = row.model_copy(update={"FAIL_TO_PASS": absent, "eval_type": "fail_only"})
    both = row.model_copy(update={"FAIL_TO_PASS": absent, "eval_type": "pass_and_fail"})
    assert grade(fail_only, standin["inst"].patch).resolved  # fail_only: only a FAILED test counts against
    assert not grade(both, standin["inst"].patch).resolved


def test_classic_rows_without_an_eval_script_fail_before_anything_runs(standin, tmp_path):
    out = tmp_path / "run"
    r = evolve("run", "swe-bench-verified", "--dataset", str(standin["classic"]), "--out", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert f"error: instance {STANDIN}: no `eval_script`" in text and "Traceback" not in text
    assert "adding an `eval_script` column to this row is enough" in text
    assert not (out / "evolve.db").exists()  # nothing ran, nothing stored
    # making images present needs only the instance id: a classic row without an eval script is fine for that
    ok = evolve("tasks", "swe-bench-verified", "--build", "--dataset", str(standin["classic"]), "--instances", STANDIN)
    assert ok.returncode == 0 and "1 present" in ok.stdout, ok.stdout + ok.stderr


def test_images_are_found_under_swebench_names_and_a_missing_one_is_named_exactly(standin):
    suite = SWEBenchSuite("swe-bench-verified", dataset=str(standin["current"]))
    present, local_only, missing = suite.select([STANDIN, LOCAL_ONLY, MISSING])
    done = ensure_swebench_images([present, local_only])
    assert done["present"] == [present.image, "sweb.eval.x86_64.evolve__standin-2:latest"]
    assert local_only.image == "sweb.eval.x86_64.evolve__standin-2:latest" and image_exists(local_only.image)
    t0 = time.time()
    with pytest.raises(SandboxError) as err:
        ensure_swebench_images([missing])
    assert time.time() - t0 < 60
    message = str(err.value)
    assert "\n" not in message and "registry did not answer" in message
    assert "docker load" in message and "swebench/sweb.eval.x86_64.evolve_1776_missing-3:latest" in message
    r = evolve("tasks", "swe-bench-verified", "--build", "--dataset", str(standin["current"]), "--instances",
               f"{STANDIN},{MISSING}")
    assert r.returncode == 2 and "swebench/sweb.eval.x86_64.evolve_1776_missing-3:latest" in r.stdout + r.stderr
    ok = evolve("tasks", "swe-bench-verified", "--build", "--dataset", str(standin["current"]), "--instances",
                STANDIN)
    assert ok.returncode == 0 and "1 present" in ok.stdout, ok.stdout + ok.stderr


def test_images_build_with_swebenchs_builder_from_a_task_repo(standin, tmp_path):
    """`--task-repo`: swebench's own image builder (`docker buildx build`), named as published; where `docker
    buildx` is not installed, the daemon's classic builder builds the same Dockerfile."""
    task = tmp_path / "task-repo" / "tasks" / MISSING
    task.mkdir(parents=True)
    (task / "task.yaml").write_text(f"instance_id: {MISSING}\nrepo: evolve-bundled/cachebox\nversion: '1.0'\n")
    for name in ("gold.patch", "test.patch", "eval.sh", "problem_statement.md"):
        (task / name).write_text("")
    (task / "tests.json").write_text(json.dumps({"FAIL_TO_PASS": ["t"], "PASS_TO_PASS": []}))
    (task / "Dockerfile").write_text(f"FROM {standin['inst'].image}\n")
    r = evolve("tasks", "swe-bench-verified", "--build", "--dataset", str(standin["current"]), "--instances", MISSING,
               "--task-repo", str(tmp_path / "task-repo"))
    name = "swebench/sweb.eval.x86_64.evolve_1776_missing-3:latest"
    try:
        assert r.returncode == 0 and "1 built" in r.stdout and image_exists(name), r.stdout + r.stderr
    finally:
        if image_exists(name):
            docker_client().images.remove(name, force=True)
