"""Bundled tool-calling suite in ToolRL's format: tool schemas, a seeded generator, the checked-in data, the prompt."""

from tasks.toolcall.suite import ToolCallSuite

__all__ = ["ToolCallSuite"]
