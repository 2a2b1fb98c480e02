"""Policies that repeat recorded responses.

`ScriptedPolicy` drives the real agent loop with a fixed list of responses (harness benchmarks, tests).
`ReplayPolicy` (`--policy replay:FILE`) repeats stored trajectories: each conversation gets the responses
of the trajectory whose prompt it starts with (a file with one trajectory replays on any prompt, e.g. on a
new agent variant), with their recorded tokens and log-probs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams
from records import Message, Trajectory

SUBMIT = '<think>Done.</think>\n<tool_call>\n{"name": "submit", "parameters": {}}\n</tool_call>'


class ScriptedPolicy(Policy):
    """Answers the n-th assistant turn of a conversation with `responses[n]`; submits after the last."""

    def __init__(self, responses: list[str | Message], context_length: int = 1_000_000):
        self.responses = [r if isinstance(r, Message) else Message(role="assistant", content=r) for r in responses]
        self.spec = "replay"
        self._context_length = context_length

    @property
    def context_length(self) -> int:
        return self._context_length

    def responses_for(self, conversation: list[Message]) -> list[Message]:
        """The recorded responses that answer this conversation."""
        return self.responses

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        out = []
        for conv in conversations:
            responses = self.responses_for(conv)
            n = sum(m.role == "assistant" for m in conv)
            r = responses[n] if n < len(responses) else Message(role="assistant", content=SUBMIT)
            out.append(Generation(text=r.content, token_ids=r.token_ids, logprobs=r.logprobs,
                                  tool_calls=list(r.tool_calls), prompt_tokens=self.count_tokens(conv),
                                  completion_tokens=len(r.token_ids) if r.token_ids else len(r.content) // 4))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


def _prompt_key(messages: list[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((m.role, m.content) for m in messages)


class ReplayPolicy(ScriptedPolicy):
    """Repeats stored trajectories' responses; a conversation is matched to the trajectory whose prompt it
    starts with (the latest one when several share a prompt)."""

    def __init__(self, trajectories: list[Trajectory], source: str = "", context_length: int = 1_000_000):
        if not trajectories:
            raise PolicyError(f"replay: {source or 'the input'} holds no trajectories")
        super().__init__([], context_length)
        self.source = source
        self.trajectories = trajectories
        self.by_prompt = {_prompt_key(t.prompt): t for t in trajectories}
        self.prompt_lengths = sorted({len(t.prompt) for t in trajectories}, reverse=True)

    @classmethod
    def from_file(cls, path: str | Path, **options: Any) -> "ReplayPolicy":
        """Trajectories from a JSON file (one trajectory or a list) or a JSONL file (one per line), as
        `evolve trajectories RUN_DIR --export FILE` writes them."""
        return cls(load_trajectories(path), source=str(path), **options)

    def responses_for(self, conversation: list[Message]) -> list[Message]:
        for n in self.prompt_lengths:
            traj = self.by_prompt.get(_prompt_key(conversation[:n]))
            if traj is not None:
                return [s.response for s in traj.steps]
        if len(self.trajectories) == 1:
            return [s.response for s in self.trajectories[0].steps]
        ids = ", ".join(t.instance_id for t in self.trajectories[:5])
        raise PolicyError(f"replay: no trajectory in {self.source or 'the input'} was recorded for this prompt "
                          f"(it holds {len(self.trajectories)}: {ids}{', ...' if len(self.trajectories) > 5 else ''});"
                          " replay with the agent variant that recorded them, or give a file with one trajectory")


def load_trajectories(path: str | Path) -> list[Trajectory]:
    """Trajectories from a JSON (one object or a list) or JSONL file; a clear `PolicyError` otherwise."""
    p = Path(path)
    if not p.is_file():
        raise PolicyError(f"replay: no trajectory file {p} (export one with `evolve trajectories RUN_DIR --export FILE`)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError(f"replay: {p} is not a trajectory file (JSON or JSONL of trajectories): it is not UTF-8 "
                          f"text (byte {e.start})") from None
    except OSError as e:
        raise PolicyError(f"replay: cannot read {p}: {e.strerror or e}") from None
    try:
        if p.suffix == ".jsonl":
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            items = data if isinstance(data, list) else [data]
        return [Trajectory.model_validate(item) for item in items]
    except (json.JSONDecodeError, ValidationError) as e:
        first = str(e).splitlines()[0]
        raise PolicyError(f"replay: {p} is not a trajectory file (JSON or JSONL of trajectories): {first}") from e
