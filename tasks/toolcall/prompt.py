"""The chat prompt of a tool-calling instance, in ToolRL's style: tools and output format, then the request."""

from __future__ import annotations

import json

from records import Message, TaskInstance

SYSTEM = """You are a helpful assistant that can call tools to solve the user's task.

Available tools (one JSON schema per line):
{tools}

Reply in exactly this format:
<think>your brief reasoning</think>
then either the tool calls, one JSON object per line:
<tool_call>
{{"name": "tool name", "parameters": {{"argument": value}}}}
</tool_call>
or, when no tool is needed, none fits, or a required argument is missing (then ask for it):
<response>your reply to the user</response>"""


def build_messages(instance: TaskInstance) -> list[Message]:
    """System message listing the instance's tools and the output format, then the user's request."""
    tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in instance.extra["tools"])
    return [Message(role="system", content=SYSTEM.format(tools=tools)),
            Message(role="user", content=instance.problem_statement)]
