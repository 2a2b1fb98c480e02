"""ToolRL's tool-call reward (Qian et al., 2025, "ToolRL: Reward is All Tool Learning Needs").

R = R_format + R_correct, computed from the model's message and a ground-truth assistant message in
ToolRL's tagged form (`<think>…</think>` then `<tool_call>` with one JSON object per line and/or
`<response>…</response>`). It follows the reference implementation (`verl/utils/reward_score/rlla.py`):

- R_format ∈ {0, 1}: the (stripped) response has the tags the answer has, in order (see `format_score`).
- R_correct ∈ [-3, 3]: 0 when the answer makes no call; -3 when the response's calls cannot be parsed;
  3 for an exact match; otherwise name, parameter-name and parameter-value matching scaled to [-3, 3]
  (see `tool_call_score`).

Choices where the reference code is silent or loose (all deliberate):
- Empty lines inside a `<tool_call>` block are not skipped: like the reference, each line must be a
  JSON object, so a blank line makes the response's calls unparseable (-3).
- A predicted call must be a JSON object with a string `name` and an object `parameters`, else -3
  (the reference crashes into -3 only when it happens to touch the missing key).
- Values are compared as JSON values: dicts regardless of key order, lists in order, numbers by value
  (`1 == 1.0`), but a boolean never equals a number (Python's `True == 1` would credit `1` for `true`).
- A malformed ground-truth answer is a data error and raises `ValueError`; bad model output never raises.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel

from records import Reward

FORMAT_BOUNDS = (0.0, 1.0)
CORRECTNESS_BOUNDS = (-3.0, 3.0)


class ToolRLSchedule(BaseModel):
    """Optional reward-scale schedules of the paper (Section 5.2), as the reference code implements them.

    With `s = step`, `t = s / horizon`:

    - `dynamic` (reference `SCHEDULEREWARD`, the paper's smooth dynamic scale): format bounds start at
      [-2, 2] and shrink, correctness bounds start at [-2, 2] and grow:
      format max = max(1, 2 - t), format min = min(-1, -2 + 2t),
      correctness max = min(3, 2 + t), correctness min = max(-3, -2 - t).
      (So after `horizon` steps a format failure costs -1, as in the reference, not 0.)
    - `two_stage` (reference `MAX1STEP30MAX3`): before `switch_step` the correctness bounds are divided
      by 3 ([-1, 1]); from `switch_step` on the format bounds are divided by 2 ([0, 0.5]).
    - `equal_max` (reference `CORRECTMAX1`, not step dependent): correctness bounds [-1, 1], so format
      and correctness have the same maximum.
    """

    kind: Literal["dynamic", "two_stage", "equal_max"] = "dynamic"
    """Which schedule."""
    horizon: int = 150
    """`dynamic`: steps over which the bounds move (the reference uses 150)."""
    switch_step: int = 30
    """`two_stage`: first step of the second stage (the reference uses 30)."""


class ToolRLScore(BaseModel):
    """The two parts of ToolRL's reward and their sum."""

    format: float
    """Format reward: the maximum of its bounds when the response's tags match the answer's, else the minimum."""
    correctness: float
    """Tool-call correctness reward, in [-3, 3] with fixed bounds."""
    total: float
    """`format + correctness`."""

    def to_reward(self) -> Reward:
        """As a `records.Reward` named `toolrl`."""
        return Reward(name="toolrl", total=self.total,
                      parts={"format": self.format, "correctness": self.correctness})


def bounds(step: int = 0, schedule: ToolRLSchedule | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
    """((format min, format max), (correctness min, correctness max)) at `step` under `schedule`."""
    (fmin, fmax), (cmin, cmax) = FORMAT_BOUNDS, CORRECTNESS_BOUNDS
    if schedule is None:
        return (fmin, fmax), (cmin, cmax)
    if schedule.kind == "dynamic":
        t = step / schedule.horizon
        fmax, fmin = max(1.0, 2.0 - (2.0 - fmax) * t), min(-1.0, -2.0 + (2.0 + fmin) * t)
        cmax, cmin = min(3.0, (cmax - 2.0) * t + 2.0), max(-3.0, (cmin + 2.0) * t - 2.0)
    elif schedule.kind == "two_stage":
        if step >= schedule.switch_step:
            fmin, fmax = fmin / 2, fmax / 2
        else:
            cmin, cmax = cmin / 3, cmax / 3
    else:  # equal_max
        cmin, cmax = -1.0, 1.0
    return (fmin, fmax), (cmin, cmax)


# --- format ------------------------------------------------------------------------------------------

_PATTERNS = {
    "response": r"^<think>.*?</think>\n<response>.*?</response>$",
    "tool_call": r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$",
    "both": r"^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>\n<response>.*?</response>$",
    "neither": r"^<think>.*?</think>$",
}
_ONCE = {
    "response": ("<response>", "</response>"),
    "tool_call": ("<tool_call>", "</tool_call>"),
    "both": ("<tool_call>", "</tool_call>", "<response>", "</response>"),
    "neither": (),
}


def answer_kind(answer: str) -> Literal["response", "tool_call", "both", "neither"]:
    """Which tags the ground-truth answer holds."""
    has_call, has_resp = "<tool_call>" in answer, "<response>" in answer
    if has_call and has_resp:
        return "both"
    if has_call:
        return "tool_call"
    if has_resp:
        return "response"
    return "neither"


def format_ok(response: str, answer: str) -> bool:
    """Whether the (already stripped) response has the layout the answer calls for."""
    kind = answer_kind(answer)
    if not re.search(_PATTERNS[kind], response, re.DOTALL):
        return False
    return all(response.count(tag) == 1 for tag in _ONCE[kind])


# --- correctness -------------------------------------------------------------------------------------

def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: dicts by keys and values, lists in order, bools never equal to numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return a == b


def match_score(a: list[str], b: list[str]) -> float:
    """1 if the lists are equal, 0 if either is empty, else multiset |a ∩ b| / (|a| + |b| - |a ∩ b|)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    ca, cb = Counter(a), Counter(b)
    inter = sum(min(ca[k], cb[k]) for k in ca.keys() & cb.keys())
    return inter / (len(a) + len(b) - inter)


def _block(text: str) -> str:
    """Text between the first `<tool_call>` and the next `</tool_call>` (reference `split` semantics)."""
    return text.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0].strip()


def parse_calls(block: str) -> list[dict[str, Any]] | None:
    """The calls of a tool-call block, one JSON object per line; None if any line is not a valid call."""
    calls: list[dict[str, Any]] = []
    for line in block.split("\n"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if (not isinstance(obj, dict) or not isinstance(obj.get("name"), str)
                or not isinstance(obj.get("parameters"), dict)):
            return None
        calls.append(obj)
    return calls


def answer_calls(answer: str) -> list[dict[str, Any]] | None:
    """The ground-truth calls of an answer (None when it makes no call); ValueError when malformed."""
    if "<tool_call>" not in answer:
        return None
    calls = parse_calls(_block(answer))
    if calls is None:
        raise ValueError(f"ground-truth answer has a malformed <tool_call> block: {answer!r}")
    return calls


def response_calls(response: str) -> list[dict[str, Any]] | None:
    """The calls of a model response, or None when it has no parseable `<tool_call>` block."""
    if "<tool_call>" not in response or "</tool_call>" not in response:
        return None
    return parse_calls(_block(response))


def tool_call_score(gt: list[dict[str, Any]], pd: list[dict[str, Any]],
                    lo: float = -3.0, hi: float = 3.0) -> float:
    """ToolRL's correctness of predicted calls `pd` against ground truth `gt`, scaled to [lo, hi].

    Exact match gives `hi`. Otherwise score = match(gt names, pd names) with maximum 1; each gt call
    adds 1 + its parameter count to the maximum, and the best unused predicted call of the same name
    (first of the highest `match(gt keys, pd keys) + number of gt parameters with an equal value`, if > 0)
    adds that value to the score. Result: (hi - lo) * score / maximum + lo.
    """
    if json_equal(gt, pd):
        return hi
    score = match_score([c["name"] for c in gt], [c["name"] for c in pd])
    maximum = 1.0
    used: set[int] = set()
    for g in gt:
        gp = g["parameters"]
        maximum += 1.0 + len(gp)
        best, best_i = 0.0, -1
        for i, p in enumerate(pd):
            if i in used or p["name"] != g["name"]:
                continue
            pp = p["parameters"]
            value = match_score(list(gp), list(pp))
            value += sum(1.0 for k, v in gp.items() if k in pp and json_equal(pp[k], v))
            if value > best:
                best, best_i = value, i
        if best_i >= 0:
            used.add(best_i)
            score += best
    return (hi - lo) * score / maximum + lo


def score(response: str, answer: str, step: int = 0, schedule: ToolRLSchedule | None = None) -> ToolRLScore:
    """ToolRL's reward of `response` against the ground-truth `answer` (fixed bounds unless `schedule`)."""
    response = response.strip()
    (fmin, fmax), (cmin, cmax) = bounds(step, schedule)
    fmt = fmax if format_ok(response, answer) else fmin
    gt = answer_calls(answer)
    if gt is None:
        correct = 0.0
    else:
        pd = response_calls(response)
        correct = cmin if pd is None else tool_call_score(gt, pd, cmin, cmax)
    return ToolRLScore(format=fmt, correctness=correct, total=fmt + correct)
