"""The problem statement of a synthesised task: what a user would report, never the fix.

It is written from what the failing tests show (their names and the first failure's report) and from the
function's name and docstring, by a template or, with `--policy`, by a policy given the same material (never
the diff). `leaks` checks either way that no line the fix adds appears in the text; a policy's text that
leaks is replaced by the template's, and a template text that leaks loses its failure excerpt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MAX_EXCERPT_LINES = 40


@dataclass
class IssueInput:
    """What the issue may be written from."""

    source: str
    file: str
    function: str
    docstring: str
    failing_tests: list[str]
    failure: str
    """The first failing test's report (pytest's traceback and assertion)."""


def added_lines(patch: str) -> list[str]:
    return [ln[1:] for ln in patch.splitlines() if ln.startswith("+") and not ln.startswith("+++")]


def leaks(text: str, gold_patch: str, bugged_source: str) -> list[str]:
    """Lines the fix adds (stripped, 4 characters or more, not already in the bugged file) that appear in the
    text: the fix itself. Empty when the text gives nothing of it away."""
    present = {ln.strip() for ln in bugged_source.splitlines()}
    out = []
    for line in added_lines(gold_patch):
        s = line.strip()
        if len(s) >= 4 and s not in present and s in text:
            out.append(s)
    return out


def _excerpt(failure: str) -> str:
    lines = [ln.rstrip() for ln in failure.splitlines() if ln.strip()]
    if len(lines) > MAX_EXCERPT_LINES:
        lines = lines[:10] + ["..."] + lines[-(MAX_EXCERPT_LINES - 11):]
    return "\n".join(lines)


def template(inp: IssueInput, with_excerpt: bool = True) -> str:
    """The default statement."""
    short = inp.function.split(".")[-1]
    tests = inp.failing_tests
    listed = "\n".join(f"- `{t}`" for t in tests[:8]) + (f"\n- ... and {len(tests) - 8} more" if len(tests) > 8 else "")
    parts = [f"`{inp.function}` in `{inp.file}` misbehaves", "",
             f"Since the last change, {len(tests)} test{'s' if len(tests) != 1 else ''} of {inp.source} "
             f"fail{'' if len(tests) != 1 else 's'}:", "", listed, ""]
    if with_excerpt and inp.failure.strip():
        parts += ["The first failure:", "", "```", _excerpt(inp.failure), "```", ""]
    doc = inp.docstring.strip().split("\n\n")[0].strip()
    if doc:
        parts += [f"`{short}` is documented as:", "", "> " + "\n> ".join(doc.splitlines()), ""]
    parts.append(f"Please fix `{inp.function}` so that it behaves as documented and the tests pass again.")
    return "\n".join(parts) + "\n"


PROMPT = """You write bug reports for a Python project. Write a concise GitHub issue (a title line, then the body)
as a user who hit this problem. Describe the symptom, not the fix; do not propose code.

Project: {source}
Function: {function} (in {file})
Docstring: {docstring}
Failing tests: {tests}
First failure:
{failure}
"""


def write(inp: IssueInput, gold_patch: str, bugged_source: str,
          complete: Callable[[str], str] | None = None) -> tuple[str, str]:
    """(statement, how it was written: `policy`, `template` or `template-short`). A statement that still
    leaks after both fallbacks is returned as it is, with `how` = `leaks` (the caller rejects the task)."""
    if complete is not None:
        prompt = PROMPT.format(source=inp.source, function=inp.function, file=inp.file,
                               docstring=inp.docstring[:800] or "(none)", tests=", ".join(inp.failing_tests[:8]),
                               failure=_excerpt(inp.failure))
        text = complete(prompt).strip()
        if text and not leaks(text, gold_patch, bugged_source):
            return text + "\n", "policy"
    text = template(inp)
    if not leaks(text, gold_patch, bugged_source):
        return text, "template"
    text = template(inp, with_excerpt=False)
    return text, "template-short" if not leaks(text, gold_patch, bugged_source) else "leaks"
