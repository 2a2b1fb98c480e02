"""Final selection among an instance's candidates from visible information only: the patch was produced and
applies, the repository's visible tests, the agent's own reproduction script; then, among the best tier, a
pairwise judge asked twice with the positions swapped (a win needs both orders). A failed or tied judgment
is `undecided` and a stated visible tie-break chooses (never the first position). Hidden tests are not an
input: this module never sees a test report."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Callable, Optional

from agent.policy.base import Policy
from evolve.se_agent.compress import fit
from evolve.se_agent.llm import ask
from evolve.se_agent.operators import describe
from evolve.se_agent.records import PoolEntry, SelectionVerdict

log = logging.getLogger(__name__)

Judge = Callable[[str, str, str], Optional[str]]
"""judge(problem, candidate shown as A, candidate shown as B) -> "A", "B", "tie", or None when it failed."""

JUDGE_SYSTEM = ("You compare two candidate patches for the same issue in a repository. Judge which one more "
                "likely fixes the issue correctly without breaking anything, from the issue, the patches and "
                "what was observed when they were applied. Think briefly, then end with a final line that is "
                "exactly `Winner: A`, `Winner: B` or `Winner: Tie`.")
_VERDICT = re.compile(r"^\s*\**winner\**\s*:\s*\**\s*(A|B|tie)\s*\**\s*\.?\s*$", re.I)


def parse_verdict(text: str) -> Optional[str]:
    """The verdict from the reply's last non-empty line only; None when that line is not a verdict."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    m = _VERDICT.match(lines[-1])
    if not m:
        return None
    v = m.group(1)
    return "tie" if v.lower() == "tie" else v.upper()


def policy_judge(policy: Policy, max_tokens: int = 300) -> Judge:
    def judge(problem: str, a: str, b: str) -> Optional[str]:
        try:
            text = ask(policy, JUDGE_SYSTEM, f"<issue>\n{problem}\n</issue>\n\n<candidate A>\n{a}\n</candidate A>\n\n"
                                             f"<candidate B>\n{b}\n</candidate B>", max_tokens=max_tokens)
        except Exception as e:
            log.warning("judge failed: %s", e)
            return None
        return parse_verdict(text)
    return judge


def shown(entry: PoolEntry, patch: str, max_chars: int = 4000) -> str:
    body, _ = fit(patch, max_chars)
    return f"{describe(entry)}\n\npatch:\n{body}"


def _changed_lines(patch: str) -> int:
    return sum(1 for ln in patch.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def tie_break(ids: list[str], entries: dict[str, PoolEntry], patches: dict[str, str]) -> tuple[str, str]:
    """Among `ids`: most visible tests passing, then a passing reproduction, then the smallest patch, then
    the patch's hash (content, not position)."""
    def key(t: str):
        o = entries[t].outcome
        return (-o.tests_passed, -(o.repro == "pass"), _changed_lines(patches[t]),
                hashlib.sha256(patches[t].encode()).hexdigest())
    best = min(ids, key=key)
    return best, "most visible tests passing, then reproduction passing, then fewest changed lines, then patch hash"


def select(problem: str, entries: list[PoolEntry], patches: dict[str, str], judge: Judge | None,
           max_judged: int = 6) -> SelectionVerdict:
    """Choose one candidate of one instance (all `entries` must be of the same instance)."""
    ids = [e.trajectory_id for e in entries]
    v = SelectionVerdict(instance_id=entries[0].instance_id if entries else "", candidates=ids)
    if len({e.instance_id for e in entries}) > 1:
        raise ValueError("selection got candidates of several instances")
    by_id = {e.trajectory_id: e for e in entries}
    with_patch = [e for e in entries if patches.get(e.trajectory_id, "").strip()]
    if not with_patch:
        return v
    best = max(e.outcome.score for e in with_patch)
    top, seen = [], set()
    for e in with_patch:  # one representative per distinct patch
        p = patches[e.trajectory_id].strip()
        if e.outcome.score == best and p not in seen:
            seen.add(p)
            top.append(e.trajectory_id)
    v.top = top
    if len(top) == 1:
        v.method, v.selected = "visible", top[0]
        return v
    if len(top) > max_judged:  # keep the judge's work bounded, by a visible criterion
        top = sorted(top, key=lambda t: (-by_id[t].outcome.tests_passed, _changed_lines(patches[t]),
                                         hashlib.sha256(patches[t].encode()).hexdigest()))[:max_judged]
    wins = {t: 0.0 for t in top}
    decided = 0
    if judge is not None:
        for i, a in enumerate(top):
            for b in top[i + 1:]:
                sa, sb = shown(by_id[a], patches[a]), shown(by_id[b], patches[b])
                first, second = judge(problem, sa, sb), judge(problem, sb, sa)
                v.comparisons.append({"a": a, "b": b, "a_first": first, "b_first": second})
                if first is None or second is None:
                    continue
                decided += 1
                if first == "A" and second == "B":
                    wins[a] += 1
                elif first == "B" and second == "A":
                    wins[b] += 1
                else:  # a tie, or the verdict flipped with the positions (position bias)
                    wins[a] += 0.5
                    wins[b] += 0.5
    v.wins = wins
    most = max(wins.values())
    leaders = [t for t in top if wins[t] == most]
    if decided and len(leaders) == 1:
        v.method, v.selected = "judge", leaders[0]
        return v
    v.method = "undecided"
    v.selected, v.tie_break = tie_break(leaders if decided else top, by_id, patches)
    return v
