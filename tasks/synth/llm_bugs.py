"""LLM bugs (`--methods llm`): a policy rewrites one function so that it has a bug; the rewrite then goes through
the same validation as a procedural bug. The policy is any `complete(prompt) -> text` (the CLI wraps a
`--policy`); the prompt shows the function only, and the answer's first fenced code block replaces it."""

from __future__ import annotations

import re
import textwrap
from typing import Callable, Iterator

from tasks.synth.families import Mutation, entities, parse

FAMILY = "llm_rewrite"
PROMPT = """Here is a Python function from the project {source} ({file}):

```python
{code}
```

Rewrite this function so that it contains one subtle logic bug that the project's tests would catch: keep its
name, signature and docstring, change as little as possible, add no comment that points at the bug.
Answer with the whole rewritten function in one ```python code block and nothing else.
"""
CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def rewrite(answer: str, original: str) -> str | None:
    """The rewritten function from a policy's answer, indented as the original; None when there is none."""
    m = CODE_BLOCK.search(answer)
    if not m:
        return None
    code = textwrap.dedent(m.group(1)).strip("\n")
    first = original.splitlines()[0]
    indent = first[:len(first) - len(first.lstrip())]
    lines = code.splitlines()
    return "\n".join((indent + ln if ln.strip() else ln) for ln in lines)


def propose(source_name: str, sources: dict[str, bytes], functions: list[tuple[str, str]],
            complete: Callable[[str], str]) -> Iterator[Mutation]:
    """One rewrite per named function (``(file, qualified name)``), as a mutation of its file."""
    for path, name in functions:
        content = sources[path]
        ent = next((e for e in entities(parse(content).root_node, content, path) if e.name == name), None)
        if ent is None:
            continue
        node = ent.node.parent if ent.node.parent is not None and ent.node.parent.type == "decorated_definition" \
            else ent.node
        start = content.rfind(b"\n", 0, node.start_byte) + 1  # the whole lines, decorators included
        original = content[start:node.end_byte].decode()
        answer = complete(PROMPT.format(source=source_name, file=path, code=textwrap.dedent(original)))
        new = rewrite(answer, original)
        if new is None:
            continue
        m = Mutation(family=FAMILY, entity=ent, site=0, start=start, end=node.end_byte, replacement=new.encode())
        if m.valid(content):
            yield m
