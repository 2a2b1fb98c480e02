"""Test reports: the outcome of grading a patch in a fresh sandbox."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class TestStatus(str, Enum):
    """Status of one test, with swebench's names."""

    __test__ = False  # not a pytest class

    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    XFAIL = "XFAIL"


class TestReport(BaseModel):
    """What grading found for one patch on one instance."""

    __test__ = False  # not a pytest class

    instance_id: str
    """Graded instance."""
    trajectory_id: str | None = None
    """Trajectory whose patch was graded (None for gold/empty checks)."""
    empty_patch: bool = False
    """The patch was empty."""
    patch_applied: bool = False
    """The patch applied cleanly to a fresh checkout."""
    resolved: bool = False
    """All FAIL_TO_PASS and PASS_TO_PASS tests pass (SWE-bench's FULL resolution)."""
    fail_to_pass_success: list[str] = Field(default_factory=list)
    """FAIL_TO_PASS tests that now pass."""
    fail_to_pass_failure: list[str] = Field(default_factory=list)
    """FAIL_TO_PASS tests that still fail (or did not run)."""
    pass_to_pass_success: list[str] = Field(default_factory=list)
    """PASS_TO_PASS tests that still pass."""
    pass_to_pass_failure: list[str] = Field(default_factory=list)
    """PASS_TO_PASS tests the patch broke (regressions)."""
    test_status: dict[str, TestStatus] = Field(default_factory=dict)
    """Every test the log parser found, with its status."""
    log_tail: str = ""
    """Last part of the evaluation log, for people."""
    error: str | None = None
    """What kept the tests from giving a clean verdict, if anything (the patch did not apply, the tests timed out or
    gave no results with it); then `resolved` is False. The patch's failure unless `infra_error` is set too."""
    infra_error: str | None = None
    """Set when the verdict cannot be trusted because the grading environment failed, not the patch: the same eval
    script fails the same way on the unpatched repository (e.g. its reinstall of the repository fails offline, or
    it gives no test results); such a report is an infrastructure error, not a plain unresolved."""
    tampering: list[str] = Field(default_factory=list)
    """How the patch changes how the tests run, one line each: files restored before the tests ran (conftest.py,
    pytest configuration or plugin entry points, distribution metadata, start-up files, modules shadowing
    installed ones, the runner script), changed code that reaches into the test machinery, and disagreements
    between the log and the grading witness. A tampered patch is never resolved."""
    checks: list[str] = Field(default_factory=list)
    """What the cross-check of the log against the grading witness noted without deciding the verdict (e.g. that
    it could not cross-check, or machinery changed by code the patch did not change)."""
    ignored_files: list[str] = Field(default_factory=list)
    """Test files the patch changed (new test files, files in the test patch's test directories); restored
    before the tests ran, without blame: tests the agent wrote do not grade it."""
    seconds: float = 0.0
    """Wall time of grading."""
