"""Calls of the operator policy (summaries, operators, the pairwise judge) and strict JSON parsing."""

from __future__ import annotations

import json
import re
from typing import Any

from agent.policy.base import Policy, SamplingParams
from records import Message

_THINK = re.compile(r"<think>.*?</think>", re.S)


def ask(policy: Policy, system: str, user: str, *, max_tokens: int, temperature: float = 0.0,
        seed: int | None = 0) -> str:
    """One completion of (system, user) with the visible text only (a `<think>` block is removed)."""
    messages = [Message(role="system", content=system), Message(role="user", content=user)]
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    text = policy.generate([messages], params)[0].text
    return _THINK.sub("", text).strip()


def json_object(text: str) -> dict[str, Any]:
    """The one JSON object in `text` (a fenced block or the outermost braces). Raises ValueError."""
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.S)
    body = fenced.group(1) if fenced else text[text.find("{"): text.rfind("}") + 1]
    if not body:
        raise ValueError("no JSON object in the reply")
    value = json.loads(body)
    if not isinstance(value, dict):
        raise ValueError("the reply's JSON is not an object")
    return value
