"""`search`: code search over the sandbox's repository, built on tree-sitter (`agent/tools/code_index.py`).

The repository's Python files are read from the sandbox in one tar stream and parsed on the host;
later calls re-read only files whose size or mtime changed (the index re-parses only changed content).
"""

from __future__ import annotations

import base64
import io
import shlex
import tarfile

from agent.tools.base import Tool, ToolContext, ToolError, params
from agent.tools.code_index import CodeIndex, render_definitions, render_references

LIST = "find . -name '*.py' -type f -not -path './.git/*' -size -1000k -printf '%P\\t%T@\\t%s\\n'"


def sync_index(ctx: ToolContext) -> CodeIndex:
    index: CodeIndex = ctx.state.setdefault("code_index", CodeIndex())
    stamps: dict[str, str] = ctx.state.setdefault("code_stamps", {})
    wd = shlex.quote(ctx.sandbox.workdir)
    listing = ctx.sandbox.exec(f"cd {wd} && {LIST}", timeout=60, max_output=16 << 20).output
    now = {}
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            now[parts[0]] = f"{parts[1]}:{parts[2]}"
    changed = sorted(p for p, s in now.items() if stamps.get(p) != s)
    files: dict[str, bytes | None] = {p: None for p in stamps if p not in now}
    if changed:
        names = " ".join(shlex.quote(p) for p in changed)
        r = ctx.sandbox.exec(f"cd {wd} && tar -cf - -- {names} | base64 -w0", timeout=120, max_output=256 << 20)
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(r.output))) as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member)
                if f is not None:
                    files[member.name] = f.read()
    index.update(files)
    stamps.clear()
    stamps.update(now)
    return index


def run_search(ctx: ToolContext, args: dict) -> str:
    kind = str(args.get("kind") or "definition")
    query = str(args.get("query") or "")
    index = sync_index(ctx)
    if kind == "map":
        return index.repo_map(max_chars=4000, mentioned=[query] if query else ())
    if not query:
        raise ToolError(f"search kind={kind} needs a query")
    if kind == "definition":
        return render_definitions(index.find_definition(query), query=query)
    if kind == "references":
        return render_references(index.find_references(query), query=query)
    if kind == "outline":
        return index.outline(query)
    raise ToolError(f"unknown search kind {kind!r}: use definition, references, outline or map")


SEARCH = Tool(
    "search", "Find code (tree-sitter): kind=definition (where `query` is defined), references (where it is "
    "used), outline (definitions in the file `query`), map (a compact map of the repository).",
    params(["query"], query={"type": "string"}, kind={"type": "string",
                                                      "enum": ["definition", "references", "outline", "map"]}),
    run_search)
