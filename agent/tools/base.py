"""What a tool is: a name, a JSON-schema of its parameters, and a function of the sandbox."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from sandbox import Sandbox


class ToolError(Exception):
    """Bad arguments or a failed action; its message is shown to the agent as the observation."""


@dataclass
class ToolContext:
    """What tools act on during one episode."""

    sandbox: Sandbox
    command_timeout: float = 120.0
    state: dict[str, Any] = field(default_factory=dict)
    """Per-episode tool state (e.g. the code index)."""
    submitted: bool = False


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments (an object)."""
    run: Callable[[ToolContext, dict[str, Any]], str]

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function schema."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def describe(self) -> str:
        """One block of the system prompt."""
        return f"- {self.name}: {self.description}\n  parameters: {json.dumps(self.parameters['properties'])}"

    def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        missing = [k for k in self.parameters.get("required", []) if k not in args]
        if missing:
            raise ToolError(f"{self.name} needs the parameter(s) {', '.join(missing)}")
        unknown = sorted(set(args) - set(self.parameters["properties"]))
        if unknown:
            raise ToolError(f"{self.name} has no parameter(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(self.parameters['properties'])}")
        return self.run(ctx, args)


def truncate_middle(text: str, limit: int) -> str:
    """Head and tail of `text` within `limit` characters, with a notice of what was cut."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut: narrow the command (grep, head, line ranges) ...]\n{text[-half:]}"


def params(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}
