"""What an Agent-R search acts in: a `World` samples responses at a node and executes each from that node's state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from evolve.agent_r.node import Node
from records import Message, Trajectory


@dataclass
class Outcome:
    """One sampled response executed from its parent's state: a child of the tree."""

    response: Message
    """The assistant message as the policy sampled it."""
    observation: Message | None
    """What the environment answered (None when the response ended the episode without one)."""
    done: bool = False
    """The episode ended here (submit, goal, disaster)."""
    reward: float | None = None
    """Environment reward when the node is terminal (done, or at the depth limit), else None."""
    state: str = ""
    """Key of the environment state after this step (a diff, a position): replays are compared on it."""
    trajectory_id: str | None = None
    """A stored trajectory whose steps are the whole root-to-here path, when the world stores them."""
    label: str = ""
    """Short text for the tree view (the action)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (timings, errors)."""


@dataclass
class Replayed:
    """A response sequence executed from the start in a fresh environment."""

    trajectory: Trajectory
    """The episode as replayed (prompt, responses, the observations the environment really returned)."""
    state: str
    """Final state key (comparable with `Outcome.state`)."""
    reward: float
    """Reward of the final state, clamped to [0, 1] like the tree's rewards."""


class World(ABC):
    """One task's environment for the search. Subclasses: `toy.NumberLineWorld`, `swe.SweWorld`."""

    task: str = ""
    """The task as the verifier reads it."""
    policy_calls: int = 0
    """Responses sampled so far (the search's budget is counted in these)."""
    revisable_after_done: bool = True
    """Whether an episode can go on after a step that ended it (a toy's disaster can be undone; an agent's
    submit cannot), i.e. whether such a step may be the flagged step of a splice."""

    @abstractmethod
    def expand(self, path: list[Node], n: int, final: bool) -> list[Outcome]:
        """Sample `n` responses after the root-to-node `path` and execute each in its own branch of the node's
        state. `final`: the children are at the depth limit, so each must come back with a reward."""

    @abstractmethod
    def replay(self, responses: list[Message]) -> Replayed:
        """Execute `responses` from the task's start in a fresh environment, as the agent would at inference."""

    @abstractmethod
    def revision(self, thought: str, steps: int = 1) -> Message:
        """The revision turn: `thought`, then the `undo` action restoring the state before the last `steps` steps."""

    def revision_steps(self, to_parent: list[Message], continuation: list[Message]) -> tuple[int, int]:
        """How the revision turn of a splice returns to the state the good `continuation` acts from:
        (steps the revision's undo takes back, leading continuation responses it replaces). `to_parent` are
        the responses from the start to the splice's parent; the bad step follows them.

        Default (1, 0): undo the bad step, then the whole continuation. That replays wherever an undo leaves
        no record of itself, as the agent's `undo` tool does (after the revision turn the history is the
        parent's again, so a continuation's own undo acts as it did in the tree). A world whose undo IS a
        step a later undo takes back overrides this: there a continuation's leading undo would take back the
        revision turn itself, so it is folded into the revision turn's count."""
        return 1, 0

    def noop_revision(self, thought: str) -> Message:
        """Upstream's revision turn: the thought and an action that changes nothing (a control)."""
        return Message(role="assistant", content=thought)

    def prompt(self) -> list[Message]:
        """The messages before the first response (for the trajectories this world builds)."""
        return [Message(role="user", content=self.task)]
