"""Grade a patch exactly as SWE-bench does, in a FRESH sandbox from the task's image.

The patch is applied with SWE-bench's own chain of `git apply` commands; files of the patch that would
change how the tests run are restored first, and changed code that reaches into the test machinery is flagged
(`tasks.guard`: a tampered patch is never resolved); a witness plugin loaded before the code under test keeps
its own account of the run (`tasks.witness`); the instance's eval script runs (instrumented to report its
reinstall step, `tasks.install_check`), and the log is judged by swebench's log parser for the instance and its
grading functions (`get_logs_eval`, `get_eval_tests_report` with the instance's `eval_type`,
`get_resolution_status`), then cross-checked against the witness (disagreement is tampering). The agent's
sandbox is never trusted.

A run without a verdict (no test results, a timeout, a failed reinstall) is the patch's failure when the same
eval script on the unpatched repository gives one (`control`, run once per image and eval script): the report is
then an ordinary unresolved verdict with `error` saying what went wrong. Only when the environment fails without
the patch too is it an `infra_error`: the agent could not have caused it.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from swebench.harness.constants import FAIL_TO_PASS, PASS_TO_PASS, EvalType, ResolvedStatus
from swebench.harness.grading import (_resolve_case, get_eval_tests_report, get_logs_eval,
                                      get_resolution_status)
from swebench.harness.infra_failure import TIER_ENVIRONMENT, classify_text
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.run_evaluation import GIT_APPLY_CMDS

from records import TaskInstance, TestReport, TestStatus
from sandbox import Sandbox, SandboxConfig, start_sandbox
from tasks import witness
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


def _run_eval(sb: Sandbox, script: str, env: str, timeout: float):
    sb.write_file(EVAL_FILE, instrument(script))
    return sb.exec(f"{env + ' ' if env else ''}/bin/bash {EVAL_FILE}", timeout=timeout, max_output=8 << 20)


def _parse(spec, log: str) -> tuple[dict[str, str], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "test_output.txt"
        log_path.write_text(log)
        return get_logs_eval(spec, str(log_path))


def grade(instance: TaskInstance, patch: str, config: SandboxConfig | None = None,
          timeout: float = 1800, trajectory_id: str | None = None, *, guard_patch: bool = True) -> TestReport:
    """Apply `patch` in a fresh sandbox of the instance's image, run its tests, and judge the log.

    ``guard_patch=False`` skips `tasks.guard` and the witness (only to show, in tests, what an attack would do
    without them)."""
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
        return grade_in(sb, instance, patch, timeout, report, guard_patch=guard_patch, start=start, config=config)


def grade_in(sb: Sandbox, instance: TaskInstance, patch: str, timeout: float = 1800, report: TestReport | None = None,
             *, guard_patch: bool = True, start: float | None = None, config: SandboxConfig | None = None) -> TestReport:
    """`grade`'s work in a sandbox the caller started from the instance's image (or reset to the same state:
    `/testbed` clean at `base_commit`), which it uses up: synthesis grades each gold patch in its long-lived
    source sandbox this way, through the very same steps. ``config`` starts any control sandbox (`_blame`)."""
    start = time.time() if start is None else start
    report = report or TestReport(instance_id=instance.instance_id, empty_patch=not patch.strip())
    spec = make_spec(instance)
    config = (config or SandboxConfig()).model_copy(update={"network": False})
    account = review = None
    baseline = before_patch(sb) if guard_patch else None
    found_env = witness.probe(sb) if guard_patch else None
    applied, apply_log = apply_patch(sb, patch)
    report.patch_applied = applied
    if not applied:
        report.log_tail = apply_log[-4000:]
        report.error = "patch did not apply"
        report.fail_to_pass_failure = list(spec.FAIL_TO_PASS)
        report.seconds = time.time() - start
        return report
    env = ""
    watcher = None
    if guard_patch:
        review = guard(sb, patch, patched_files(instance.test_patch), baseline, spec.eval_script)
        report.tampering, report.ignored_files = list(review.tampering), review.ignored
        watcher = witness.install(sb, found_env)
        env = EVAL_ENV + (" " + watcher.env() if watcher else "")
    result = _run_eval(sb, spec.eval_script, env, timeout)
    if watcher is not None:
        account = witness.collect(sb, watcher)
    log = result.output
    report.log_tail = log[-4000:]
    status_map, found = _parse(spec, log)
    report.test_status = {k: TestStatus(v) for k, v in status_map.items() if v in TestStatus._value2member_map_}
    if account is not None and review is not None:
        parser = PARSER_REGISTRY[spec.log_parser]

        def name_of(node_id: str) -> str | None:
            return next(iter(parser(f"PASSED {node_id}\n", spec)), None)

        resolved_names = {t: _resolve_case(t, status_map) for t in [*spec.FAIL_TO_PASS, *spec.PASS_TO_PASS]}
        tampered, report.checks = witness.cross_check(
            account, {t: status_map[k] for t, k in resolved_names.items() if k is not None},
            list(resolved_names), review.changed, name_of, owns_pytest=review.owns_pytest)
        report.tampering += tampered
    if not found:
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
    failed_install = [c for c in install_exit_codes(log) if c != 0]
    ran = _ran(spec, status_map, found)
    if result.timed_out or not ran or (failed_install and not report.resolved):
        _blame(report, instance, spec, config, timeout, log, ran, result.timed_out, failed_install)
    report.seconds = time.time() - start
    return report


# --- who is to blame for a run without a verdict ----------------------------------------------------------

def _ran(spec, status_map: dict[str, str], found: bool) -> bool:
    """The log holds a result for at least one of the instance's tests (swebench's `found` alone also holds for a
    log whose only "result" is a pip `ERROR:` line)."""
    return found and any(_resolve_case(t, status_map) is not None for t in [*spec.FAIL_TO_PASS, *spec.PASS_TO_PASS])


@dataclass
class Control:
    """The eval script on the unpatched repository: what the environment gives without the patch."""

    found: bool
    """It printed results of the instance's tests."""
    timed_out: bool
    """It ran past the timeout."""
    install_failed: bool
    """Its reinstall step failed."""
    classified: tuple[str, str] | None
    """swebench's classification of its log (reason, tier), if any."""


