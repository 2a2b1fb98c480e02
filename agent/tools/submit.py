"""`submit`: end the episode; the patch is the repository's diff against its base commit."""

from __future__ import annotations

from agent.tools.base import Tool, ToolContext, params


def run_submit(ctx: ToolContext, args: dict) -> str:
    ctx.submitted = True
    return "submitted"


SUBMIT = Tool("submit", "Finish: submit the current changes as your fix.", params([]), run_submit)
