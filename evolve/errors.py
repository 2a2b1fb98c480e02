"""Errors a user can cause: the CLI prints their message in one line, without a traceback."""

from __future__ import annotations

import pydantic

from agent.policy import PolicyError
from agent.variant import VariantError
from evolve.store import StoreError
from evolve.train.errors import TrainError
from sandbox.base import SandboxError
from tasks.suite import SuiteUnavailable


class ConfigError(ValueError):
    """A config file or option is invalid; the message says which and how to fix it."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story for a user."""
    return (SandboxError, StoreError, SuiteUnavailable, ConfigError, pydantic.ValidationError, FileNotFoundError,
            PolicyError, VariantError, TrainError)
