"""Tool calls in a completion's text -> OpenAI `message.tool_calls`, with the agent's own parser.

The model writes calls as the agent's protocol has it (`agent.parsing`): `<tool_call>` blocks holding
one JSON object per line, `{"name": ..., "arguments": {...}}` (`"parameters"` accepted too). Each line that
the agent's parser accepts becomes a call whose `arguments` is its JSON. A line it refuses keeps what the
model wrote: the call's name when one can be read, and its arguments text exactly as written (OpenAI
documents that `arguments` may not be valid JSON). Only when no name can be read anywhere is the whole
text returned as `content` with no calls, as vLLM's parsers do.

`finish_reason` follows vLLM (and OpenAI): `tool_calls` when calls were made with `tool_choice` auto or
required, `stop` with a named function, `length` when the completion was cut. `tool_choice: none` leaves
the text alone. `required` and a named function are not enforced by constrained decoding here: what the
model wrote is returned (with a named function, calls to other functions are dropped).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent.parsing import CALL_BLOCK, parse_tool_calls

OPEN = "<tool_call>"
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGS = re.compile(r'"(?:arguments|parameters)"\s*:\s*(.*)$', re.DOTALL)


@dataclass
class Parsed:
    content: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _raw_call(line: str) -> dict[str, Any] | None:
    """A call the agent's parser refused: its name and its arguments as written, if a name can be read."""
    name = _NAME.search(line)
    if name is None:
        return None
    try:
        name_text = json.loads(f'"{name.group(1)}"')
    except json.JSONDecodeError:
        name_text = name.group(1)
    args = _ARGS.search(line)
    raw = args.group(1).rstrip() if args else ""
    if raw.endswith("}") and raw.count("{") < raw.count("}"):
        raw = raw[:-1].rstrip()  # the closing brace of the call object
    return _call(name_text, raw)


def extract(text: str, tool_choice: Any) -> Parsed:
    """Split `text` into content and tool calls as `tool_choice` asks (see the module docstring)."""
    if tool_choice == "none" or OPEN not in text:
        return Parsed(text)
    calls: list[dict[str, Any]] = []
    for block in CALL_BLOCK.findall(text):
        for line in block.strip().splitlines():
            line = line.strip()
            if not line:
                continue
            parsed, error = parse_tool_calls(f"{OPEN}\n{line}\n</tool_call>")
            if error is None:
                calls += [_call(c.name, json.dumps(c.arguments, ensure_ascii=False)) for c in parsed]
            elif (raw := _raw_call(line)) is not None:
                calls.append(raw)
            else:
                return Parsed(text)  # nothing readable: the text as it is (vLLM's fallback)
    if not calls:
        return Parsed(text)
    if isinstance(tool_choice, dict):
        wanted = tool_choice["function"]["name"]
        calls = [c for c in calls if c["function"]["name"] == wanted]
        if not calls:
            return Parsed(text)
    before = text[: text.find(OPEN)].rstrip()
    return Parsed(before or None, calls)


def finish_reason(reason: str, calls: list[dict[str, Any]], tool_choice: Any) -> str:
    if not calls or reason == "length":
        return reason
    return "stop" if isinstance(tool_choice, dict) else "tool_calls"


class StreamSplitter:
    """For streaming with tools: text before the first `<tool_call>` streams as content; from there on it
    is held until the end, where `extract` decides."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = 0
        self.holding = False

    def feed(self, delta: str) -> str:
        self.text += delta
        if self.holding:
            return ""
        at = self.text.find(OPEN)
        if at >= 0:
            self.holding = True
            return self._release(at)
        hold = next((k for k in range(min(len(OPEN) - 1, len(self.text)), 0, -1)
                     if OPEN.startswith(self.text[-k:])), 0)
        return self._release(len(self.text) - hold)

    def _release(self, end: int) -> str:
        out = self.text[self.sent: max(end, self.sent)]
        self.sent = max(end, self.sent)
        return out

    def finish(self, tool_choice: Any) -> tuple[str, list[dict[str, Any]]]:
        """(content not yet sent, calls)."""
        parsed = extract(self.text, tool_choice)
        if not parsed.calls:
            return self._release(len(self.text)), []
        return "", parsed.calls
