"""Rubric-based LLM-as-judge reward over a trajectory or a patch (as in CoMAS and SE-Agent's selection).

`rewards/` cannot import the agent's `Policy`, so the judge is given the model as a function
`generate(messages) -> str` (the caller wraps a Policy) and a `cache` mapping from a content hash to the
judge's raw reply (the caller may pass a persistent mapping; by default a dict owned by the `Judge`).
The same prompt under the same config is therefore judged once.

The judge is asked for one line per criterion (`name: x/MAX`), a short rationale and a final line
`SCORE: x/MAX`; a JSON object `{"score": x, "criteria": {...}, "rationale": "..."}` is accepted too.
Bad model output never raises: an unparseable reply gives total 0 with `info["error"]`.
Errors of `generate` itself (server down) propagate and nothing is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, Field

from records import Message, Reward, Step, TaskInstance, Trajectory

log = logging.getLogger(__name__)

Generate = Callable[[list[Message]], str]


class Criterion(BaseModel):
    """One rubric criterion."""

    name: str
    """Identifier the judge writes before its score (letters, digits, `_`)."""
    description: str
    """What the judge should look for."""
    weight: float = 1.0
    """Relative weight in the total (weights are normalised to sum to 1)."""


DEFAULT_CRITERIA = [
    Criterion(name="correctness", weight=0.5,
              description="Does the final result (patch or answer) actually solve the task as stated, "
                          "without breaking existing behaviour?"),
    Criterion(name="approach", weight=0.3,
              description="Are the steps purposeful: reproducing the problem, locating the cause, "
                          "checking hypotheses against evidence, verifying the fix?"),
    Criterion(name="efficiency", weight=0.2,
              description="Is the work focused: no redundant, looping or irrelevant actions or edits?"),
]

DEFAULT_INSTRUCTIONS = (
    "You are a strict, fair reviewer of a software agent's work. Judge only what is shown; "
    "do not reward claims the evidence does not support."
)


class JudgeConfig(BaseModel):
    """The rubric and how much of the work the judge is shown."""

    instructions: str = DEFAULT_INSTRUCTIONS
    """Opening of the judge's system prompt."""
    criteria: list[Criterion] = Field(default_factory=lambda: [c.model_copy() for c in DEFAULT_CRITERIA])
    """Rubric criteria with their weights."""
    max_score: float = 10.0
    """Top of the scale the judge scores on (the reward is normalised to [0, 1])."""
    use_criteria_total: bool = True
    """When every criterion has a score, total = their weighted mean; otherwise the final SCORE line."""
    max_task_chars: int = 4000
    """The task statement is cut (head and tail kept) beyond this many characters."""
    max_message_chars: int = 1200
    """Each response and observation is cut (head and tail kept) beyond this many characters."""
    head_steps: int = 3
    """First steps of a long trajectory that are shown."""
    tail_steps: int = 6
    """Last steps of a long trajectory that are shown (the middle is summarised as omitted)."""
    max_patch_chars: int = 8000
    """A patch is cut (head and tail kept) beyond this many characters."""
    max_rationale_chars: int = 2000
    """The rationale kept in the reward's info is cut to this many characters."""


class Judgement(BaseModel):
    """What was read from a judge's reply."""

    score: float | None = None
    """Total normalised to [0, 1]; None when the reply could not be read."""
    parts: dict[str, float] = Field(default_factory=dict)
    """Normalised score of each criterion the reply scored."""
    rationale: str = ""
    """The judge's explanation."""
    clamped: bool = False
    """A score was outside the scale and was clamped."""
    error: str | None = None
    """Why the reply could not be read."""


# --- prompt ------------------------------------------------------------------------------------------

def clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its head and tail."""
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[len(text) - tail:]}"


def _system(config: JudgeConfig) -> str:
    m = f"{config.max_score:g}"
    rubric = "\n".join(f"- {c.name} (weight {c.weight:g}): {c.description}" for c in config.criteria)
    lines = "\n".join(f"{c.name}: <score>/{m}" for c in config.criteria)
    return (f"{config.instructions}\n\nScore the work from 0 to {m} on each criterion:\n{rubric}\n\n"
            f"Reply in exactly this form:\n{lines}\nRATIONALE: <a few sentences>\nSCORE: <overall score>/{m}")


def _task_text(task: str | TaskInstance) -> str:
    return task.problem_statement if isinstance(task, TaskInstance) else task


def _render_step(step: Step, config: JudgeConfig) -> str:
    out = [f"### Step {step.index + 1}", "Agent:", clip(step.response.content, config.max_message_chars)]
    calls = step.tool_calls or step.response.tool_calls
    if calls and not step.response.content.strip():
        rendered = "\n".join(f"{c.name}({json.dumps(c.arguments, sort_keys=True)})" for c in calls)
        out += ["Calls:", clip(rendered, config.max_message_chars)]
    if step.parse_error:
        out += ["Parse error:", clip(step.parse_error, config.max_message_chars)]
    if step.observation is not None:
        out += ["Observation:", clip(step.observation.content, config.max_message_chars)]
    return "\n".join(out)


def render_trajectory(trajectory: Trajectory, config: JudgeConfig) -> str:
    """The trajectory as text, bounded by the config (first and last steps, each message cut)."""
    steps = trajectory.steps
    n = len(steps)
    omitted = n - config.head_steps - config.tail_steps
    shown: list[Step | None] = list(steps)
    if omitted > 0:
        shown = [*steps[:config.head_steps], None, *steps[n - config.tail_steps:n]]
    parts = [f"## Trajectory ({n} steps, ended: {trajectory.status.value})"]
    for step in shown:
        parts.append(f"[... {omitted} steps omitted ...]" if step is None else _render_step(step, config))
    if trajectory.patch:
        parts += ["## Final patch", clip(trajectory.patch, config.max_patch_chars)]
    if trajectory.answer:
        parts += ["## Final answer", clip(trajectory.answer, config.max_message_chars)]
    return "\n\n".join(parts)


def trajectory_prompt(task: str | TaskInstance, trajectory: Trajectory, config: JudgeConfig) -> list[Message]:
    """Judge messages for a trajectory: rubric, then task and the bounded trajectory."""
    user = (f"## Task\n{clip(_task_text(task), config.max_task_chars)}\n\n"
            f"{render_trajectory(trajectory, config)}\n\nJudge the agent's work.")
    return [Message(role="system", content=_system(config)), Message(role="user", content=user)]


def patch_prompt(task: str | TaskInstance, patch: str, config: JudgeConfig) -> list[Message]:
    """Judge messages for a patch: rubric, then task and the bounded patch."""
    body = clip(patch, config.max_patch_chars) if patch.strip() else "(empty patch)"
    user = (f"## Task\n{clip(_task_text(task), config.max_task_chars)}\n\n## Patch\n{body}\n\n"
            "Judge the patch.")
    return [Message(role="system", content=_system(config)), Message(role="user", content=user)]


def cache_key(messages: list[Message], config: JudgeConfig) -> str:
    """sha256 of the prompt's roles and contents and of the config."""
    blob = json.dumps({"messages": [[m.role, m.content] for m in messages], "config": config.model_dump()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- parsing -----------------------------------------------------------------------------------------

_NUM = r"(-?\d+(?:\.\d+)?)"
_OF = r"(?:\s*(?:/|out\s+of)\s*" + _NUM + r")?"
_DECOR = r"[\s*_#>`-]*"
_SCORE_RE = re.compile(rf"(?im)^{_DECOR}(?:final\s+|overall\s+)?score[\s*_`]*[:=][\s*_`]*{_NUM}{_OF}")
_RATIONALE_RE = re.compile(
    rf"(?ism)^{_DECOR}rationale[\s*_`]*:[\s*_`]*(.*?)(?=^{_DECOR}(?:final\s+|overall\s+)?score\b|\Z)")


def _criterion_re(name: str) -> re.Pattern[str]:
    words = r"[\s_-]+".join(re.escape(w) for w in re.split(r"[\s_-]+", name) if w)
    return re.compile(rf"(?im)^{_DECOR}{words}[\s*_`]*(?:score)?[\s*_`]*[:=][\s*_`]*{_NUM}{_OF}")


def _normalise(value: float, denominator: float | None, config: JudgeConfig) -> tuple[float, bool]:
    """value / denominator (default the config's max) clamped to [0, 1], and whether it was clamped."""
    top = config.max_score if denominator is None else denominator
    if not math.isfinite(value) or not math.isfinite(top) or top <= 0:
        raise ValueError(f"score {value}/{top} is not on a usable scale")
    x = value / top
    return min(1.0, max(0.0, x)), not 0.0 <= x <= 1.0


def _number(value: Any) -> tuple[float, float | None]:
    """A JSON score (`7`, `"7"`, `"7/10"`) as (value, denominator or None)."""
    if isinstance(value, bool):
        raise ValueError("score is a boolean")
    if isinstance(value, (int, float)):
        return float(value), None
    if isinstance(value, str):
        m = re.fullmatch(rf"\s*{_NUM}{_OF}\s*", value)
        if m:
            return float(m.group(1)), float(m.group(2)) if m.group(2) else None
    raise ValueError(f"score {value!r} is not a number")


def _json_objects(text: str) -> list[dict[str, Any]]:
    """JSON objects found in the text, in order."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def _weighted(parts: dict[str, float], config: JudgeConfig) -> float:
    weights = {c.name: c.weight for c in config.criteria}
    total_w = sum(weights[n] for n in parts)
    if total_w <= 0:
        return sum(parts.values()) / len(parts)
    return sum(weights[n] * v for n, v in parts.items()) / total_w


def _finish(overall: tuple[float, float | None] | None, crit: dict[str, tuple[float, float | None]],
            rationale: str, config: JudgeConfig) -> Judgement:
    clamped = False
    parts: dict[str, float] = {}
    for name, (v, d) in crit.items():
        parts[name], c = _normalise(v, d, config)
        clamped |= c
    names = [c.name for c in config.criteria]
    if config.use_criteria_total and names and all(n in parts for n in names):
        total = _weighted(parts, config)
    elif overall is not None:
        total, c = _normalise(*overall, config)
        clamped |= c
    else:
        return Judgement(parts=parts, rationale=rationale, error="no SCORE line or JSON score in the reply")
    return Judgement(score=total, parts=parts, rationale=rationale[:config.max_rationale_chars], clamped=clamped)


def _parse_lines(text: str, config: JudgeConfig) -> Judgement | None:
    scores = list(_SCORE_RE.finditer(text))
    crit = {}
    for c in config.criteria:
        hits = list(_criterion_re(c.name).finditer(text))
        if hits:
            m = hits[-1]
            crit[c.name] = (float(m.group(1)), float(m.group(2)) if m.group(2) else None)
    if not scores and not crit:
        return None
    overall = None
    if scores:
        m = scores[-1]
        overall = (float(m.group(1)), float(m.group(2)) if m.group(2) else None)
    rm = _RATIONALE_RE.search(text)
    if rm:
        rationale = rm.group(1).strip()
    else:
        rationale = (text[:scores[-1].start()] if scores else text).strip()
    return _finish(overall, crit, rationale, config)


def _parse_json(text: str, config: JudgeConfig) -> Judgement | None:
    for obj in reversed(_json_objects(text)):
        lower = {str(k).lower(): v for k, v in obj.items()}
        raw_crit = lower.get("criteria", lower.get("scores"))
        if "score" not in lower and not isinstance(raw_crit, dict):
            continue
        overall = _number(lower["score"]) if "score" in lower else None
        crit = {}
        if isinstance(raw_crit, dict):
            known = {c.name.lower(): c.name for c in config.criteria}
            for k, v in raw_crit.items():
                if str(k).lower() in known:
                    crit[known[str(k).lower()]] = _number(v)
        rationale = next((str(lower[k]) for k in ("rationale", "reasoning", "explanation") if k in lower), "")
        return _finish(overall, crit, rationale, config)
    return None


def parse_judgement(text: str, config: JudgeConfig | None = None) -> Judgement:
    """Read a score, criterion scores and a rationale from a judge's reply; never raises."""
    cfg = config or JudgeConfig()
    first: Judgement | None = None
    for parse in (_parse_lines, _parse_json):
        try:
            j = parse(text, cfg)
        except ValueError as e:
            j = Judgement(error=str(e))
        if j is not None and j.score is not None:
            return j
        first = first or j
    return first or Judgement(error="no SCORE line or JSON score in the reply")


# --- the judge ---------------------------------------------------------------------------------------

class Judge:
    """An LLM judge with a cache: `judge_trajectory` and `judge_patch` return a `Reward` named `judge`."""

    def __init__(self, generate: Generate, config: JudgeConfig | None = None,
                 cache: MutableMapping[str, str] | None = None) -> None:
        self.generate = generate
        self.config = config or JudgeConfig()
        self.cache: MutableMapping[str, str] = {} if cache is None else cache

    def judge_messages(self, messages: list[Message]) -> Reward:
        """Judge a ready prompt (asks the model only when the prompt is not in the cache)."""
        key = cache_key(messages, self.config)
        cached = key in self.cache
        if cached:
            reply = self.cache[key]
        else:
            reply = self.generate(messages)
            self.cache[key] = reply
        j = parse_judgement(reply, self.config)
        info: dict[str, Any] = {"rationale": j.rationale, "cached": cached, "key": key}
        if j.error is not None or j.score is None:
            log.warning("judge reply unreadable (%s): %.200r", j.error, reply)
            info.update(error=j.error, raw=reply[:500])
            return Reward(name="judge", total=0.0, parts={}, info=info)
        if j.clamped:
            info["clamped"] = True
        return Reward(name="judge", total=j.score, parts=j.parts, info=info)

    def judge_trajectory(self, task: str | TaskInstance, trajectory: Trajectory) -> Reward:
        """Judge a whole trajectory on the task (its problem statement)."""
        return self.judge_messages(trajectory_prompt(task, trajectory, self.config))

    def judge_patch(self, task: str | TaskInstance, patch: str) -> Reward:
        """Judge a patch on the task (its problem statement)."""
        return self.judge_messages(patch_prompt(task, patch, self.config))
