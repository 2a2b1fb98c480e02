"""The error a suite raises when it cannot be used here."""

from __future__ import annotations


class SuiteUnavailable(RuntimeError):
    """A suite cannot be loaded here (dataset not available offline, image missing); says what to provide."""
