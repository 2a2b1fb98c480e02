"""What to improve and how to say it: choose a topic from a parent's own evaluation record, then turn it into
a problem statement with the meta policy.

Topics (`choose_topic`): a generic one derived from the parent's statuses, each with its probability when at
least `min_fraction` of its evaluated tasks show it (empty patches, context exceeded, budget exhausted, parse
errors), else one of its failed tasks at random. By default the diagnosis sees only what a user would see: the
issue text, the agent's trajectory and its patch. With `privileged` it also sees the hidden tests' names and
results (what HGM and DGM do); the flag is stored with every diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.policy.base import Policy, SamplingParams
from records import Message, TaskInstance, TestReport, Trajectory

GENERIC = {
    "empty_patches": "Many of the agent's episodes ended with an empty patch: it submitted without changing any "
                     "file, or never submitted a change. Find out why from the variant and change it so the agent "
                     "reliably edits the source before it submits.",
    "context_exceeded": "Episodes ran out of the model's context window before the agent submitted. Change the "
                        "variant so long episodes fit: shorter observations, eliding old ones, tighter prompts.",
    "budget_exhausted": "Episodes used up their step or token budget without submitting. Change the variant so the "
                        "agent converges sooner: clearer instructions, better tools, a check before submit.",
    "parse_errors": "The model's replies often had no valid tool call, so steps were wasted. Change the variant's "
                    "prompts and error messages so the model reliably produces well-formed tool calls.",
}
"""Canned problem descriptions for the generic topics."""

SYSTEM = """You improve a coding agent. The agent is defined by a small "variant" directory:
- variant.yaml: its prompts (system_template, instance_template, ...), its tool list and loop settings;
- tools/<name>/: a tool the agent can call: tool.yaml (description, JSON-schema parameters) and an executable
  `run` script that receives the JSON arguments on stdin and runs inside the task's sandbox;
- tests/test_*: tests of those tools.
You are shown how the agent did on a task. Work out the most useful single change to the variant, then write it
as an issue for the variant's maintainer, inside <problem_statement>...</problem_statement>: what went wrong,
what to change (a prompt, a tool, a setting) and how to check it."""


@dataclass
class Topic:
    """What an expansion tries to improve."""

    kind: str
    """`task` (one failed task) or a key of GENERIC."""
    task_id: str = ""
    trajectory_id: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def trajectory_flags(traj: Trajectory) -> set[str]:
    """The generic problems one trajectory shows."""
    flags = set()
    if not traj.patch.strip():
        flags.add("empty_patches")
    if traj.status.value == "context_exceeded":
        flags.add("context_exceeded")
    if traj.status.value == "budget_exhausted":
        flags.add("budget_exhausted")
    if traj.steps and sum(bool(s.parse_error) for s in traj.steps) >= max(1, len(traj.steps) // 4):
        flags.add("parse_errors")
    return flags


def choose_topic(rows: list[dict[str, Any]], trajectories: dict[str, Trajectory], rng: np.random.Generator,
                 probs: dict[str, float], min_fraction: float = 0.1) -> Topic | None:
    """A topic from the parent's counted outcome rows (None when it failed nothing and shows no problem)."""
    counted = [r for r in rows if r["status"] in ("pass", "fail", "timeout")]
    if not counted:
        return None
    flags = {r["task_id"]: trajectory_flags(trajectories[r["trajectory_id"]])
             for r in counted if r.get("trajectory_id") in trajectories}
    stats = {k: sum(k in f for f in flags.values()) for k in GENERIC}
    for kind in GENERIC:  # in a fixed order, each with its own chance
        if stats[kind] >= max(1, min_fraction * len(counted)) and rng.random() < probs.get(kind, 0.0):
            return Topic(kind, stats=stats)
    failed = [r for r in counted if r["status"] != "pass"]
    if not failed:
        return None
    row = failed[int(rng.integers(len(failed)))]
    return Topic("task", row["task_id"], row.get("trajectory_id"), stats)


def render_trajectory(traj: Trajectory, max_chars: int = 30_000) -> str:
    parts = []
    for s in traj.steps:
        parts.append(f"--- step {s.index + 1}: agent\n{s.response.content.strip()}")
        if s.parse_error:
            parts.append(f"(no valid tool call: {s.parse_error})")
        if s.observation is not None:
            parts.append(f"--- step {s.index + 1}: result\n{s.observation.content.strip()}")
    text = "\n".join(parts) or "(no steps)"
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + f"\n[... {len(text) - max_chars} characters elided ...]\n" + text[-half:]
    return text


def variant_text(variant_dir: str | Path, max_chars: int = 20_000) -> str:
    """variant.yaml and the tools' and tests' text, as the diagnosis shows them."""
    root = Path(variant_dir)
    parts = []
    for f in [root / "variant.yaml", *sorted((root / "tools").rglob("*")), *sorted((root / "tests").rglob("*"))]:
        if f.is_file() and "__pycache__" not in f.parts:
            try:
                parts.append(f"### {f.relative_to(root)}\n{f.read_text()}")
            except UnicodeDecodeError:
                parts.append(f"### {f.relative_to(root)} (binary)")
    text = "\n".join(parts)
    return text if len(text) <= max_chars else text[:max_chars] + "\n[... cut ...]"


def diagnosis_messages(topic: Topic, variant_dir: str | Path, instance: TaskInstance | None,
                       traj: Trajectory | None, report: TestReport | None, privileged: bool) -> list[Message]:
    user = [f"## The agent's variant\n{variant_text(variant_dir)}"]
    if topic.kind != "task":
        user.append(f"## The problem\n{GENERIC[topic.kind]}\nCounts over the agent's evaluated tasks: "
                    + ", ".join(f"{k}: {v}" for k, v in topic.stats.items()))
    else:
        assert instance is not None
        user.append(f"## The task it failed (the issue it was given)\n{instance.problem_statement.strip()}")
        if traj is not None:
            user.append(f"## What the agent did (status: {traj.status.value})\n{render_trajectory(traj)}")
            user.append(f"## The agent's patch\n{traj.patch.strip() or '(empty)'}")
        if privileged and report is not None:
            user.append("## Hidden tests (privileged: the agent never saw them)\n"
                        f"should pass after the fix, passed: {report.fail_to_pass_success}\n"
                        f"should pass after the fix, failed: {report.fail_to_pass_failure}\n"
                        f"passed before and after: {len(report.pass_to_pass_success)}, "
                        f"broken by the patch: {report.pass_to_pass_failure}")
    return [Message(role="system", content=SYSTEM), Message(role="user", content="\n\n".join(user))]


def parse_problem(text: str) -> str:
    """The text inside <problem_statement> tags, or the whole reply when there are none."""
    start, end = text.find("<problem_statement>"), text.rfind("</problem_statement>")
    if start >= 0 and end > start:
        return text[start + len("<problem_statement>"):end].strip()
    return text.strip()


def diagnose(policy: Policy, messages: list[Message], max_tokens: int = 1024) -> tuple[str, str, int]:
    """(problem statement, the whole reply, tokens used)."""
    gen = policy.generate([messages], SamplingParams(max_tokens=max_tokens, temperature=0.0))[0]
    return parse_problem(gen.text), gen.text, (gen.prompt_tokens or 0) + (gen.completion_tokens or 0)
