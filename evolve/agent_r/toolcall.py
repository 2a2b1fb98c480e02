"""The tool-calling world: one ToolRL task, where an episode is a sequence of answers and only the last counts.

A node's child is one sampled answer (terminal at once), rewarded with ToolRL's reward rescaled from [-3, 4] to
[0, 1] (1 = right format and exact calls). The revision turn calls `undo`, which withdraws the last answer, so a
spliced sample reads: a bad answer (no loss), "that was wrong, undo" (loss), a good answer (loss); replaying it
scores its last answer. Trees are one level deep, so a failed path's first error is its only step and no verifier
call is needed for it (`build_instance` skips the verifier on one-step paths).
"""

from __future__ import annotations

import json
from typing import Callable

from agent.policy.base import Policy, SamplingParams
from evolve.agent_r.node import Node
from evolve.agent_r.world import Outcome, Replayed, World
from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from rewards.toolrl import CORRECTNESS_BOUNDS, FORMAT_BOUNDS, score

RECORDED = "<tool_response>\nanswer recorded\n</tool_response>"
WITHDRAWN = "<tool_response>\nthe previous answer was withdrawn\n</tool_response>"
LOW, HIGH = FORMAT_BOUNDS[0] + CORRECTNESS_BOUNDS[0], FORMAT_BOUNDS[1] + CORRECTNESS_BOUNDS[1]


def unit_reward(response: str, answer: str) -> float:
    """ToolRL's total rescaled to [0, 1]."""
    return (score(response, answer).total - LOW) / (HIGH - LOW)


def _is_undo(text: str) -> bool:
    return '"name": "undo"' in text and "<tool_call>" in text


class ToolcallWorld(World):
    def __init__(self, instance: TaskInstance, policy: Policy, prompt: Callable[[TaskInstance], list[Message]], *,
                 temperature: float = 1.0, max_tokens: int = 256, seed: int = 0, store=None, run_id: str = ""):
        self.instance, self.policy, self.prompt_fn = instance, policy, prompt
        self.store, self.run_id = store, run_id
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.task = instance.problem_statement
        self.answer = instance.extra["answer"]
        self.policy_calls = 0

    def prompt(self) -> list[Message]:
        return self.prompt_fn(self.instance)

    def expand(self, path: list[Node], n: int, final: bool) -> list[Outcome]:
        messages = self.prompt()
        for node in path[1:]:
            messages += [node.response, node.observation]
        params = SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature,
                                seed=self.seed + self.policy_calls)
        gens = self.policy.generate([messages] * n, params)
        self.policy_calls += n
        return [Outcome(g.message(), Message(role="user", content=RECORDED), done=True,
                        reward=unit_reward(g.text, self.answer), state=g.text.strip(), label=g.text[:60])
                for g in gens]

    def replay(self, responses: list[Message]) -> Replayed:
        traj = Trajectory(instance_id=self.instance.instance_id, prompt=self.prompt(), policy=self.policy.spec,
                          status=TrajectoryStatus.submitted)
        answers: list[str] = []
        for i, r in enumerate(responses):
            if _is_undo(r.content):
                if answers:
                    answers.pop()
                obs = WITHDRAWN
            else:
                answers.append(r.content.strip())
                obs = RECORDED
            traj.steps.append(Step(index=i, response=r, observation=Message(role="user", content=obs)))
        last = answers[-1] if answers else ""
        traj.answer = last
        return Replayed(traj, last, unit_reward(last, self.answer) if last else 0.0)

    def revision(self, thought: str, steps: int = 1) -> Message:
        call = json.dumps({"name": "undo", "parameters": {"steps": steps}})
        return Message(role="assistant", content=f"<think>{thought}</think>\n<tool_call>\n{call}\n</tool_call>")

    def path_trajectory(self, node: Node) -> Trajectory:
        """A good root-to-leaf path as a trajectory (every turn learned), stored when the world has a store so a
        resumed run reloads it by id (`origin="agent-r:good"`)."""
        steps = node.path()[1:]
        traj = Trajectory(run_id=self.run_id, instance_id=self.instance.instance_id, prompt=self.prompt(),
                          policy=self.policy.spec, status=TrajectoryStatus.submitted, origin="agent-r:good",
                          answer=steps[-1].response.content.strip() if steps else "",
                          steps=[Step(index=i, response=n.response.model_copy(), observation=n.observation)
                                 for i, n in enumerate(steps)])
        if self.store is not None:
            self.store.put_trajectory(traj)
            self.store.put_reward(traj.id, score(traj.answer, self.answer).to_reward())
        return traj
