"""Grade a patch exactly as SWE-bench does, in a FRESH sandbox from the task's image.

The patch is applied with SWE-bench's own chain of `git apply` commands; files of the patch that would
change how the tests run are restored first (`tasks.guard`: a tampered patch is never resolved); the
instance's eval script runs (instrumented to report its reinstall step, `tasks.install_check`), and the
log is judged by swebench's log parser for the instance and its grading functions (`get_logs_eval`,
`get_eval_tests_report` with the instance's `eval_type`, `get_resolution_status`). The agent's sandbox is
never trusted. What swebench cannot judge because the environment failed is an `infra_error`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from swebench.harness.constants import FAIL_TO_PASS, PASS_TO_PASS, EvalType, ResolvedStatus
from swebench.harness.grading import get_eval_tests_report, get_logs_eval, get_resolution_status
from swebench.harness.infra_failure import TIER_ENVIRONMENT, classify_text
from swebench.harness.run_evaluation import GIT_APPLY_CMDS

from records import TaskInstance, TestReport, TestStatus
from sandbox import Sandbox, SandboxConfig, start_sandbox
from tasks.guard import EVAL_ENV, before_patch, guard
from tasks.install_check import install_exit_codes, instrument
from tasks.spec import eval_script_from_test_cmd, make_spec, patched_files

PATCH_FILE = "/tmp/evolve-patch.diff"
EVAL_FILE = "/tmp/evolve-eval.sh"

eval_script = eval_script_from_test_cmd  # the bundled suites' eval script (kept under its old name)
__all__ = ["apply_patch", "eval_script", "grade", "patched_files"]


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
          timeout: float = 1800, trajectory_id: str | None = None, *, guard_patch: bool = True) -> TestReport:
    """Apply `patch` in a fresh sandbox of the instance's image, run its tests, and judge the log.

    ``guard_patch=False`` skips `tasks.guard` (only to show, in tests, what an attack would do without it)."""
    start = time.time()
    report = TestReport(instance_id=instance.instance_id, trajectory_id=trajectory_id,
                        empty_patch=not patch.strip())
    spec = make_spec(instance)
    if report.empty_patch:  # SWE-bench counts an empty patch as not resolved; nothing to run
        report.fail_to_pass_failure, report.pass_to_pass_failure = list(spec.FAIL_TO_PASS), []
        report.seconds = time.time() - start
        return report
    config = (config or SandboxConfig()).model_copy(update={"network": False})
    with start_sandbox(config, image=instance.image or None) as sb:
        return grade_in(sb, instance, patch, timeout, report, guard_patch=guard_patch, start=start)


def grade_in(sb: Sandbox, instance: TaskInstance, patch: str, timeout: float = 1800, report: TestReport | None = None,
             *, guard_patch: bool = True, start: float | None = None) -> TestReport:
    """`grade`'s work in a sandbox the caller started from the instance's image (or reset to the same state:
    `/testbed` clean at `base_commit`), which it uses up: synthesis grades each gold patch in its long-lived
    source sandbox this way, through the very same steps."""
    start = time.time() if start is None else start
    report = report or TestReport(instance_id=instance.instance_id, empty_patch=not patch.strip())
    spec = make_spec(instance)
    baseline = before_patch(sb) if guard_patch else None
    applied, apply_log = apply_patch(sb, patch)
    report.patch_applied = applied
    if not applied:
        report.log_tail = apply_log[-4000:]
        report.error = "patch did not apply"
        report.fail_to_pass_failure = list(spec.FAIL_TO_PASS)
        report.seconds = time.time() - start
        return report
    if guard_patch:
        review = guard(sb, patch, patched_files(instance.test_patch), baseline, spec.eval_script)
        report.tampering, report.ignored_files = review.tampering, review.ignored
    sb.write_file(EVAL_FILE, instrument(spec.eval_script))
    result = sb.exec(f"{EVAL_ENV + ' ' if guard_patch else ''}/bin/bash {EVAL_FILE}", timeout=timeout,
                     max_output=8 << 20)
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
                                                   FAIL_TO_PASS: spec.FAIL_TO_PASS, PASS_TO_PASS: spec.PASS_TO_PASS},
                                      eval_type=EvalType(spec.eval_type))
        report.fail_to_pass_success = tests[FAIL_TO_PASS]["success"]
        report.fail_to_pass_failure = tests[FAIL_TO_PASS]["failure"]
        report.pass_to_pass_success = tests[PASS_TO_PASS]["success"]
        report.pass_to_pass_failure = tests[PASS_TO_PASS]["failure"]
        report.resolved = (get_resolution_status(tests) == ResolvedStatus.FULL.value and not result.timed_out
                           and not report.tampering)
    report.infra_error = _infra_error(log, found, report.resolved)
    report.seconds = time.time() - start
    return report


def _infra_error(log: str, found: bool, resolved: bool) -> str | None:
    """Why the verdict is the environment's doing, not the patch's (None when it is the patch's).

    A failed reinstall is an infrastructure error unless the tests resolved anyway: the image's own install
    of `/testbed` then ran the patched code, as the harness's reinstall would have. Without test results,
    swebench's own classification of the log decides (its environment tier only)."""
    classified = classify_text(log)
    reason = f" ({classified[0]})" if classified else ""
    failed = [c for c in install_exit_codes(log) if c != 0]
    if failed and not resolved:
        return (f"the eval script's reinstall of the repository failed (exit {failed[0]}){reason}: without "
                "network the tests ran on the image's previous install, so this verdict may differ from the "
                "SWE-bench harness's")
    if not found and classified and classified[1] == TIER_ENVIRONMENT:
        return f"the grading environment failed{reason}: the tests did not run"
    return None
