"""The number-line world of the acceptance checks: reach exactly N from 0 with `+1`, `+2`, `back` (take back the
last move) and `undo` (restore the state before the last step, like the agent's undo tool); overshooting is a
disaster (reward -1, clamped to 0, terminal in the tree but undoable in an episode); reward 1 at the goal.

The policy is tabular: action preferences per state, where the state is the distance to the goal read from the
latest observation the conversation shows (the prompt shows position 0). "Fine-tuning" adds the learned turns'
(state, action) counts. The oracle verifier flags the first step after which the goal cannot be reached within
the remaining depth; it answers through the same prompt and strict parser as a model would.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from evolve.agent_r.build import build_instance, logged_splice
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.node import Node
from evolve.agent_r.world import Outcome, Replayed, World
from records import Message, Step, Trajectory, TrajectoryStatus

ACTIONS = ("+1", "+2", "back", "undo")
POSITION = re.compile(r"position (-?\d+)")


@dataclass
class Line:
    """The environment: a position, the moves that can be taken back, and the state before each step."""

    goal: int
    pos: int = 0
    moves: list[int] = field(default_factory=list)
    before: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)

    def step(self, action: str) -> str:
        self.before.append((self.pos, tuple(self.moves)))
        if action in ("+1", "+2"):
            self.moves.append(int(action))
            self.pos += int(action)
        elif action == "back":
            if self.moves:
                self.pos -= self.moves.pop()
        elif action.startswith("undo"):
            k = undo_count(action) or 1
            mine = self.before.pop()  # the undo is a step too: a later undo can take it back
            for _ in range(min(k, len(self.before))):
                self.pos, moves = self.before.pop()
                self.moves = list(moves)
            self.before.append(mine)
        # anything else ("wait", unparseable) changes nothing
        return f"position {self.pos}"

    @property
    def reward(self) -> float:
        return 1.0 if self.pos == self.goal else (-1.0 if self.pos > self.goal else 0.0)


def undo_count(action: str) -> int | None:
    """k for `undo` / `undo k` (as `Line.step` reads it), None for any other action."""
    parts = action.split()
    if not parts or not parts[0].startswith("undo"):
        return None
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1


def action_of(text: str) -> str:
    """The action a response names: its last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def task_text(goal: int, max_depth: int) -> str:
    return (f"Reach exactly {goal} on the number line, starting at position 0, in at most {max_depth} steps. "
            f"Actions: {', '.join(ACTIONS)}.")


class TabularPolicy:
    """Action preferences per distance-to-goal; sampling is proportional to them."""

    def __init__(self, prior: float = 1.0):
        self.prior = prior
        self.counts: dict[int, dict[str, float]] = {}

    def probs(self, dist: int) -> dict[str, float]:
        c = self.counts.get(dist, {})
        w = {a: self.prior + c.get(a, 0.0) for a in ACTIONS}
        z = sum(w.values())
        return {a: v / z for a, v in w.items()}

    def sample(self, dist: int, rng: random.Random) -> str:
        p = self.probs(dist)
        return rng.choices(list(p), weights=list(p.values()))[0]

    def learn(self, trajectories: list[Trajectory], goal_of: dict[str, int], weight: float = 1.0) -> int:
        """Add (state, action) counts of every learned turn; the state is the latest position shown before
        the turn. Returns the number of turns learned."""
        n = 0
        for traj in trajectories:
            goal, pos = goal_of[traj.instance_id], 0
            for step in traj.steps:
                if step.response.train:
                    act = action_of(step.response.content)
                    act = "undo" if act.startswith("undo") else act
                    if act in ACTIONS:
                        d = self.counts.setdefault(goal - pos, {})
                        d[act] = d.get(act, 0.0) + weight
                        n += 1
                if step.observation is not None and (m := POSITION.search(step.observation.content)):
                    pos = int(m.group(1))
        return n