_controls: dict[tuple, Control] = {}
_controls_lock = threading.Lock()


def control(instance: TaskInstance, spec, config: SandboxConfig, timeout: float) -> Control:
    """Run (once per image, eval script and backend in this process) the eval script without any patch."""
    key = (instance.image, hashlib.sha256(spec.eval_script.encode()).hexdigest(), config.backend)
    with _controls_lock:
        if key in _controls:
            return _controls[key]
    with start_sandbox(config, image=instance.image or None) as sb:
        result = _run_eval(sb, spec.eval_script, EVAL_ENV, timeout)
    status_map, found = _parse(spec, result.output)
    out = Control(found=_ran(spec, status_map, found), timed_out=result.timed_out,
                  install_failed=any(c != 0 for c in install_exit_codes(result.output)),
                  classified=classify_text(result.output))
    with _controls_lock:
        _controls[key] = out
    return out


def _blame(report: TestReport, instance: TaskInstance, spec, config: SandboxConfig, timeout: float, log: str,
           ran: bool, timed_out: bool, failed_install: list[int]) -> None:
    """Set ``report.error`` for a run without a (trustworthy) verdict, and ``report.infra_error`` when the
    environment fails the same way without the patch (the patch's failure is an ordinary unresolved verdict).

    A failed reinstall is the environment's unless the tests resolved anyway (the image's own install of
    `/testbed` then ran the patched code, as the harness's reinstall would have)."""
    if report.tampering:  # the patch gamed the tests: its failure, whatever else went wrong
        report.error = report.error or "the patch tampered with how the tests run"
        return
    base = control(instance, spec, config, timeout)
    reason = f" ({base.classified[0]})" if base.classified else ""
    if failed_install and not report.resolved:
        if base.install_failed:
            ran = ("the tests ran on the image's previous install, so this verdict may differ from the SWE-bench "
                   "harness's" if ran else "the tests did not run")
            report.infra_error = (f"the eval script's reinstall of the repository failed (exit {failed_install[0]}), "
                                  f"also without the patch{reason}: without network {ran}")
            report.error = report.error or report.infra_error
            return
        report.error = (f"the eval script's reinstall of the repository failed with the patch (exit "
                        f"{failed_install[0]}), not without it")
        if ran and not timed_out:
            return
    if base.found and not base.timed_out:  # the environment works: the patch ended, broke or hung the tests
        if timed_out:
            report.error = f"the tests timed out after {timeout:.0f} s with the patch (without it they finish)"
        elif not ran:
            report.error = ("the tests gave no results with the patch (it ended or broke the test run); without it "
                            "they do")
        return
    if timed_out and base.timed_out:
        report.infra_error = f"the tests time out after {timeout:.0f} s even without the patch"
    elif base.classified and base.classified[1] == TIER_ENVIRONMENT:
        report.infra_error = f"the grading environment failed{reason}: the tests give no results even without the patch"
    else:
        report.infra_error = "the eval script gives no test results even without the patch"
    report.error = report.error or report.infra_error
