"""The three SE-Agent operators, each grounded in executed trajectories of ONE instance and given that
instance's real problem text. Their product is strategy text that the next attempt's system prompt gets.

- revision: one visibly failed trajectory (the latest) -> an orthogonal strategy (different entry point,
  order and tools), told what every earlier attempt already tried;
- recombination: the best two trajectories by visible outcome -> a hybrid keeping each one's strengths;
- refinement: the instance's whole pool -> risk-aware guidance (blind spots, risks, what to avoid).

When the operator policy fails or answers nothing, a deterministic strategy is built from the same pool
entries (recorded as `fallback`)."""

from __future__ import annotations

import logging
from typing import Callable

from agent.policy.base import Policy
from evolve.se_agent.compress import fit
from evolve.se_agent.llm import ask
from evolve.se_agent.records import OperatorOutput, PoolEntry
from records import TaskInstance

log = logging.getLogger(__name__)

OPERATORS = ("revision", "recombination", "refinement")

SYSTEM = ("You advise a coding agent that will try again to fix an issue in a repository. You are shown the "
          "issue and what earlier attempts did, with what could be observed of their outcome (whether a patch "
          "was produced and applies, whether the repository's own tests and the agent's reproduction script "
          "passed). Answer with the strategy only, as short imperative guidance for the agent, at most {words} "
          "words. No preamble.")

TASKS = {
    "revision": ("The attempt marked FOCUS failed. Write a strategy that is orthogonal to it and to the other "
                 "attempts listed: a different way to investigate, a different entry point in the code, a "
                 "different order of work and different tools. If the attempt ran out of steps, be more direct."),
    "recombination": ("The two attempts marked PARENT are the best ones so far by their visible outcome. Write "
                      "one strategy that keeps what each did well, drops what went wrong, and covers the blind "
                      "spots both share."),
    "refinement": ("All attempts so far are listed. Write risk-aware guidance: the blind spots they share, the "
                   "critical risks (wrong file, breaking existing tests, unhandled cases in the issue), what to "
                   "avoid repeating, and briefly a better approach."),
}


def describe(entry: PoolEntry, tag: str = "") -> str:
    o = entry.outcome
    seen = [f"patch {'produced' if o.patch_produced else 'NOT produced'}"]
    if o.applies is not None:
        seen.append("applies" if o.applies else "does NOT apply")
    if o.tests != "none":
        seen.append(f"visible tests {o.tests}" + (f" (broke {', '.join(o.regressions[:3])})" if o.regressions else ""))
    if o.repro != "none":
        seen.append(f"reproduction script {o.repro}")
    seen.append(f"ended {o.final_status or 'unknown'}")
    lines = [f"### attempt {entry.trajectory_id}{' ' + tag if tag else ''} (iteration {entry.iteration}, "
             f"{entry.origin.removeprefix('se-agent:')}) -> {entry.outcome.label().upper()}",
             f"approach: {entry.approach}",
             f"files touched: {', '.join(entry.files_touched) or 'none'}",
             f"key changes: {'; '.join(entry.key_changes) or 'none'}",
             f"tools used: {', '.join(entry.tools_used) or 'none'}",
             f"reasoning pattern: {entry.reasoning_pattern}",
             f"assumptions: {'; '.join(entry.assumptions) or 'none stated'}",
             f"visible outcome: {', '.join(seen)}"]
    return "\n".join(lines)


def rank(entries: list[PoolEntry]) -> list[PoolEntry]:
    """Best first by visible outcome; equal outcomes keep pool order (earliest first), never recency."""
    return sorted(entries, key=lambda e: e.outcome.score, reverse=True)


def choose_sources(operator: str, pool: list[PoolEntry]) -> list[PoolEntry]:
    """The entries an operator builds on (the first is the lineage parent)."""
    if operator == "revision":
        failed = [e for e in pool if e.outcome.failed]
        return [failed[-1]] if failed else [rank(pool)[-1]]
    if operator == "recombination":
        return rank(pool)[:2]
    if operator == "refinement":
        return rank(pool)
    raise ValueError(f"unknown operator {operator!r}; the operators are {', '.join(OPERATORS)}")


