"""How an attempt changes the agent's prompt: a planning prompt appended to the instance message (pilots)
and an operator's strategy block appended to the system message. Nothing is replaced: the variant's tool
instructions stay, and `check_wiring` asserts both facts on the trajectory as it was stored."""

from __future__ import annotations

from evolve.se_agent.records import Attempt
from records import Message, Trajectory

PLANS = [
    "",
    "Plan: first write a small script that reproduces the issue and run it; fix the code until the script "
    "shows the expected behaviour; then run the repository's tests.",
    "Plan: start from the repository's existing tests for the affected module: read them, find the code path "
    "they exercise, and make the smallest change that fixes the issue without breaking them.",
    "Plan: search the code for the names mentioned in the issue, read every place they are defined and used, "
    "decide where the wrong behaviour comes from, then edit that one place.",
    "Plan: read the module's documentation and docstrings first to learn the intended behaviour, compare it "
    "with the code, and fix the discrepancy; check edge cases the issue mentions.",
]
"""Planning prompts of the pilots (pilot j gets PLANS[j % len(PLANS)]; pilot 0 has none)."""

TEMPERATURES = [0.0, 0.7, 1.0, 0.5, 0.9]
"""Sampling temperatures of the pilots (pilot j gets TEMPERATURES[j % len]); pilot 0 is the plain agent."""


class WiringError(AssertionError):
    """An attempt's prompt addition is not in the prompt the agent really used (or the base prompt is gone)."""


def strategy_block(attempt: Attempt) -> str:
    name = attempt.origin.removeprefix("se-agent:")
    return (f"\n\n## Strategy for this task ({name}, iteration {attempt.iteration})\n"
            f"Earlier attempts at this task were studied. Follow this strategy:\n{attempt.strategy.strip()}\n")


def build_prompt(base: list[Message], attempt: Attempt) -> list[Message]:
    """`base` (the agent's system and instance messages) with the attempt's additions appended."""
    if len(base) < 2 or base[0].role != "system":
        raise WiringError("the agent's prompt must start with a system message and an instance message")
    system, user = base[0].model_copy(), base[1].model_copy()
    if attempt.strategy.strip():
        system.content = system.content + strategy_block(attempt)
    if attempt.planning.strip():
        user.content = user.content.rstrip("\n") + "\n\n" + attempt.planning.strip() + "\n"
    return [system, user, *base[2:]]


def check_wiring(stored: Trajectory, base: list[Message], attempt: Attempt) -> None:
    """Raise `WiringError` unless the stored trajectory's prompt holds the base system prompt (tool
    instructions), the operator's strategy text and the planning prompt."""
    if not stored.prompt or stored.prompt[0].role != "system":
        raise WiringError(f"trajectory {stored.id} has no system message")
    system, user = stored.prompt[0].content, stored.prompt[1].content if len(stored.prompt) > 1 else ""
    if not system.startswith(base[0].content):
        raise WiringError(f"trajectory {stored.id}: the base system prompt (tool instructions) was replaced")
    if attempt.strategy.strip() and attempt.strategy.strip() not in system:
        raise WiringError(f"trajectory {stored.id}: the {attempt.origin} strategy did not reach the agent's prompt")
    if attempt.planning.strip() and attempt.planning.strip() not in user:
        raise WiringError(f"trajectory {stored.id}: the planning prompt did not reach the agent's prompt")
