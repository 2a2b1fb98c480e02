"""Rewards: a total and the parts it is made of."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Reward(BaseModel):
    """A scalar reward with its parts, so a run can show why a trajectory scored what it did."""

    name: str
    """Which reward (`toolrl`, `swe`, `judge`, or `combined`)."""
    total: float
    """The scalar a trainer or search uses."""
    parts: dict[str, float] = Field(default_factory=dict)
    """Named components (for ToolRL: `format`, `correctness`)."""
    info: dict[str, Any] = Field(default_factory=dict)
    """Non-numeric detail, e.g. a judge's rationale."""
