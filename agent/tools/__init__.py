"""The agent's host-side tools. Each module defines `Tool`s; `TOOLS` maps names to them. A variant adds
sandbox-side tools of its own (`agent/tools/sandboxed.py`)."""

from __future__ import annotations

from agent.tools.base import Tool, ToolContext, ToolError, truncate_middle
from agent.tools.bash import BASH
from agent.tools.files import CREATE, STR_REPLACE, VIEW
from agent.tools.search import SEARCH
from agent.tools.submit import SUBMIT
from agent.tools.undo import UNDO

TOOLS: dict[str, Tool] = {t.name: t for t in (BASH, VIEW, STR_REPLACE, CREATE, SEARCH, UNDO, SUBMIT)}

__all__ = ["TOOLS", "Tool", "ToolContext", "ToolError", "truncate_middle"]
