"""Agent-R's tool-calling world with scripted answers (no model): one-level trees scored by ToolRL, a splice
whose `undo` withdraws the bad answer, replay scoring the last answer. The measured iteration with a tiny model
(held-out reward before and after) is `bench/bench_agent_r_toolcall.py`."""

from __future__ import annotations

import random

from evolve.agent_r.build import build_instance
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.toolcall import ToolcallWorld, unit_reward


def test_toolcall_world_splices_withdraw_the_bad_answer():
    """Scripted answers, no model: a one-level tree, a splice without a verifier call, a replay that scores the
    last answer (the undo withdraws the bad one), and the flags bad=no loss, revision and good=loss."""
    from agent.replay import ScriptedPolicy
    from records import Message, TaskInstance

    answer = '<think>x</think>\n<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n</tool_call>'
    wrong = '<think>x</think>\n<tool_call>\n{"name": "get_news", "parameters": {"topic": "sport"}}\n</tool_call>'

    class Two(ScriptedPolicy):
        def generate(self, conversations, params, tools=None):
            from agent.policy.base import Generation
            return [Generation(text=[answer, wrong][i % 2]) for i in range(len(conversations))]

    inst = TaskInstance(instance_id="t1", problem_statement="Weather in Paris?", extra={"answer": answer})
    asked = []
    world = ToolcallWorld(inst, Two([]), lambda i: [Message(role="user", content=i.problem_statement)])
    res = build_instance(world, AgentRConfig(rollouts=3, n_gen=2, max_depth=1, alpha=0.5, beta=0.2),
                         lambda m, k: asked.append(m) or ["Judgment: Good"], instance_id="t1", rng=random.Random(0))
    assert world.policy_calls == 2 and res.root.terminal and not asked
    assert unit_reward(answer, answer) == 1.0 and unit_reward(wrong, answer) < 1.0
    assert len(res.splices) == 1 and len(res.good) == 1
    traj = res.splices[0]
    assert [s.response.content for s in traj.steps][::2] == [wrong, answer]
    assert [s.response.train for s in traj.steps] == [False, True, True]
    assert "withdrawn" in traj.steps[1].observation.content
    assert world.replay([traj.steps[0].response, traj.steps[2].response]).state == answer.strip()
    assert world.replay([traj.steps[2].response, traj.steps[0].response]).reward < 1.0  # order matters: the last counts
