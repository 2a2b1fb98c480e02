"""File tools: `view` (numbered lines or a directory listing), `str_replace` and `create`."""

from __future__ import annotations

import shlex

from agent.tools.base import Tool, ToolContext, ToolError, params
from sandbox import SandboxDied, SandboxError


MAX_FILE_BYTES = 8 << 20
"""The largest file `view` and `str_replace` read (the sandbox refuses more: the agent is told to read parts with
bash); FIFOs, devices and sockets are refused without blocking, and a read that hangs is cut by the sandbox."""


def _read(ctx: ToolContext, path: str) -> str:
    try:
        return ctx.sandbox.read_file(path, max_bytes=MAX_FILE_BYTES).decode("utf-8", errors="replace")
    except SandboxDied:
        raise
    except SandboxError as e:
        why = str(e).split(": ", 2)[-1]
        hint = "; read parts of it with bash (sed -n '100,200p', grep -n, head)" if "over the limit" in why else ""
        raise ToolError(f"cannot read {path}: {why}{hint}") from None


def run_view(ctx: ToolContext, args: dict) -> str:
    path = str(args["path"])
    r = ctx.sandbox.exec(f"test -d {shlex.quote(path)}", timeout=10)
    if r.exit_code == 0:
        listing = ctx.sandbox.exec(f"find {shlex.quote(path)} -maxdepth 2 -not -path '*/.git*' | sort | head -200",
                                   timeout=30)
        return listing.output
    lines = _read(ctx, path).splitlines()
    start = int(args.get("start_line") or 1)
    end = int(args.get("end_line") or min(len(lines), start + 199))
    if start < 1 or (lines and start > len(lines)) or end < start:
        raise ToolError(f"bad line range {start}-{end}: {path} has {len(lines)} lines")
    body = "\n".join(f"{n:6d}\t{line}" for n, line in enumerate(lines[start - 1:end], start))
    more = f"\n[{len(lines) - end} more lines: view with start_line={end + 1}]" if end < len(lines) else ""
    return body + more


def run_str_replace(ctx: ToolContext, args: dict) -> str:
    path, old, new = str(args["path"]), str(args["old_str"]), str(args.get("new_str", ""))
    text = _read(ctx, path)
    count = text.count(old) if old else 0
    if count == 0:
        raise ToolError(f"old_str was not found in {path}; view the file and copy the text exactly")
    if count > 1:
        raise ToolError(f"old_str occurs {count} times in {path}; include more context to make it unique")
    updated = text.replace(old, new, 1)
    ctx.sandbox.write_file(path, updated)
    line = text[: text.index(old)].count("\n") + 1
    snippet = updated.splitlines()[max(line - 3, 0): line + new.count("\n") + 3]
    return f"edited {path}:\n" + "\n".join(f"{n:6d}\t{s}" for n, s in enumerate(snippet, max(line - 2, 1)))


def run_create(ctx: ToolContext, args: dict) -> str:
    path = str(args["path"])
    if ctx.sandbox.exec(f"test -e {shlex.quote(path)}", timeout=10).exit_code == 0:
        raise ToolError(f"{path} exists; use str_replace to change it")
    ctx.sandbox.write_file(path, str(args["content"]))
    return f"created {path}"


VIEW = Tool("view", "Show a file with line numbers (optionally a line range), or list a directory.",
            params(["path"], path={"type": "string"}, start_line={"type": "integer"}, end_line={"type": "integer"}),
            run_view)
STR_REPLACE = Tool("str_replace", "Replace an exact, unique string in a file with another.",
                   params(["path", "old_str"], path={"type": "string"}, old_str={"type": "string"},
                          new_str={"type": "string"}), run_str_replace)
CREATE = Tool("create", "Create a new file with the given content.",
              params(["path", "content"], path={"type": "string"}, content={"type": "string"}), run_create)
