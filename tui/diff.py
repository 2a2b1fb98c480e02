"""Unified diffs as lazygit shows them: a header per file, hunk headers, added and removed lines on a tinted
background, the code in them syntax-highlighted for the file's language (Pygments, through Rich)."""

from __future__ import annotations

import re
from functools import lru_cache

from pygments.lexers import get_lexer_for_filename
from pygments.util import ClassNotFound
from rich.style import Style
from rich.syntax import Syntax
from rich.text import Text

from tui.text import clean, clip

ADDED, REMOVED = "on #0f2e1a", "on #3a1216"
"""Backgrounds of added and removed lines (the syntax colours stay readable on both)."""
FILE = re.compile(r"^(?:\+\+\+ b/|\+\+\+ |diff --git a/\S+ b/)(\S+)")
THEME = "monokai"


@lru_cache(maxsize=64)
def _lexer_name(path: str) -> str | None:
    try:
        return get_lexer_for_filename(path).name
    except ClassNotFound:
        return None


def _highlighter(path: str | None) -> Syntax | None:
    name = _lexer_name(path) if path else None
    return Syntax("", name, theme=THEME) if name else None


def _code(line: str, syntax: Syntax | None) -> Text:
    """One line of code, coloured by its tokens (their own backgrounds dropped: the line's tint shows through)."""
    if syntax is None or not line.strip():
        return Text(line)
    lit = syntax.highlight(line)
    out = Text(line)
    for span in lit.spans:
        style = span.style if isinstance(span.style, Style) else Style.parse(span.style)
        if span.start < len(line):
            out.stylize(Style(color=style.color, bold=style.bold, italic=style.italic), span.start,
                        min(span.end, len(line)))
    return out


def diff_text(diff: str, limit: int = 20_000) -> Text:
    """`diff` (cut at `limit` characters) as highlighted text; anything that is not a diff is shown as it is."""
    out = Text()
    syntax: Syntax | None = None
    for line in clip(clean(diff), limit).splitlines():
        m = FILE.match(line)
        if line.startswith("diff --git") or line.startswith("+++ ") or line.startswith("--- "):
            if m:
                syntax = _highlighter(m.group(1))
            out.append(line + "\n", style="bold yellow" if line.startswith("diff") else "bold")
        elif line.startswith("@@"):
            head, _, rest = line.partition(" @@")
            out.append(head + " @@", style="bold cyan")
            out.append(rest + "\n", style="dim")
        elif line.startswith("+"):
            body = _code(line[1:], syntax)
            body.stylize(ADDED)
            out.append("+", style=f"bold green {ADDED}")
            out.append_text(body)
            out.append("\n")
        elif line.startswith("-"):
            body = _code(line[1:], syntax)
            body.stylize(REMOVED)
            out.append("-", style=f"bold red {REMOVED}")
            out.append_text(body)
            out.append("\n")
        elif line.startswith(" "):
            out.append(" ")
            out.append_text(_code(line[1:], syntax))
            out.append("\n")
        else:
            out.append(line + "\n", style="dim" if line.startswith(("index ", "new file", "deleted file")) else "")
    return out
