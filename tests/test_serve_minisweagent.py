"""mini-swe-agent (its litellm tool-calling model, unchanged) runs a short scripted episode against `evolve serve`.

First against a policy that replays the script, which records the exact conversations mini-swe-agent sends;
then a tiny model (`tiny_model.py`) is fine-tuned on those conversations until greedy decoding emits the
script's tool calls, and the same episode runs against that real model served by the transformers engine: the
calls come back as `message.tool_calls` (the agent's parser), the commands run, the task is submitted."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from agent.policy import load_policy
from agent.policy.base import Generation, Policy, SamplingParams
from agent.policy.serve import serve_in_thread
from records.trajectory import Message
from tests.scripted_model import train_to_say

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its price list
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
minisweagent = pytest.importorskip("minisweagent", reason="pip install evolve[test] (mini-swe-agent)")
torch.set_num_threads(1)

SCRIPT = [
    '<tool_call>\n{"name": "bash", "arguments": {"command": "echo hi > hello.txt"}}\n</tool_call>',
    '<tool_call>\n{"name": "bash", "arguments": {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && cat hello.txt"}}\n</tool_call>',
]
AGENT = {"system_template": "You run bash commands with the bash tool.", "instance_template": "Task: {{task}}",
         "step_limit": 4, "cost_limit": 0}


class Replay(Policy):
    """Answers turn k of a conversation with SCRIPT[k]; records the conversations and tools it was given."""

    spec = "replay-script"

    def __init__(self) -> None:
        self.seen: list[tuple[list[Message], list | None]] = []
        self.lock = threading.Lock()

    @property
    def context_length(self) -> int:
        return 2048

    def count_tokens(self, messages: list[Message]) -> int:
        return 1

    def generate(self, conversations, params: SamplingParams, tools=None) -> list[Generation]:
        out = []
        for c in conversations:
            with self.lock:
                self.seen.append((c, tools))
            turn = sum(m.role == "assistant" for m in c)
            out.append(Generation(text=SCRIPT[min(turn, len(SCRIPT) - 1)], finish_reason="stop"))
        return out


def run_episode(url: str, workdir: Path) -> dict:
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.environments.local import LocalEnvironment
    from minisweagent.models.litellm_model import LitellmModel

    model = LitellmModel(model_name="openai/served", cost_tracking="ignore_errors",
                         model_kwargs={"api_base": url, "api_key": "unused", "temperature": 0.0, "max_tokens": 256})
    agent = DefaultAgent(model, LocalEnvironment(cwd=str(workdir)), **AGENT)
    result = agent.run("write hi to hello.txt, then submit it")
    return {"result": result, "messages": agent.messages}


def test_minisweagent_episode_against_a_served_model_that_emits_tool_calls(tmp_path, tmp_path_factory):
    replay = Replay()
    server = serve_in_thread(replay, port=0, model_name="served")
    try:
        (tmp_path / "w1").mkdir()
        first = run_episode(server.url, tmp_path / "w1")
    finally:
        server.stop()
    assert first["result"]["exit_status"] == "Submitted" and first["result"]["submission"] == "hi\n"
    assert len(replay.seen) == 2 and replay.seen[0][1][0]["function"]["name"] == "bash"

    path = train_to_say(tmp_path_factory.getbasetemp() / "scripted-mini", [(c, t, s) for (c, t), s in zip(replay.seen, SCRIPT)])
    policy = load_policy(f"hf:{path}", device="cpu")
    server = serve_in_thread(policy, port=0, model_name="served")
    try:
        (tmp_path / "w2").mkdir()
        second = run_episode(server.url, tmp_path / "w2")
    finally:
        server.stop()
    assert second["result"]["exit_status"] == "Submitted" and second["result"]["submission"] == "hi\n"
    assert (tmp_path / "w2" / "hello.txt").read_text() == "hi\n"
    calls = [m for m in second["messages"] if m.get("role") == "assistant"]
    assert len(calls) == 2 and all(m["tool_calls"][0]["function"]["name"] == "bash" for m in calls)
    assert [m["extra"]["response"]["choices"][0]["finish_reason"] for m in calls] == ["tool_calls", "tool_calls"]
