"""A task instance in SWE-bench's own instance format, so swebench's functions accept it as is."""

from __future__ import annotations

from typing import Any

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TaskInstance(BaseModel):
    """One task: a repository at a commit, an issue to resolve, and the hidden tests that judge it.

    Field names follow SWE-bench (`FAIL_TO_PASS`, `PASS_TO_PASS`, ...), so `model_dump()` is a valid
    SWE-bench instance. Tool-calling tasks use `problem_statement` for the prompt and `extra` for the rest.
    """

    model_config = ConfigDict(extra="allow")

    instance_id: str
    """Unique id, e.g. `astropy__astropy-12907` or `bundled__ini-parser-1`."""
    suite: str = ""
    """Name of the suite the instance belongs to."""
    repo: str = ""
    """Repository name as SWE-bench spells it (`owner/name`)."""
    base_commit: str = ""
    """Commit the agent starts from; `/testbed` is checked out at it."""
    problem_statement: str = ""
    """The issue text shown to the agent."""
    hints_text: str = ""
    """Optional hints (SWE-bench's comments before the fix); never shown by default."""
    patch: str = ""
    """The gold patch (never shown to the agent)."""
    test_patch: str = ""
    """The hidden test patch applied only when grading."""
    FAIL_TO_PASS: list[str] = Field(default_factory=list)
    """Tests that fail before the fix and must pass after it."""
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    """Tests that pass before and must keep passing."""
    version: str = ""
    """SWE-bench's per-repository version key (selects the test command and log parser)."""
    environment_setup_commit: str = ""
    """SWE-bench's environment commit; unused by bundled suites."""
    image: str = ""
    """Docker image that holds the repository at `/testbed` ready to run its tests."""
    test_cmd: str = ""
    """Command that runs the instance's tests inside `/testbed` (bundled suites); SWE-bench derives its own."""
    extra: dict[str, Any] = Field(default_factory=dict)
    """Suite-specific data (e.g. the ground-truth answer of a tool-calling task)."""

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        """SWE-bench's datasets store the test lists as JSON strings."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value
