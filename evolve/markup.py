"""Rich output of text that is not the program's own: node labels, policy text, paths, ids, error messages.

Rich reads `[...]` in a printed string as markup, so data such as a policy's `[/x]` or a path `/tmp/[/bad]`
would be misread as style tags (a `MarkupError`, or styles that eat text). Every piece of data printed through
rich goes through `esc` (in an f-string with the program's own markup) or `cells` (table cells, never parsed).
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text


def esc(value: Any) -> str:
    """`value` as text rich prints literally inside markup."""
    return escape(str(value))


def cells(*values: Any) -> list[Text]:
    """Table cells printed literally (rich parses a plain `str` cell as markup)."""
    return [v if isinstance(v, Text) else Text(str(v)) for v in values]
