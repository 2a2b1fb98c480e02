"""`undo`: put the workspace files back as they were before the agent's k most recent tool-calling steps.

Before each tool-calling step the loop calls `checkpoint`: the files under the workdir that git does not
ignore are written as a git tree through a private index (`<git-dir>/evolve-undo-index`), so the
repository's own index, and anything the agent staged, stay untouched; the tree's id is appended to a
stack file in the sandbox's git dir. After the first call the private
index caches file stats, so a checkpoint re-hashes only changed files. `undo` switches the working tree
from its current state to a recorded tree with `git read-tree -m -u`: changed files are rewritten, files
created since are removed, nothing else is touched. Files only: shell state (cwd, variables) and running
processes are not rolled back, and git-ignored files are neither recorded nor restored.

The checkpoint costs a few milliseconds of git work in the sandbox per tool-calling step (see
`bench/bench_harness.py`), so the default variant leaves `undo` out; a variant lists it to offer it, and
Agent-R, whose revision turns are undo calls, adds it with `agent.variant.with_undo`.
"""

from __future__ import annotations

import logging
import re
import shlex

from agent.tools.base import Tool, ToolContext, ToolError, params

log = logging.getLogger(__name__)

STACK_FILE = "evolve-undo-stack"
"""In the sandbox's git dir: one line `STEP TREE` per tool-calling step, oldest first (`-`: not recorded).
Kept in the sandbox, so a continued episode (replayed prefix, snapshot) can undo into the earlier steps."""
INDEX_FILE = "evolve-undo-index"
_GIT_DIR = "undo_git_dir"  # ctx.state key: the workspace's absolute git dir ("" when it is not a repository)
_TREE = re.compile(r"^[0-9a-f]{40,64}$")


def _git_dir(ctx: ToolContext) -> str:
    """The workspace's absolute git dir, resolved once per episode ("" where the workspace is no repository)."""
    if _GIT_DIR not in ctx.state:
        r = ctx.sandbox.exec(f"cd {shlex.quote(ctx.sandbox.workdir)} && git rev-parse --absolute-git-dir",
                             timeout=30)
        ctx.state[_GIT_DIR] = r.output.strip() if r.exit_code == 0 and r.output.strip().startswith("/") else ""
    return ctx.state[_GIT_DIR]


def _cmd(ctx: ToolContext, body: str) -> str:
    """`body` in the workdir with git using the private index (seeded from the repository's, for its stat cache)."""
    gd = _git_dir(ctx)
    index, real = shlex.quote(f"{gd}/{INDEX_FILE}"), shlex.quote(f"{gd}/index")
    return (f"cd {shlex.quote(ctx.sandbox.workdir)} && export GIT_INDEX_FILE={index}; "
            f"[ -f {index} ] || cp {real} {index} 2>/dev/null; {body}")


def snapshot_tree(ctx: ToolContext) -> str | None:
    """The workspace as a git tree (sha), or None where it cannot be recorded (not a git repository)."""
    if not _git_dir(ctx):
        return None
    r = ctx.sandbox.exec(_cmd(ctx, "git add -A . >/dev/null && git write-tree"), timeout=120)
    tree = r.output.strip().splitlines()[-1] if r.output.strip() else ""
    if r.exit_code != 0 or not _TREE.match(tree):
        log.debug("workspace snapshot failed in %s: %s", ctx.sandbox.workdir, r.output[-300:])
        return None
    return tree


def _stack(ctx: ToolContext) -> str:
    return shlex.quote(f"{_git_dir(ctx)}/{STACK_FILE}")


def checkpoint(ctx: ToolContext, step_index: int) -> None:
    """Record the workspace before step `step_index` runs its tool calls (the loop calls this)."""
    if not _git_dir(ctx):
        return
    ctx.sandbox.exec(_cmd(ctx, f"t=-; git add -A . >/dev/null && t=$(git write-tree); "
                               f"echo \"{int(step_index)} $t\" >> {_stack(ctx)}"), timeout=120)


def clear_checkpoints(ctx: ToolContext) -> None:
    """Forget recorded checkpoints (a new episode starts at the base commit)."""
    if _git_dir(ctx):
        ctx.sandbox.exec(f"rm -f {_stack(ctx)}", timeout=30)


def checkpoints(ctx: ToolContext) -> list[tuple[int, str | None]]:
    """The recorded checkpoints, oldest first: (step index, tree or None)."""
    if not _git_dir(ctx):
        return []
    r = ctx.sandbox.exec(f"cat {_stack(ctx)} 2>/dev/null", timeout=30)
    out = []
    for line in r.output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1] if _TREE.match(parts[1]) else None))
    return out


def restore_tree(ctx: ToolContext, tree: str) -> str:
    """Make the workspace files equal to `tree`; returns `git diff-tree --name-status` of what changed."""
    t = shlex.quote(tree)
    r = ctx.sandbox.exec(_cmd(ctx, f"git add -A . >/dev/null && cur=$(git write-tree) && "
                                   f"git diff-tree -r --no-renames --name-status $cur {t} && "
                                   f"git read-tree -m -u $cur {t}"), timeout=120)
    if r.exit_code != 0:
        raise ToolError(f"undo failed: {r.output.strip()[-400:]}")
    return r.output.strip()


def run_undo(ctx: ToolContext, args: dict) -> str:
    steps = args.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ToolError(f"steps must be a positive integer, got {steps!r}")
    stack = checkpoints(ctx)
    # The newest entry is this step's own checkpoint (taken before it ran); the k steps before it are undone.
    earlier = len(stack) - 1
    if earlier < steps:
        raise ToolError(f"only {max(earlier, 0)} earlier tool-calling step(s) can be undone")
    index, tree = stack[-(steps + 1)]
    if tree is None:
        raise ToolError(f"the workspace before step {index + 1} was not recorded (not a git repository?)")
    changed = restore_tree(ctx, tree)
    # The undone steps and this one leave the history: a second undo goes further back.
    keep = len(stack) - (steps + 1)
    ctx.sandbox.exec(f'S={_stack(ctx)}; head -n {keep} "$S" > "$S.new" && mv "$S.new" "$S"', timeout=30)
    files = "\n".join(changed.splitlines()[:50]) or "(no file differed)"
    return f"restored the files to their state before step {index + 1} ({steps} step(s) undone):\n{files}"


UNDO = Tool("undo", "Restore the repository's files to their state before your last `steps` tool-calling steps "
            "(default 1); shell state and running processes are not rolled back.",
            params([], steps={"type": "integer", "minimum": 1, "description": "how many steps to undo"}), run_undo)

