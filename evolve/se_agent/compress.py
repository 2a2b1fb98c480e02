"""Compress a trajectory into text for the summariser and operator prompts, and say how much was cut.

Every step keeps its role, thought and action. An action that is an editor call or longer than 350
characters, and a tool output of 300 characters or more, is clipped to its head (20%, 30-150 characters)
and tail (10%, 30-100 characters) with a marker that says how many characters were cut.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from records import Trajectory

EDITOR_TOOLS = {"str_replace", "create", "edit", "write_file"}
"""Tool calls whose arguments are file contents (always clipped when long)."""
ACTION_LIMIT = 350
"""Actions longer than this are clipped."""
OUTPUT_LIMIT = 300
"""Tool outputs of this length or more are clipped."""

_THINK = re.compile(r"<think>(.*?)</think>", re.S)


def _clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def clip(text: str) -> tuple[str, int]:
    """Head 20% (30-150 chars) + marker + tail 10% (30-100 chars); returns (text, characters cut)."""
    n = len(text)
    head, tail = _clamp(n // 5, 30, 150), _clamp(n // 10, 30, 100)
    if head + tail >= n:
        return text, 0
    cut = n - head - tail
    return f"{text[:head]} [... {cut} chars cut ...] {text[n - tail:]}", cut


@dataclass
class Compressed:
    """A compressed trajectory and how much was dropped."""

    text: str
    chars_in: int = 0
    chars_cut: int = 0
    clipped: int = 0
    """Pieces (actions or outputs) that were clipped."""
    steps: int = 0
    lines: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, int]:
        return {"chars_in": self.chars_in, "chars_out": len(self.text), "chars_cut": self.chars_cut,
                "clipped": self.clipped, "steps": self.steps}


def thought_of(content: str) -> str:
    m = _THINK.search(content)
    return (m.group(1) if m else content.split("<tool_call>")[0]).strip()


def compress(traj: Trajectory) -> Compressed:
    """The trajectory as one line per step part: role, thought, action (clipped per the rules), output."""
    out = Compressed(text="", steps=len(traj.steps))
    lines: list[str] = []

    def put(prefix: str, text: str, limit_hit: bool) -> None:
        out.chars_in += len(text)
        if limit_hit:
            text, cut = clip(text)
            if cut:
                out.chars_cut += cut
                out.clipped += 1
        lines.append(f"{prefix}{text}")

    for step in traj.steps:
        lines.append(f"## step {step.index} (assistant)")
        put("thought: ", thought_of(step.response.content), False)
        for call in step.tool_calls:
            action = f"{call.name} {json.dumps(call.arguments, ensure_ascii=False)}"
            put("action: ", action, call.name in EDITOR_TOOLS or len(action) > ACTION_LIMIT)
        if step.parse_error:
            put("parse error: ", step.parse_error, len(step.parse_error) >= OUTPUT_LIMIT)
        if step.observation is not None:
            obs = step.observation.content
            put(f"output ({step.observation.role}): ", obs, len(obs) >= OUTPUT_LIMIT)
    out.lines = lines
    out.text = "\n".join(lines)
    return out


def fit(text: str, limit: int) -> tuple[str, int]:
    """Cut `text` to at most `limit` characters (head and tail kept, marker in the middle); returns the cut."""
    if len(text) <= limit:
        return text, 0
    keep = max(limit - 40, 0)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} chars cut ...]\n{text[len(text) - tail:] if tail else ''}", cut
