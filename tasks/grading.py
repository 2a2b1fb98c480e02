"""Grade a patch exactly as SWE-bench does, in a FRESH sandbox from the task's image.

The patch is applied with SWE-bench's own chain of `git apply` commands, the instance's eval script
runs, and the log is judged by swebench's log parsers and grading functions (`get_logs_eval`,
`get_eval_tests_report`, `get_resolution_status`). The agent's sandbox is never trusted.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

from swebench.harness.constants import (
    END_TEST_OUTPUT,
    FAIL_TO_PASS,
    PASS_TO_PASS,
    START_TEST_OUTPUT,
    ResolvedStatus,
)
from swebench.harness.grading import get_eval_tests_report, get_logs_eval, get_resolution_status
from swebench.harness.run_evaluation import GIT_APPLY_CMDS
from swebench.harness.utils import make_test_spec

from records import TaskInstance, TestReport, TestStatus
from sandbox import Sandbox, SandboxConfig, SandboxError, start_sandbox

PATCH_FILE = "/tmp/evolve-patch.diff"
EVAL_FILE = "/tmp/evolve-eval.sh"
HEREDOC = "EOF_114329324912"  # SWE-bench's heredoc delimiter


def patched_files(test_patch: str) -> list[str]:
    """Files a test patch touches (SWE-bench resets them to the base commit before and after)."""
    return sorted(set(re.findall(r"^diff --git a/(\S+) b/", test_patch, flags=re.M)))


def eval_script(instance: TaskInstance) -> str:
    """SWE-bench's eval script shape for an instance that gives `test_cmd` (the bundled suites)."""
    files = " ".join(patched_files(instance.test_patch))
    reset = f"git checkout {instance.base_commit} -- {files}" if files else ":"
    return "\n".join([
        "#!/bin/bash", "set -uxo pipefail", "cd /testbed", reset,
        f"git apply -v - <<'{HEREDOC}'", instance.test_patch.rstrip("\n"), HEREDOC,
        f": '{START_TEST_OUTPUT}'", instance.test_cmd, f": '{END_TEST_OUTPUT}'", reset, "",
    ])


def swebench_instance(instance: TaskInstance) -> dict:
    """The instance as swebench's `make_test_spec` wants it. SWE-bench's own instances carry `eval_script`,
    `log_parser` and `eval_type`; the bundled suites get them from `test_cmd` and pytest's parser."""
    data = instance.model_dump()
    data.setdefault("log_parser", "parse_log_pytest")
    data.setdefault("eval_type", "pass_and_fail")
    if not data.get("eval_script"):
        if not instance.test_cmd:
            raise SandboxError(f"instance {instance.instance_id} has neither an eval_script nor a test_cmd")
        data["eval_script"] = eval_script(instance)
    return data


def apply_patch(sb: Sandbox, patch: str) -> tuple[bool, str]:
    """SWE-bench's apply chain; the tree is restored between attempts. Returns (applied, log)."""
    sb.write_file(PATCH_FILE, patch)
    out = ""
    for attempt, cmd in enumerate(GIT_APPLY_CMDS):
        if attempt:
            sb.exec("git checkout -- . ; git clean -fdq", timeout=120)
        r = sb.exec(f"{cmd} {PATCH_FILE}", timeout=120)
        out = r.output
        if r.exit_code == 0:
            return True, out
    if sb.exec(f"git apply --check --reverse {PATCH_FILE}", timeout=120).exit_code == 0:
        return True, "already applied"
    return False, out


def grade(instance: TaskInstance, patch: str, config: SandboxConfig | None = None,
          timeout: float = 1800, trajectory_id: str | None = None) -> TestReport:
    """Apply `patch` in a fresh sandbox of the instance's image, run its tests, and judge the log."""
    start = time.time()
    report = TestReport(instance_id=instance.instance_id, trajectory_id=trajectory_id,
                        empty_patch=not patch.strip())
    spec = make_test_spec(swebench_instance(instance))
    if report.empty_patch:  # SWE-bench counts an empty patch as not resolved; nothing to run
        report.fail_to_pass_failure, report.pass_to_pass_failure = list(spec.FAIL_TO_PASS), []
        report.seconds = time.time() - start
        return report
    config = (config or SandboxConfig()).model_copy(update={"network": False})
    with start_sandbox(config, image=instance.image or None) as sb:
        applied, apply_log = apply_patch(sb, patch)
        report.patch_applied = applied
        if not applied:
            report.log_tail = apply_log[-4000:]
            report.error = "patch did not apply"
            report.fail_to_pass_failure = list(spec.FAIL_TO_PASS)
            report.seconds = time.time() - start
            return report
        sb.write_file(EVAL_FILE, spec.eval_script)
        result = sb.exec(f"/bin/bash {EVAL_FILE}", timeout=timeout, max_output=8 << 20)
    log = result.output
    report.log_tail = log[-4000:]
    if result.timed_out:
        report.error = f"tests timed out after {timeout:.0f} s"
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "test_output.txt"
        log_path.write_text(log)
        status_map, found = get_logs_eval(spec, str(log_path))
    report.test_status = {k: TestStatus(v) for k, v in status_map.items() if v in TestStatus._value2member_map_}
    if not found:
        report.error = report.error or "no test results in the log (tests did not run)"
        report.fail_to_pass_failure = list(spec.FAIL_TO_PASS)
        report.pass_to_pass_failure = list(spec.PASS_TO_PASS)
    else:
        tests = get_eval_tests_report(status_map, {"instance_id": instance.instance_id,
                                                   FAIL_TO_PASS: spec.FAIL_TO_PASS, PASS_TO_PASS: spec.PASS_TO_PASS})
        report.fail_to_pass_success = tests[FAIL_TO_PASS]["success"]
        report.fail_to_pass_failure = tests[FAIL_TO_PASS]["failure"]
        report.pass_to_pass_success = tests[PASS_TO_PASS]["success"]
        report.pass_to_pass_failure = tests[PASS_TO_PASS]["failure"]
        report.resolved = get_resolution_status(tests) == ResolvedStatus.FULL.value and not result.timed_out
    report.seconds = time.time() - start
    return report
