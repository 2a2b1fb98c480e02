"""The bundled tool-calling suite: instances in ToolRL's format, loaded from the checked-in JSONL."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from records import TaskInstance
from tasks.suite import Suite, SuiteUnavailable

DATA_FILE = Path(__file__).parent / "data" / "instances.jsonl"
"""The checked-in instances, written by `python -m tasks.toolcall.generate`."""
SPLITS = ("train", "test")


@lru_cache(maxsize=1)
def load() -> tuple[TaskInstance, ...]:
    """Every instance of the data file, read once per process."""
    if not DATA_FILE.exists():
        raise SuiteUnavailable(f"{DATA_FILE} is missing; run `python -m tasks.toolcall.generate` to write it")
    with DATA_FILE.open(encoding="utf-8") as f:
        return tuple(TaskInstance.model_validate(json.loads(line)) for line in f if line.strip())


class ToolCallSuite(Suite):
    """Single, multiple, nested and no-call tool-use requests over 33 tools, graded by ToolRL's reward."""

    name = "toolcall"
    kind = "toolcall"
    description = "Bundled tool-calling tasks in ToolRL's format (think, then tool calls or a response)."

    def instances(self, split: str | None = None) -> list[TaskInstance]:
        """All instances, or those of `split` (`train` or `test`)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for suite 'toolcall'; valid splits: {', '.join(SPLITS)}")
        return [i.model_copy(deep=True) for i in load() if split is None or i.extra["split"] == split]
