"""The first wrong step of a low path, judged by the CURRENT policy as verifier.

The verifier reads the task, the steps so far and the current step, reasons, and must end with one line
`Judgment: Good`, `Judgment: Bad` or `Judgment: Uncertain`. Parsing is strict: only that last line counts
(upstream substring-matched "good" anywhere, so "not good" read as Good). A reply without it is `invalid`
and, like Good and Uncertain, does not stop the walk; the counts of each verdict are kept. Greedy
(temperature 0) by default, or the majority of k samples (ties are Uncertain).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Literal

from agent.policy.base import SamplingParams
from records import Message

Verdict = Literal["good", "bad", "uncertain", "invalid"]
JUDGMENT = re.compile(r"judgment:\s*(good|bad|uncertain)", re.IGNORECASE)

SYSTEM = (
    "You check the work of an agent, one step at a time. You see the task, the steps the agent already took, "
    "and its CURRENT step with what came back. Decide whether the current step keeps the task on a path to "
    "success. Call it Bad when it breaks something, moves away from the goal, repeats something that already "
    "failed, or ends the task unsolved; Good when it is a sensible move; Uncertain when you cannot tell. "
    "Think briefly, then write as your last line exactly one of:\n"
    "Judgment: Good\nJudgment: Bad\nJudgment: Uncertain"
)

Ask = Callable[[list[Message], int], list[str]]
"""(messages, k) -> k replies: greedy when k == 1, sampled otherwise."""


def parse_judgment(text: str) -> Verdict:
    """The verdict of a reply's last non-empty line, or `invalid` when that line is not a judgment."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "invalid"
    m = JUDGMENT.fullmatch(lines[-1].rstrip("."))
    return m.group(1).lower() if m else "invalid"  # type: ignore[return-value]


def majority(verdicts: list[Verdict]) -> Verdict:
    """The most common verdict; a tie at the top (or only invalid replies) is Uncertain."""
    if len(verdicts) == 1:
        return verdicts[0]
    counts = Counter(v for v in verdicts if v != "invalid").most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return "uncertain"
    return counts[0][0]


def clip_front(text: str, limit: int) -> str:
    return text if len(text) <= limit else "[... earlier steps cut ...]\n" + text[-limit:]


def verifier_messages(task: str, steps: list[tuple[str, str]], current: tuple[str, str],
                      history_chars: int = 6000) -> list[Message]:
    """The verifier's prompt: task, earlier (action, result) pairs clipped from the front, the current step."""
    history = "\n\n".join(f"Step {i + 1}\nAction: {a}\nResult: {o}" for i, (a, o) in enumerate(steps)) or "(none)"
    user = (f"Task:\n{task}\n\nSteps so far:\n{clip_front(history, history_chars)}\n\n"
            f"Current step (step {len(steps) + 1}):\nAction: {current[0]}\nResult: {current[1][:3000]}\n\n"
            "Is the current step Good, Bad or Uncertain?")
    return [Message(role="system", content=SYSTEM), Message(role="user", content=user)]


@dataclass
class StepVerdict:
    step: int
    """1-based step index on the path."""
    verdict: Verdict
    replies: list[str] = field(default_factory=list)


def first_error(task: str, steps: list[tuple[str, str]], ask: Ask, k: int = 1) -> tuple[int | None, list[StepVerdict]]:
    """Walk the (action, result) steps; the first Bad one (1-based) and every verdict up to it."""
    out: list[StepVerdict] = []
    for i, current in enumerate(steps):
        replies = ask(verifier_messages(task, steps[:i], current), k)
        verdict = majority([parse_judgment(r) for r in replies])
        out.append(StepVerdict(i + 1, verdict, replies))
        if verdict == "bad":
            return i + 1, out
    return None, out


def policy_ask(policy, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0) -> Ask:
    """An `Ask` through a `Policy`: greedy for k=1, k samples at `temperature` otherwise (batched)."""
    def ask(messages: list[Message], k: int) -> list[str]:
        if k == 1:
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
            return [policy.generate([messages], params)[0].text]
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
        return [g.text for g in policy.generate([messages] * k, params)]
    return ask
