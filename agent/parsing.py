"""The text tool-call protocol: `<think>…</think>` then `<tool_call>` with one JSON object per line.

Each object is `{"name": TOOL, "parameters": {...}}` (ToolRL's form; `"arguments"` is accepted too).
A malformed call is an error string for the agent to read, never an exception.
"""

from __future__ import annotations

import json
import re

from records import ToolCall

CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
STOP = "</tool_call>"


def parse_tool_calls(text: str) -> tuple[list[ToolCall], str | None]:
    """Calls in `text`, or an error message saying what is wrong with them."""
    blocks = CALL_BLOCK.findall(text)
    if not blocks:
        return [], "no <tool_call> block found"
    calls: list[ToolCall] = []
    for block in blocks:
        for line in block.strip().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                return [], f"a tool call line is not valid JSON ({e.msg} at column {e.colno}): {line[:200]}"
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                return [], f'each line must be an object {{"name": ..., "parameters": {{...}}}}: {line[:200]}'
            args = obj.get("parameters", obj.get("arguments", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    return [], f"parameters of {obj['name']} must be a JSON object"
            if not isinstance(args, dict):
                return [], f"parameters of {obj['name']} must be a JSON object"
            calls.append(ToolCall(name=obj["name"], arguments=args))
    if not calls:
        return [], "the <tool_call> block is empty"
    return calls, None
