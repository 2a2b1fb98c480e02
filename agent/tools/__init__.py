"""The agent's tools. Each module defines `Tool`s; `TOOLS` maps names to them."""

from __future__ import annotations

from agent.tools.base import Tool, ToolContext, ToolError, truncate_middle
from agent.tools.bash import BASH
from agent.tools.files import CREATE, STR_REPLACE, VIEW
from agent.tools.search import SEARCH
from agent.tools.submit import SUBMIT

TOOLS: dict[str, Tool] = {t.name: t for t in (BASH, VIEW, STR_REPLACE, CREATE, SEARCH, SUBMIT)}

__all__ = ["TOOLS", "Tool", "ToolContext", "ToolError", "truncate_middle"]
