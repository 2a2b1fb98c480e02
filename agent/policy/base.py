"""The Policy interface: chat conversations in, sampled completions (with tokens and log-probs) out.

Conventions every backend follows:

- `generate` is batched: one `Generation` per conversation, in order. Backends that can batch do.
- `Generation.logprobs[i]` is the log-probability of `token_ids[i]` under the model's RAW distribution:
  `log_softmax(logits)` at temperature 1, before temperature, top-p or any other processing (vLLM's
  default `raw_logprobs`). A trainer recomputes exactly this with one forward pass; to get the
  tempered sampling distribution divide the logits by the temperature yourself.
- `token_ids` include the end-of-sequence token when the model emitted one (its log-prob too), so a
  trainer learns when to stop; `text` never contains special tokens.
- Stop strings: generation ends at the first stop string; `text` ends WITH the stop string (it is
  kept, unlike the OpenAI API, so tool-call markup like `</tool_call>` stays parseable), and
  `token_ids` run through the token that completed it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from records.trajectory import Message, ToolCall


END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
"""End-of-turn tokens some chat models use besides their end-of-sequence token; they end a completion too."""


class PolicyError(RuntimeError):
    """A problem the user can fix (unreachable server, missing model, missing vllm); the message says how."""


@dataclass
class Generation:
    """One sampled completion of one conversation."""

    text: str
    """Completion text (special tokens removed; ends with the stop string when one stopped it)."""
    token_ids: list[int] | None = None
    """Sampled token ids, when the backend reports them."""
    logprobs: list[float] | None = None
    """Raw (temperature 1) log-probability of each sampled token, aligned with `token_ids`."""
    prompt_tokens: int = 0
    """Tokens in the rendered prompt."""
    completion_tokens: int = 0
    """Tokens generated."""
    finish_reason: str = "stop"
    """`stop` (end of sequence or a stop string), `length` (hit max_tokens or the context), or a
    backend's own reason."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Native tool calls returned by servers that offer them; empty otherwise (parse `text`)."""

    def message(self) -> Message:
        """This completion as an assistant `Message` carrying its tokens and log-probs."""
        return Message(
            role="assistant",
            content=self.text,
            tool_calls=list(self.tool_calls),
            token_ids=self.token_ids,
            logprobs=self.logprobs,
        )


class SamplingParams(BaseModel):
    """How to sample one completion."""

    max_tokens: int = Field(default=512, ge=1)
    """Most tokens to generate per completion."""
    temperature: float = Field(default=1.0, ge=0.0)
    """Sampling temperature; 0 means greedy (deterministic)."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling: sample from the smallest token set whose probability reaches top_p."""
    stop: list[str] = Field(default_factory=list)
    """Strings that end the completion (kept at the end of the text)."""
    seed: int | None = None
    """Random seed for reproducible sampling (None: nondeterministic)."""


class Policy(ABC):
    """A chat model that samples completions. Build one with `agent.policy.load_policy(spec)`."""

    spec: str = ""
    """The spec it was loaded from, e.g. `hf:gemma3-270m` or `openai:http://localhost:8000#model`."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Most tokens (prompt + completion) the model takes."""

    @abstractmethod
    def generate(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[Generation]:
        """Sample one completion per conversation (batched); `tools` are OpenAI-style tool schemas."""

    @abstractmethod
    def count_tokens(self, messages: list[Message]) -> int:
        """Tokens of the prompt these messages render to (with the assistant generation prompt)."""

    def close(self) -> None:
        """Free the model or connections. Safe to call twice."""

    def __enter__(self) -> Policy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def message_dicts(messages: list[Message], *, arguments_as_json: bool = False) -> list[dict[str, Any]]:
    """Messages as chat-template / OpenAI dicts (`tool_calls` in OpenAI shape).

    `arguments_as_json` writes tool-call arguments as a JSON string (the OpenAI wire format) instead
    of a dict (what Hugging Face chat templates expect).
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": json.dumps(c.arguments) if arguments_as_json else c.arguments,
                    },
                }
                for i, c in enumerate(m.tool_calls)
            ]
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


def normalise_for_strict_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For templates that only take alternating user/assistant turns (Gemma): tool results become
    user turns in `<tool_response>` tags and consecutive turns of one role are merged."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if out and out[-1]["role"] == role and role != "system":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + content}
        else:
            out.append({**m, "role": role, "content": content})
    return out


class PolicyWrapper(Policy):
    """A policy around another one: the same spec, context length and token counting; subclasses change
    how `generate` reaches `inner`."""

    def __init__(self, inner: Policy):
        self.inner, self.spec = inner, inner.spec

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def count_tokens(self, messages: list[Message]) -> int:
        return self.inner.count_tokens(messages)


class SeededPolicy(PolicyWrapper):
    """A policy whose every call samples with a fixed seed (pilots differ by seed as well as temperature)."""

    def __init__(self, inner: Policy, seed: int):
        super().__init__(inner)
        self.seed = seed

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        return self.inner.generate(conversations, params.model_copy(update={"seed": self.seed}), tools)
