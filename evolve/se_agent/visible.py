"""Visible outcome of a candidate patch, measured in a FRESH sandbox without the hidden test patch:
does it apply, do the repository's own tests (the instance's test command, as the agent could run it)
still pass where they passed unpatched, and does the agent's own reproduction script exit 0."""

from __future__ import annotations

import re
import shlex

from evolve.se_agent.records import VisibleOutcome
from records import TaskInstance, Trajectory
from sandbox import Sandbox, SandboxConfig, start_sandbox
from tasks.grading import apply_patch

REPRO_NAME = re.compile(r"(^|/)(repro\w*|reproduce\w*|\w*_repro|check_issue\w*|issue\w*)\.py$")
"""Files that count as the agent's reproduction script."""


def _parse_pytest(log: str) -> dict[str, str]:
    try:
        from swebench.harness.log_parsers.python import parse_log_pytest
    except ImportError:  # older swebench: one module
        from swebench.harness.log_parsers import parse_log_pytest  # type: ignore[no-redef]
    return parse_log_pytest(log, None)


def run_visible_tests(sb: Sandbox, instance: TaskInstance, timeout: float = 900) -> dict[str, str] | None:
    """Test name -> status of the instance's own test command in `sb`; None without a test command."""
    if not instance.test_cmd:
        return None
    r = sb.exec(f"cd {shlex.quote(sb.workdir)} && {instance.test_cmd}", timeout=timeout, max_output=8 << 20)
    return _parse_pytest(r.output)


def repro_script(traj: Trajectory) -> tuple[str, str] | None:
    """(path, content) of the agent's reproduction script: the last `create` of a repro-named Python file."""
    found = None
    for step in traj.steps:
        for call in step.tool_calls:
            path = str(call.arguments.get("path", ""))
            if call.name == "create" and REPRO_NAME.search(path) and "/tests/" not in f"/{path}":
                found = (path, str(call.arguments.get("content", "")))
    return found


def baseline(instance: TaskInstance, config: SandboxConfig) -> dict[str, str] | None:
    """Visible test results on the unpatched repository."""
    if not instance.test_cmd:
        return None
    with start_sandbox(config, image=instance.image or None) as sb:
        return run_visible_tests(sb, instance)


def visible_outcome(instance: TaskInstance, traj: Trajectory, config: SandboxConfig,
                    base: dict[str, str] | None) -> VisibleOutcome:
    """Apply `traj.patch` to a fresh checkout and run the visible checks (never the hidden tests)."""
    out = VisibleOutcome(patch_produced=bool(traj.patch.strip()), final_status=traj.status.value)
    if traj.error:
        out.notes.append(f"episode error: {traj.error[:200]}")
    if not out.patch_produced:
        return out
    with start_sandbox(config, image=instance.image or None) as sb:
        out.applies, log = apply_patch(sb, traj.patch)
        if not out.applies:
            out.notes.append(f"git apply: {log[-200:]}")
            return out
        statuses = run_visible_tests(sb, instance)
        if statuses is None:
            out.notes.append("no visible test command for this instance")
        elif not statuses:
            out.tests = "fail"
            out.notes.append("the visible tests did not run (no results in their output)")
        else:
            passed = {t for t, s in statuses.items() if s in ("PASSED", "XFAIL")}
            out.tests_passed = len(passed)
            before = {t for t, s in (base or {}).items() if s in ("PASSED", "XFAIL")}
            out.regressions = sorted(before - passed)
            out.tests = "fail" if out.regressions else "pass"
        script = repro_script(traj)
        if script is not None:
            path, content = script
            full = path if path.startswith("/") else f"{sb.workdir}/{path}"
            if sb.exec(f"test -f {shlex.quote(full)}").exit_code != 0:
                sb.write_file(full, content)
            r = sb.exec(f"cd {shlex.quote(sb.workdir)} && timeout 120 python3 {shlex.quote(full)}", timeout=150)
            out.repro, out.repro_path = ("pass" if r.exit_code == 0 else "fail"), path
    return out
