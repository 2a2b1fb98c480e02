"""Agent-R's settings. Thresholds may come from strings (options, environment): they are parsed as floats
and validated here, never compared as strings (upstream's `TypeError`)."""

from __future__ import annotations

import math
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evolve.errors import ConfigError

ENV_PREFIX = "EVOLVE_AGENT_R_"
"""Environment variables `EVOLVE_AGENT_R_ALPHA`, `..._BETA`, ... override the defaults (options override both)."""


def parse_threshold(value: Any, name: str) -> float:
    """A threshold in [0, 1] from a float or a string such as "0.5"; a clear `ConfigError` otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"agent-r {name} must be a number in [0, 1], not {value!r}")
    try:
        out = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"agent-r {name} must be a number in [0, 1], not {value!r}") from None
    if math.isnan(out) or not 0.0 <= out <= 1.0:
        raise ConfigError(f"agent-r {name} must be a number in [0, 1], not {value!r}")
    return out


class AgentRConfig(BaseModel):
    """One Agent-R search-and-splice setting (per instance) and its iteration loop."""

    model_config = ConfigDict(extra="forbid")

    rollouts: int = Field(default=4, ge=1)
    """MCTS iterations per instance (upstream `ITERA`); each walks from the root to a terminal node."""
    n_gen: int = Field(default=4, ge=1)
    """Responses sampled per expansion (upstream `N_GEN`); each is executed in its own branch."""
    max_depth: int = Field(default=6, ge=1)
    """Most steps on a path; a node at this depth is terminal and scored as it stands."""
    c: float = Field(default=0.25, ge=0)
    """UCT exploration constant (upstream hard-codes 0.25)."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of expansions (must be > 0 so siblings differ)."""
    alpha: float = 0.5
    """Lower bound on the high path's value: pairs need value(high) > alpha (rewards are in [0, 1])."""
    beta: float = 0.2
    """Distinguishable gap: pairs need value(high) - value(low) > beta."""
    max_pairs: int = Field(default=4, ge=1)
    """Most pairs spliced per instance (pairs are shuffled with `seed`, as upstream does)."""
    verifier_k: int = Field(default=1, ge=1)
    """Verifier samples per step: 1 is greedy (temperature 0); k > 1 takes the majority of k samples."""
    verifier_temperature: float = Field(default=0.7, gt=0)
    """Sampling temperature of the verifier when `verifier_k` > 1."""
    verifier_max_tokens: int = Field(default=256, ge=8)
    """Most tokens of one verifier reply."""
    splice: Literal["parent", "divergence", "direct"] = "parent"
    """Where the revision goes: `parent` (the flagged step's parent, with an undo: Agent-R done right);
    `divergence` (upstream's code: a no-op revision, the high path from where it differs) and `direct`
    (the whole low path, then the whole high path) are kept as controls."""
    seed: int = 123
    """Seed of tie-breaks, pair shuffling and sampling."""

    @field_validator("alpha", "beta", mode="before")
    @classmethod
    def _threshold(cls, value: Any, info: Any) -> float:
        return parse_threshold(value, info.field_name)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "AgentRConfig":
        """Defaults, then `EVOLVE_AGENT_R_<FIELD>` environment variables, then `overrides` (None ignored)."""
        env = os.environ if env is None else env
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in env:
                data[name] = env[key]
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ConfigError:
            raise
        except ValueError as e:  # pydantic's ValidationError: one line naming the field
            errors = getattr(e, "errors", lambda: [])()
            if errors:
                where = ".".join(str(x) for x in errors[0]["loc"])
                msg = str(errors[0]["msg"]).removeprefix("Value error, ")
                raise ConfigError(msg if msg.startswith("agent-r") else f"bad agent-r setting {where}: {msg}") from None
            raise ConfigError(f"bad agent-r setting: {e}") from None
