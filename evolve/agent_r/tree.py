"""Agent-R's MCTS over agent steps, as the released code runs it (no rollout or value estimate):

- expand: an unexpanded node samples `n_gen` responses and executes each from its state (`World.expand`);
  every terminal child (episode done, or at the depth limit) backpropagates its reward clamped to [0, 1]
  (a negative reward is a "disaster" scored 0);
- select: unvisited non-terminal children first (random tie-break), else the highest
  UCT = value/visits + c * sqrt(ln(parent visits) / visits) among non-terminal children; none left ends the walk;
- a node is terminal when the environment ended there, at the depth limit, or when all its children are.

So a node's `visits` is the number of terminal leaves under it and its `value` their summed reward.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.node import Node
from evolve.agent_r.world import World
from records import TreeNode


def uct(child: Node, parent_visits: int, c: float) -> float:
    """value/visits + c * sqrt(ln(parent_visits)/visits); +inf for an unvisited child."""
    if child.visits == 0:
        return math.inf
    return child.value / child.visits + c * math.sqrt(math.log(max(parent_visits, 1)) / child.visits)


def select(node: Node, c: float, rng: random.Random) -> Node | None:
    """The child to walk to: never a terminal one; unvisited first (random tie-break); else the best UCT."""
    live = [ch for ch in node.children if not ch.terminal]
    if not live:
        return None
    scores = [uct(ch, node.visits, c) for ch in live]
    best = max(scores)
    return rng.choice([ch for ch, s in zip(live, scores) if s == best])


def backprop(node: Node, reward: float) -> None:
    while node is not None:
        node.visits += 1
        node.value += reward
        node = node.parent


def _mark_terminal_up(node: Node | None) -> None:
    while node is not None and node.expanded and node.children and all(ch.terminal for ch in node.children):
        if node.terminal:
            return
        node.terminal = True
        node = node.parent


@dataclass
class SearchStats:
    policy_calls: int = 0
    children: int = 0
    expansions: int = 0
    iterations: int = 0


def expand(node: Node, world: World, cfg: AgentRConfig, stats: SearchStats) -> None:
    final = node.depth + 1 >= cfg.max_depth
    before = world.policy_calls
    outcomes = world.expand(node.path(), cfg.n_gen, final)
    stats.policy_calls += world.policy_calls - before
    stats.expansions += 1
    node.expanded = True
    for o in outcomes:
        terminal = o.done or final
        if terminal and o.reward is None:
            raise ValueError(f"{type(world).__name__}.expand returned a terminal child without a reward")
        raw = o.reward
        child = Node(parent=node, depth=node.depth + 1, response=o.response, observation=o.observation,
                     done=o.done, state=o.state, trajectory_id=o.trajectory_id, label=o.label, terminal=terminal,
                     info=dict(o.info))
        if terminal:
            child.disaster = raw is not None and raw < 0
            child.reward = min(max(float(raw), 0.0), 1.0)
        node.children.append(child)
        stats.children += 1
        if terminal:
            backprop(child, child.reward)
    if not outcomes:  # nothing could be sampled: a dead end scored 0
        node.terminal = True
    _mark_terminal_up(node)


def search(world: World, cfg: AgentRConfig, rng: random.Random | None = None,
           on_change: Callable[[Node], None] = lambda node: None, root: Node | None = None) -> tuple[Node, SearchStats]:
    """`cfg.rollouts` MCTS iterations from the task's start; returns the root and the counts.
    `on_change(node)` is called after each expansion (the caller stores the tree as it grows)."""
    rng = rng or random.Random(cfg.seed)
    root = root or Node(label="start")
    stats = SearchStats()
    for _ in range(cfg.rollouts):
        if root.terminal:
            break
        stats.iterations += 1
        node = root
        while True:
            if not node.expanded:
                expand(node, world, cfg, stats)
                on_change(node)
            child = select(node, cfg.c, rng)
            if child is None:
                break
            node = child
    return root, stats


def leaves(root: Node) -> list[Node]:
    """Scored leaves (terminal ends of root-to-leaf paths), in tree order."""
    return [n for n in root.walk() if n.leaf]


def tree_nodes(root: Node, tree_id: str) -> list[TreeNode]:
    """The tree as stored records (`kind="mcts"`, successes = summed value, trials = visits)."""
    out = []
    for n in root.walk():
        status = "terminal" if n.terminal else ("expanded" if n.expanded else "open")
        info = {"depth": n.depth, "value": n.value, "mean": n.mean, "reward": n.reward, "done": n.done,
                "disaster": n.disaster, "state": n.state[:2000], **n.info}
        if n.response is not None:
            info["response"] = n.response.content[:4000]
        if n.observation is not None:
            info["observation"] = n.observation.content[:4000]
        out.append(TreeNode(id=n.id, parent_id=n.parent.id if n.parent else None, tree_id=tree_id, kind="mcts",
                            label=n.label[:200], status=status, successes=round(n.value), trials=n.visits,
                            trajectory_id=n.trajectory_id, info=info))
    return out
