"""A node of Agent-R's search tree: one step (the root is the task's start), with its MCTS counts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from records import Message


@dataclass
class Node:
    """One step of the tree (the root is the task's start)."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    parent: "Node | None" = None
    depth: int = 0
    response: Message | None = None
    observation: Message | None = None
    done: bool = False
    reward: float | None = None
    disaster: bool = False
    state: str = ""
    trajectory_id: str | None = None
    label: str = ""
    terminal: bool = False
    expanded: bool = False
    visits: int = 0
    value: float = 0.0
    children: list["Node"] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return self.value / self.visits if self.visits else 0.0

    @property
    def leaf(self) -> bool:
        """A scored end of a path (the episode ended or the depth limit)."""
        return self.reward is not None

    def path(self) -> list["Node"]:
        """Root to this node."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def walk(self) -> list["Node"]:
        out, stack = [], [self]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out
