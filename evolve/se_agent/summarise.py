"""Summarise one executed trajectory into a pool entry: the operator policy fills a strict JSON schema;
when it fails (policy error, invalid JSON, wrong keys or types) a deterministic summary built from the
trajectory itself is used, with the same types (list fields are lists). The outcome is never the LLM's: it
is the visible outcome measured outside it."""

from __future__ import annotations

import json
import logging
import re

from pydantic import ValidationError

from agent.policy.base import Policy
from evolve.se_agent.compress import compress, fit, thought_of
from evolve.se_agent.llm import ask, json_object
from evolve.se_agent.records import Attempt, PoolEntry, SummaryFields, VisibleOutcome
from records import TaskInstance, Trajectory

log = logging.getLogger(__name__)

FIELDS = list(SummaryFields.model_fields)

SYSTEM = (
    "You read the record of one attempt by a coding agent to fix an issue and describe the attempt for a "
    "colleague who will plan the next one. Reply with a single JSON object and nothing else. It has exactly "
    "these keys: approach (string, one or two sentences), files_touched (list of strings), key_changes (list "
    "of strings, one change each), tools_used (list of strings), reasoning_pattern (string, e.g. "
    "'reproduce -> locate -> edit -> test'), assumptions (list of strings). Do not judge whether it worked.")


def patch_files(patch: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"^diff --git a/(\S+) b/", patch, flags=re.M)))


def fallback_fields(traj: Trajectory) -> SummaryFields:
    """A summary from the trajectory alone (no LLM): same schema, list fields are lists."""
    tools = list(dict.fromkeys(c.name for s in traj.steps for c in s.tool_calls))
    sequence: list[str] = []
    for s in traj.steps:
        for c in s.tool_calls:
            if not sequence or sequence[-1] != c.name:
                sequence.append(c.name)
    thoughts = [thought_of(s.response.content) for s in traj.steps]
    first = next((t for t in thoughts if t), "")
    added = [ln[1:].strip() for ln in traj.patch.splitlines()
             if ln.startswith("+") and not ln.startswith("+++") and ln[1:].strip()]
    return SummaryFields(
        approach=(first[:300] or "no stated plan") + f" ({len(traj.steps)} steps, ended {traj.status.value})",
        files_touched=patch_files(traj.patch),
        key_changes=[f"+ {a[:160]}" for a in added[:6]] or ["no change to the repository"],
        tools_used=tools,
        reasoning_pattern=" -> ".join(sequence[:20]) or "no tool calls",
        assumptions=[])


def summary_prompt(instance: TaskInstance, traj: Trajectory, attempt: Attempt, max_chars: int) -> tuple[str, dict]:
    comp = compress(traj)
    problem, cut_p = fit(instance.problem_statement, max_chars // 4)
    body, cut_t = fit(comp.text, max_chars // 2)
    patch, cut_d = fit(traj.patch or "(no patch)", max_chars // 4)
    stats = comp.stats()
    stats["chars_cut"] += cut_p + cut_t + cut_d
    stats["chars_out"] = len(problem) + len(body) + len(patch)
    parts = [f"<issue>\n{problem}\n</issue>"]
    if attempt.strategy:
        parts.append(f"<strategy it was given>\n{attempt.strategy}\n</strategy it was given>")
    parts += [f"<attempt>\n{body}\n</attempt>", f"<final patch>\n{patch}\n</final patch>",
              "Reply with the JSON object."]
    return "\n\n".join(parts), stats


def summarise(instance: TaskInstance, traj: Trajectory, attempt: Attempt, outcome: VisibleOutcome,
              policy: Policy | None, *, max_chars: int = 12000, max_tokens: int = 400) -> PoolEntry:
    """The pool entry of `traj` (summary by `policy` when it returns the schema, else the fallback)."""
    assert traj.instance_id == instance.instance_id == attempt.instance_id
    user, stats = summary_prompt(instance, traj, attempt, max_chars)
    fields, reason = None, ""
    if policy is None:
        reason = "no summariser policy"
    else:
        try:
            fields = SummaryFields.model_validate(json_object(ask(policy, SYSTEM, user, max_tokens=max_tokens)))
        except (ValueError, ValidationError, json.JSONDecodeError) as e:
            reason = f"invalid summary: {str(e).splitlines()[0][:200]}"
        except Exception as e:  # a policy failure must not lose the trajectory's entry
            reason = f"summariser failed: {type(e).__name__}: {str(e)[:200]}"
    if fields is None:
        log.debug("summary of %s falls back: %s", traj.id, reason)
        fields = fallback_fields(traj)
    return PoolEntry(**fields.model_dump(), instance_id=instance.instance_id, trajectory_id=traj.id,
                     iteration=attempt.iteration, slot=attempt.slot, origin=attempt.origin, outcome=outcome,
                     summariser="fallback" if reason else "llm", fallback_reason=reason, compression=stats)
