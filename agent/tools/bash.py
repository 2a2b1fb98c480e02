"""`bash`: a persistent shell in the sandbox (`cd` and `export` carry over between calls)."""

from __future__ import annotations

from agent.tools.base import Tool, ToolContext, params

SESSION = "agent"


def run_bash(ctx: ToolContext, args: dict) -> str:
    r = ctx.sandbox.exec(str(args["command"]), timeout=ctx.command_timeout, session=SESSION)
    out = r.output
    if r.timed_out:
        out += f"\n[command timed out after {ctx.command_timeout:.0f} s and was killed]"
    elif r.exit_code != 0:
        out += f"\n[exit code {r.exit_code}]"
    return out or "[no output]"


BASH = Tool("bash", "Run a bash command in the repository (state like cd/export persists).",
            params(["command"], command={"type": "string", "description": "the command"}), run_bash)
