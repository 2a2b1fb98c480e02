"""The small interface between the scheduler and a world: expand a node, evaluate a node on a task.

The same scheduler drives the real Docker world (`real.DockerWorld`) and simulated ones (`sim`), so the
simulations exercise the code that runs for real. Each result carries its `latency` in seconds: simulated
worlds make it up (the discrete-event driver advances a virtual clock by it); the real world measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

EVAL_STATUSES = ("pass", "fail", "infra_error", "timeout")


@dataclass(frozen=True)
class NodeView:
    """What a world is told about a node (a copy; the scheduler's state stays its own)."""

    id: str
    parent_id: str | None
    depth: int
    variant_dir: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    own: tuple[int, int] = (0, 0)
    """(successes, failures) over its own counted outcomes when the view was made."""


@dataclass
class Expansion:
    """The result of one self-modification attempt of a parent."""

    accepted: bool
    """True when the child passed validation and joins the tree."""
    variant_dir: str = ""
    """The child's variant directory (empty when nothing was produced)."""
    reason: str = ""
    """Why it was rejected (or a note when accepted)."""
    diff: str = ""
    """The child's change against its parent, always kept."""
    diagnosis: str = ""
    """The problem statement the edit worked from."""
    info: dict[str, Any] = field(default_factory=dict)
    """Anything else to keep on the node (validation logs, meta trajectory id, a simulated true skill)."""
    latency: float = 0.0
    """Seconds the attempt took (simulated or measured)."""
    tokens: int = 0
    """Policy tokens it used (for a run's token limit)."""


@dataclass
class Evaluation:
    """The result of one (node, task) episode."""

    status: str
    """`pass`, `fail`, `timeout` (the agent's own time ran out: a failure) or `infra_error` (not the agent's)."""
    trajectory_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    latency: float = 0.0
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.status not in EVAL_STATUSES:
            raise ValueError(f"evaluation status {self.status!r} is not one of {EVAL_STATUSES}")


class World(Protocol):
    """A world the HGM scheduler can search."""

    task_ids: list[str]
    """The tasks the search evaluates on, in a stable order."""

    def root(self) -> NodeView:
        """The initial agent: its variant directory and info (the scheduler names it `root`)."""
        ...

    def expand(self, parent: NodeView, child_id: str) -> Expansion:
        """Self-modify `parent` into a child called `child_id` and validate it."""
        ...

    def evaluate(self, node: NodeView, task_id: str) -> Evaluation:
        """Run `node`'s agent on `task_id` once and judge it."""
        ...