def operator_prompt(operator: str, instance: TaskInstance, pool: list[PoolEntry], sources: list[PoolEntry],
                    focus_text: str = "", max_chars: int = 12000) -> tuple[str, int]:
    """The operator's user message and how many characters were cut to fit `max_chars`."""
    problem, cut = fit(instance.problem_statement, max_chars // 3)
    tags = {}
    if operator == "revision":
        tags[sources[0].trajectory_id] = "FOCUS"
    elif operator == "recombination":
        tags.update({e.trajectory_id: "PARENT" for e in sources})
    shown = sources if operator != "revision" else sources + [e for e in pool if e is not sources[0]]
    body = "\n\n".join(describe(e, tags.get(e.trajectory_id, "")) for e in shown)
    if focus_text:
        body += f"\n\n### what the FOCUS attempt did, step by step (compressed)\n{focus_text}"
    body, cut2 = fit(body, max_chars - len(problem))
    return (f"<issue>\n{problem}\n</issue>\n\n<attempts>\n{body}\n</attempts>\n\n{TASKS[operator]}", cut + cut2)


def fallback_strategy(operator: str, pool: list[PoolEntry], sources: list[PoolEntry]) -> str:
    """A strategy built from the pool entries alone (no LLM)."""
    def why(e: PoolEntry) -> str:
        o = e.outcome
        if not o.patch_produced:
            return "it produced no patch"
        if o.applies is False:
            return "its patch did not apply"
        if o.tests == "fail":
            return f"it broke visible tests ({', '.join(o.regressions[:3])})"
        if o.repro == "fail":
            return "its reproduction script still failed"
        return f"it ended {o.final_status}"

    files = list(dict.fromkeys(f for e in pool for f in e.files_touched))
    if operator == "revision":
        e = sources[0]
        tried = "; ".join(dict.fromkeys(x.reasoning_pattern for x in pool))
        return (f"An earlier attempt ({e.approach[:200]}) failed because {why(e)}. Do not repeat it. Start from a "
                f"different place: write a short script reproducing the issue first, read the code it runs "
                f"{'outside ' + ', '.join(e.files_touched) if e.files_touched else 'end to end'}, and change the "
                f"root cause. Tool sequences already tried: {tried or 'none'}. Submit only after the repository's "
                f"tests pass.")
    if operator == "recombination":
        a = sources[0]
        b = sources[1] if len(sources) > 1 else sources[0]
        first = "; ".join(a.key_changes[:3]) or a.approach[:150]
        return (f"Combine two earlier attempts. Keep from the first: {first} "
                f"(files {', '.join(a.files_touched) or 'none'}). Keep from the second: "
                f"{'; '.join(b.key_changes[:3]) or b.approach[:150]}. Check both against the issue's examples and "
                f"run the repository's tests before submitting.")
    risks = list(dict.fromkeys(why(e) for e in pool if e.outcome.failed))
    return (f"{len(pool)} attempts were made; files considered: {', '.join(files) or 'none'}. Risks seen: "
            f"{'; '.join(risks) or 'none visible, but no attempt proved the fix with a reproduction'}. Reproduce "
            f"the issue first, change only the source (not the tests), keep existing tests passing, handle every "
            f"case the issue names, and submit a non-empty patch.")


def echoes(answer: str, prompt: str, span: int = 60) -> bool:
    """True when the answer opens with a long verbatim piece of its own prompt (small models often do)."""
    head = " ".join(answer.split())[:span]
    return len(head) >= span and head in " ".join(prompt.split())


def apply_operator(operator: str, instance: TaskInstance, pool: list[PoolEntry], iteration: int,
                   policy: Policy | None, *, focus_text: Callable[[str], tuple[str, int]] | None = None,
                   max_chars: int = 12000, max_tokens: int = 400, words: int = 250, seed: int = 0) -> OperatorOutput:
    """Run one operator for `instance` on its own pool (entries of other instances are an error)."""
    foreign = [e.instance_id for e in pool if e.instance_id != instance.instance_id]
    if foreign:
        raise ValueError(f"pool for {instance.instance_id} holds entries of {sorted(set(foreign))}")
    if not pool:
        raise ValueError(f"{operator} for {instance.instance_id}: the instance's pool is empty")
    sources = choose_sources(operator, pool)
    text_of_focus, focus_cut = (focus_text(sources[0].trajectory_id) if (operator == "revision" and focus_text)
                                else ("", 0))
    user, cut = operator_prompt(operator, instance, pool, sources, text_of_focus, max_chars)
    cut += focus_cut
    out = OperatorOutput(instance_id=instance.instance_id, iteration=iteration, operator=operator, text="",
                         sources=[e.trajectory_id for e in sources], prompt=user, chars_cut=cut)
    reason = ""
    if policy is None:
        reason = "no operator policy"
    else:
        try:
            system = SYSTEM.format(words=words)
            text = ask(policy, system, user, max_tokens=max_tokens, seed=seed)
            words_in = text.split()
            if len(words_in) > 2 * words:
                text = " ".join(words_in[: 2 * words])
            out.text = text.strip()
            if not out.text:
                reason = "the operator policy answered nothing"
            elif echoes(out.text, system + "\n" + user):
                reason = "the operator policy repeated its prompt instead of answering"
        except Exception as e:  # fall back, recorded
            reason = f"operator policy failed: {type(e).__name__}: {str(e)[:200]}"
    if reason:
        log.debug("%s for %s falls back: %s", operator, instance.instance_id, reason)
        out.text, out.fallback, out.fallback_reason = fallback_strategy(operator, pool, sources), True, reason
    return out
