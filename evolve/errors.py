"""Errors a user can cause: the CLI prints their message in one line, without a traceback."""

from __future__ import annotations

import sys

import pydantic

from evolve.store import StoreError
from sandbox.base import SandboxError
from tasks.suite import SuiteUnavailable


class ConfigError(ValueError):
    """A config file or option is invalid; the message says which and how to fix it."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story for a user."""
    errors: list[type[BaseException]] = [SandboxError, StoreError, SuiteUnavailable, ConfigError,
                                         pydantic.ValidationError, FileNotFoundError]
    from agent.policy import PolicyError
    from agent.variant import VariantError

    errors += [PolicyError, VariantError]
    modeling = sys.modules.get("evolve.train.modeling")  # a TrainError needs it imported; torch is slow to load
    if modeling is not None:
        errors.append(modeling.TrainError)
    data = sys.modules.get("evolve.train.data")
    if data is not None:
        errors.append(data.TokenizerMismatch)
    return tuple(errors)
