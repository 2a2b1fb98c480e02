"""An agent variant: prompts, tools and settings in one small directory that an agent can edit.

A variant directory holds `variant.yaml` (this model). The Huxley-Gödel Machine copies a variant,
lets an agent modify it, and evaluates the result, so everything that defines the agent's behaviour
lives here, small and self-contained.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

DEFAULT_VARIANT = Path(__file__).parent / "variants" / "default"


class Budget(BaseModel):
    """When an episode stops if the agent has not submitted."""

    max_steps: int = Field(default=30, ge=1)
    """Most policy calls."""
    max_tokens: int = Field(default=200_000, ge=1)
    """Most prompt + completion tokens over the episode."""
    max_seconds: float = Field(default=1800.0, gt=0)
    """Most wall-clock seconds."""
    max_cost: float = Field(default=0.0, ge=0)
    """Most dollars (0: no limit), counted with `cost_per_1k_tokens`."""
    cost_per_1k_tokens: float = 0.0
    """Price of 1,000 tokens for the cost budget (hosted APIs)."""


class AgentVariant(BaseModel):
    """Everything that defines one agent's behaviour."""

    name: str = "default"
    """Variant name (a hash of its contents is added when stored)."""
    system_template: str
    """System prompt; `{tools}` is replaced by the tool descriptions, `{workdir}` by the repository path."""
    instance_template: str
    """First user message; `{problem_statement}` and `{workdir}` are filled in."""
    observation_template: str = "<tool_response>\n{observation}\n</tool_response>"
    """How tool results are shown to the policy (text protocol)."""
    format_error_template: str = "Your last message had no valid tool call: {error}\nReply with <think>...</think> then <tool_call>...</tool_call>."
    """Observation after a response that could not be parsed."""
    tools: list[str] = Field(default_factory=lambda: ["bash", "view", "str_replace", "create", "search", "submit"])
    """Tools the agent may call, by name (see `agent/tools`)."""
    native_tools: bool = False
    """Use the server's native tool calling (OpenAI-compatible servers) instead of the text protocol."""
    max_observation_chars: int = 6000
    """Tool output longer than this is cut to its head and tail with a notice."""
    temperature: float = 0.0
    """Sampling temperature for the policy."""
    max_tokens_per_step: int = 512
    """Most tokens the policy may generate per step."""
    budget: Budget = Field(default_factory=Budget)
    """When the episode stops without a submit."""
    command_timeout: float = 120.0
    """Seconds before a bash command is killed."""

    @classmethod
    def load(cls, directory: str | Path = DEFAULT_VARIANT) -> "AgentVariant":
        path = Path(directory) / "variant.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not an agent variant (no variant.yaml)")
        return cls.model_validate(yaml.safe_load(path.read_text()))

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "variant.yaml").write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False,
                                                          allow_unicode=True, width=100))
        return path

    def fingerprint(self) -> str:
        """`name@hash`: identifies the exact variant a trajectory came from."""
        digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:10]
        return f"{self.name}@{digest}"