class NumberLineWorld(World):
    """One number-line task for the search; the tabular policy samples, `Line` executes."""

    def __init__(self, goal: int, policy: TabularPolicy, rng: random.Random, max_depth: int):
        self.goal, self.policy, self.rng, self.max_depth = goal, policy, rng, max_depth
        self.task = task_text(goal, max_depth)
        self.policy_calls = 0

    def _run(self, actions: list[str]) -> Line:
        line = Line(self.goal)
        for a in actions:
            line.step(a)
        return line

    def expand(self, path: list[Node], n: int, final: bool) -> list[Outcome]:
        actions = [action_of(p.response.content) for p in path[1:] if p.response is not None]
        out = []
        for _ in range(n):
            self.policy_calls += 1
            line = self._run(actions)
            act = self.policy.sample(self.goal - line.pos, self.rng)
            obs = line.step(act)
            done = line.pos >= self.goal
            reward = line.reward if (done or final) else None
            out.append(Outcome(Message(role="assistant", content=act), Message(role="user", content=obs),
                               done=done, reward=reward, state=str(line.pos), label=act))
        return out

    def replay(self, responses: list[Message]) -> Replayed:
        line = Line(self.goal)
        traj = Trajectory(instance_id=f"line-{self.goal}", prompt=self.prompt(), status=TrajectoryStatus.submitted)
        for i, r in enumerate(responses):
            obs = line.step(action_of(r.content))
            traj.steps.append(Step(index=i, response=r, observation=Message(role="user", content=obs)))
        return Replayed(traj, str(line.pos), max(line.reward, 0.0))

    def revision(self, thought: str, steps: int = 1) -> Message:
        return Message(role="assistant", content=f"{thought}\nundo {steps}")

    def noop_revision(self, thought: str) -> Message:
        return Message(role="assistant", content=f"{thought}\nwait")

    def revision_steps(self, to_parent: list[Message], continuation: list[Message]) -> tuple[int, int]:
        """Here an undo is itself a step (a later undo takes it back), so a continuation that starts with undos
        would take back the revision turn. They are folded into it: the revision's undo goes straight to the
        state they reach (found among the states before the parent's steps, the parent's own, by simulation),
        and the continuation resumes after them. (1, 0) when it starts with no undo."""
        actions = [action_of(m.content) for m in to_parent]
        lead = 0
        while lead < len(continuation) and undo_count(action_of(continuation[lead].content)) is not None:
            lead += 1
        if not lead:
            return 1, 0
        target = self._run(actions + [action_of(m.content) for m in continuation[:lead]])
        line = Line(self.goal)
        states = [(line.pos, tuple(line.moves))]
        for a in actions:
            line.step(a)
            states.append((line.pos, tuple(line.moves)))
        want = (target.pos, tuple(target.moves))
        # states[j] is the state after j of the parent's steps; the bad step makes one more, so undoing
        # 1 + (len(actions) - j) steps after it restores states[j] (the latest match: the fewest steps undone)
        j = next((j for j in range(len(states) - 1, -1, -1) if states[j] == want), None)
        return (1, 0) if j is None else (1 + len(actions) - j, lead)

    def prompt(self) -> list[Message]:
        return [Message(role="user", content=f"{self.task}\nposition 0")]


def reachable(goal: int, pos: int, steps_left: int) -> bool:
    """The goal can still be reached with +1/+2 moves within `steps_left` steps."""
    return pos == goal or (pos < goal and math.ceil((goal - pos) / 2) <= steps_left)


def true_first_error(path: list[Node], goal: int, max_depth: int) -> int | None:
    """1-based index of the first step after which the goal is unreachable (None if never)."""
    for n in path[1:]:
        if not reachable(goal, int(n.state), max_depth - n.depth):
            return n.depth
    return None


_TASK = re.compile(r"Reach exactly (\d+) .* in at most (\d+) steps")


def oracle_ask(noise: float = 0.0, rng: random.Random | None = None):
    """An exact verifier for the number line, reading only the verifier prompt (optionally with flipped verdicts)."""
    rng = rng or random.Random(0)

    def ask(messages: list[Message], k: int) -> list[str]:
        text = messages[-1].content
        goal, max_depth = map(int, _TASK.search(text).groups())  # type: ignore[union-attr]
        current = text.split("Current step (step ", 1)[1]
        step = int(current.split(")", 1)[0])
        pos = int(POSITION.search(current).group(1))  # type: ignore[union-attr]
        bad = not reachable(goal, pos, max_depth - step)
        if noise and rng.random() < noise:
            bad = not bad
        verdict = "Bad" if bad else "Good"
        return [f"The goal is {goal}; after this step the position is {pos}.\nJudgment: {verdict}"] * k
    return ask


def recovery_rate(policy: TabularPolicy, goal: int, budget: int = 4) -> float:
    """Exact probability that the policy reaches the goal within `budget` steps after an injected bad first
    action (`+2` from goal-1: an overshoot). Enumerates every action sequence."""
    def go(line: Line, left: int) -> float:
        if line.pos == goal:
            return 1.0
        if left == 0:
            return 0.0
        total = 0.0
        for act, p in policy.probs(goal - line.pos).items():
            nxt = Line(goal, line.pos, list(line.moves), list(line.before))
            nxt.step(act)
            total += p * go(nxt, left - 1)
        return total
    start = Line(goal, goal - 1)
    start.step("+2")
    return go(start, budget)


def toy_iterations(seed: int, mode: str = "parent", iterations: int = 3, goals: tuple[int, ...] = (3, 4, 5),
                   rollouts: int = 8, n_gen: int = 4, max_depth: int = 4) -> list[float]:
    """Agent-R's loop in the number-line world: per iteration, search every goal with the current tabular policy,
    build revision + good data, "fine-tune" (add counts), and measure the mean recovery rate. `mode="parent"`
    keeps replay-checked splices; the controls (`direct`, `divergence`) keep upstream's logged samples, unchecked.
    Returns the recovery rate before training and after each iteration."""
    cfg = AgentRConfig(rollouts=rollouts, n_gen=n_gen, max_depth=max_depth, splice=mode)  # type: ignore[arg-type]
    policy, rng = TabularPolicy(), random.Random(seed)
    goal_of = {f"line-{g}": g for g in goals}
    rates = [sum(recovery_rate(policy, g) for g in goals) / len(goals)]
    for _ in range(iterations):
        data: list[Trajectory] = []
        for g in goals:
            world = NumberLineWorld(g, policy, rng, max_depth)
            res = build_instance(world, cfg, oracle_ask(), instance_id=f"line-{g}", rng=rng)
            data += res.splices if mode == "parent" else [logged_splice(p, world, f"line-{g}") for p in res.plans]
            data += res.good
        policy.learn(data, goal_of)
        rates.append(sum(recovery_rate(policy, g) for g in goals) / len(goals))
    return rates
