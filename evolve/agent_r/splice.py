"""Revision trajectories: where the revision goes and which continuation follows it.

`parent` (default, what the paper describes): the low path up to and including the flagged step (no loss),
a revision turn whose action is a real `undo` of that one step, so the environment is back at the flagged
step's PARENT (loss), then a good continuation chosen among the descendants of that parent node (loss).
Every step of it was executed from the state it is shown in, so the sample replays.

Controls, as upstream builds them: `divergence` (the code: a revision turn that does nothing, then the high path
from the first step where it differs from the bad prefix) and `direct` (Direct-Revision: the whole low path,
the revision turn, the whole high path from the start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evolve.agent_r.node import Node
from evolve.agent_r.tree import leaves
from evolve.agent_r.world import World
from records import Message

THOUGHTS = [
    "That last step took me away from the goal. I will undo it and try a different approach.",
    "Looking at the result, my previous action was a mistake. Let me revert it and go another way.",
    "This is not working: the last action made things worse. Undoing it before I continue.",
    "I went down the wrong path with that step. I should restore the previous state and rethink.",
    "The outcome shows my last move was wrong. I'll roll it back and choose a better action.",
    "Wait, that step does not help solve the task. Reverting it first.",
    "My previous action introduced a problem. Let me undo it and take a more careful step.",
    "On reflection the last step was an error; I will go back to where I was and try something else.",
    "That change breaks the plan. Undo it, then continue from the earlier state.",
    "I made a wrong turn in the last step. Restoring the previous state so I can correct course.",
    "The last action was a misstep. Let me take it back and proceed differently.",
    "Hmm, this result means my last step was wrong. I'll revert it and pick another action.",
]
"""Revision thoughts (all of them are used, in turn; upstream drew from only half of its list)."""


@dataclass
class SplicePlan:
    """The responses of one revision trajectory and which of them are learned."""

    responses: list[Message]
    """Assistant turns in order, `train` set on each."""
    bad_steps: int
    """Turns of the bad prefix (learned from: none)."""
    good: Node
    """The leaf the continuation ends at (its state and reward are what the replay must reach)."""
    low: Node
    parent: Node
    """The node the revision returns to."""
    mode: str = "parent"
    info: dict = field(default_factory=dict)


def _responses(nodes: list[Node], train: bool) -> list[Message]:
    return [n.response.model_copy(update={"train": train}) for n in nodes if n.response is not None]


def _messages(nodes: list[Node]) -> list[Message]:
    return [n.response for n in nodes if n.response is not None]


def _under(node: Node, ancestor: Node) -> bool:
    return ancestor in node.path()


def good_continuation(parent: Node, bad: Node, high: Node, alpha: float) -> Node | None:
    """The pair's high leaf when it descends from `parent` (not through `bad`); else the best leaf under
    `parent` and not under `bad` with value > alpha (ties: the shortest path); None when there is none."""
    if _under(high, parent) and not _under(high, bad) and high.mean > alpha:
        return high
    cands = [n for n in leaves(parent) if not _under(n, bad) and n.mean > alpha]
    if not cands:
        return None
    return max(cands, key=lambda n: (n.mean, -n.depth))


def plan_splice(world: World, low: Node, high: Node, flagged: int, alpha: float, mode: str = "parent",
                thought_index: int = 0) -> tuple[SplicePlan | None, str]:
    """The plan for one pair whose low path's first bad step is `flagged` (1-based), or (None, reason)."""
    thought = THOUGHTS[thought_index % len(THOUGHTS)]
    low_path = low.path()[1:]  # without the root
    if mode == "parent":
        bad = low_path[flagged - 1]
        if bad.done and not world.revisable_after_done:
            return None, "the flagged step ended the episode (nothing can follow it)"
        parent = bad.parent
        assert parent is not None
        good = good_continuation(parent, bad, high, alpha)
        if good is None:
            return None, "no good continuation from the flagged step's parent"
        prefix = low_path[:flagged]
        cont = good.path()[parent.depth + 1:]
        # where an undo is itself a step, the continuation's leading undos would take back the revision turn:
        # the world folds them into the revision's own undo (see `World.revision_steps`)
        steps, folded = world.revision_steps(_messages(parent.path()[1:]), _messages(cont))
        cont = cont[folded:]
        revision = world.revision(thought, steps).model_copy(update={"train": True})
        responses = _responses(prefix, False) + [revision] + _responses(cont, True)
        return SplicePlan(responses, len(prefix), good, low, parent, mode,
                          {"flagged": flagged, "thought": thought, "continuation_steps": len(cont),
                           "good_is_pair_high": good is high, "revision_steps": steps,
                           "folded_undos": folded}), ""
    high_path = high.path()[1:]
    if mode == "divergence":
        prefix = low_path[:flagged]
        split = 0
        while split < min(len(prefix), len(high_path)) and prefix[split] is high_path[split]:
            split += 1
        responses = _responses(prefix, False) + [world.noop_revision(thought).model_copy(update={"train": True})] \
            + _responses(high_path[split:], True)
        return SplicePlan(responses, len(prefix), high, low, high_path[split - 1] if split else high.path()[0],
                          mode, {"flagged": flagged, "thought": thought}), ""
    if mode == "direct":
        responses = _responses(low_path, False) + [world.revision(thought, 1).model_copy(update={"train": True})] \
            + _responses(high_path, True)
        return SplicePlan(responses, len(low_path), high, low, high.path()[0], mode,
                          {"flagged": flagged, "thought": thought}), ""
    raise ValueError(f"unknown splice mode {mode!r}")
