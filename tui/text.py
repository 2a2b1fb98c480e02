"""Plain-text helpers: durations, ages, log-prob summaries, and the step/trajectory text the inspector
shows and exports. Agent output is shown as text, never parsed as markup."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from records import Step, TestReport, Trajectory

THINK = re.compile(r"\A\s*<think>(.*?)(?:</think>|\Z)", re.S)
"""A response's reasoning: a `<think>` block it opens with (closed, or cut by the token budget). A `<think>` written
anywhere else is the response's own text (a command that echoes it, code that parses it) and is kept."""
MAX_SHOWN = 20_000
"""Characters of one message shown on screen; the export holds all of it."""


def clean(text: str | None) -> str:
    """Null bytes stripped (they break terminals), everything else kept."""
    return (text or "").replace("\x00", "")


def clip(text: str, limit: int = MAX_SHOWN) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… {len(text) - limit} more characters (press e to export the step)"


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


def age(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    return duration((now or time.time()) - ts) + " ago"


def clock(ts: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def split_thinking(content: str) -> tuple[str, str]:
    """(thinking, the rest) of a response written as `<think>...</think>rest`."""
    m = THINK.match(content)
    if m is None:
        return "", content.strip()
    return m.group(1).strip(), content[m.end():].strip()


def logprob_summary(logprobs: list[float] | None) -> str:
    """Mean, minimum, perplexity and the share of tokens under 10% probability."""
    if not logprobs:
        return "no log-probs"
    n = len(logprobs)
    mean = sum(logprobs) / n
    low = sum(lp < math.log(0.1) for lp in logprobs)
    return f"{n} tok · mean {mean:.3f} · min {min(logprobs):.2f} · ppl {math.exp(-mean):.2f} · p<0.1: {low}"


def tool_names(step: Step) -> str:
    return ",".join(c.name for c in step.tool_calls) or ("parse error" if step.parse_error else "-")


def step_text(step: Step, total: int | None = None, thinking: bool = True) -> str:
    """The whole step as plain text (for export and search)."""
    think, said = split_thinking(clean(step.response.content))
    parts = [f"# step {step.index + 1}" + (f"/{total}" if total else ""),
             f"policy {duration(step.policy_seconds)} · tools {duration(step.tool_seconds)} · "
             f"prompt {step.prompt_tokens} tok · completion {step.completion_tokens} tok",
             "log-probs: " + logprob_summary(step.response.logprobs)]
    if thinking and think:
        parts += ["## thinking", think]
    parts += ["## response", said or "(empty)"]
    for call in step.tool_calls:
        parts += [f"## tool call: {call.name}", json.dumps(call.arguments, indent=2, ensure_ascii=False)]
    if step.parse_error:
        parts += ["## parse error", clean(step.parse_error)]
    if step.observation is not None:
        parts += ["## observation" + (f" ({step.observation.name})" if step.observation.name else ""),
                  clean(step.observation.content)]
    return "\n\n".join(parts) + "\n"


def report_lines(report: TestReport | None) -> list[tuple[str, str, str]]:
    """(group, test, status) rows: every FAIL_TO_PASS and PASS_TO_PASS test with its status."""
    if report is None:
        return []
    rows = []
    for group, ok, bad in (("FAIL_TO_PASS", report.fail_to_pass_success, report.fail_to_pass_failure),
                           ("PASS_TO_PASS", report.pass_to_pass_success, report.pass_to_pass_failure)):
        for name in ok:
            rows.append((group, name, str(getattr(report.test_status.get(name), "value", "PASSED"))))
        for name in bad:
            status = report.test_status.get(name)
            rows.append((group, name, status.value if status is not None else "NOT RUN"))
    return rows


def trajectory_export(traj: Trajectory, rewards: dict[str, Any], report: TestReport | None) -> dict[str, Any]:
    """Everything about one trajectory as one JSON document."""
    return {"trajectory": traj.model_dump(mode="json"),
            "rewards": {k: v.model_dump(mode="json") for k, v in rewards.items()},
            "test_report": report.model_dump(mode="json") if report else None}
