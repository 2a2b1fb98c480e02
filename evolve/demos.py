"""Demonstrations for synthesised tasks: one scripted trajectory per task, acted out by the real agent loop.

The script is what a competent engineer does: run the failing tests, open the function, fix it with the
agent's own `str_replace` tool (one call per hunk of the gold patch, its context widened until the old text
is unique in the bugged file), run the tests again, submit. The scripts are trajectories (a JSONL file that
`--policy replay:FILE` reads); `demos` runs them through `run_swe` with that replay policy, so the stored
trajectories carry real observations and are graded like any run: `evolve train sft DIR` warm-starts a model
that cannot act yet.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

from agent.graph import Agent
from agent.replay import ReplayPolicy, ScriptedPolicy
from agent.variant import AgentVariant
from records import Message, Step, TaskInstance, ToolCall, Trajectory
from sandbox import WORKDIR, SandboxError
from sandbox.docker import docker_client
from tasks.synth.sources import HASH_SEED

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def hunks(patch: str) -> list[tuple[int, list[str], list[str]]]:
    """(first line on the old side, old lines, new lines) of each hunk of a one-file patch."""
    out: list[tuple[int, list[str], list[str]]] = []
    cur: tuple[int, list[str], list[str]] | None = None
    for line in patch.splitlines():
        m = HUNK.match(line)
        if m:
            cur = (int(m.group(1)), [], [])
            out.append(cur)
        elif cur is not None and line[:1] in (" ", "-", "+"):
            if line[:1] in (" ", "-"):
                cur[1].append(line[1:])
            if line[:1] in (" ", "+"):
                cur[2].append(line[1:])
        elif cur is not None and line.startswith("\\"):
            continue
    return out


def unique_edit(text: str, old: list[str], new: list[str], first: int) -> tuple[str, str]:
    """`str_replace` arguments for one hunk: its old and new text, widened by lines of the file around it until
    the old text occurs once."""
    lines = text.split("\n")
    start, end = first - 1, first - 1 + len(old)
    before, after = [], []
    while True:
        old_s = "\n".join(before + old + after)
        if text.count(old_s) <= 1 or (start <= 0 and end >= len(lines)):
            return old_s, "\n".join(before + new + after)
        if start > 0:
            start -= 1
            before.insert(0, lines[start])
        if end < len(lines):
            after.append(lines[end])
            end += 1


def read_from_image(image: str, path: str) -> str:
    """A file of `/testbed` in an image (no container is started)."""
    client = docker_client()
    container = client.containers.create(image, ["true"], network_mode="none")
    try:
        stream, _ = container.get_archive(f"{WORKDIR}/{path}")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            return tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - docker's NotFound and tar errors alike
        raise SandboxError(f"cannot read {path} from {image}: {e}") from None
    finally:
        container.remove(force=True)


def _call(think: str, name: str, **params: object) -> Message:
    call = json.dumps({"name": name, "parameters": params})
    return Message(role="assistant", content=f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>",
                   tool_calls=[ToolCall(name=name, arguments=dict(params))])


def test_targets(inst: TaskInstance, most: int = 3) -> str:
    """A few FAIL_TO_PASS tests as pytest arguments (their files where an id was cut at a space). They are run
    with the rows' `PYTHONHASHSEED=0`: some parametrized ids follow a set's order."""
    tests = inst.FAIL_TO_PASS[:most]
    if all(t.count("[") == t.count("]") and "::" in t for t in tests):
        return " ".join(f"'{t}'" for t in tests)
    return " ".join(sorted({t.split("::")[0] for t in tests}))


def script(inst: TaskInstance, bugged: str) -> list[Message]:
    """The demonstration's responses for one task, given the bugged file's text."""
    file, function = inst.extra["file"], inst.extra["function"]
    parts = hunks(inst.patch)
    targets = test_targets(inst)
    out = [_call("Let me run the failing tests to see the problem.", "bash",
                 command=f"{HASH_SEED} python3 -m pytest -q --tb=short -p no:cacheprovider {targets} 2>&1 | tail -40")]
    if parts:
        first = parts[0][0]
        out.append(_call(f"The failure points at `{function}` in {file}. Let me read it.", "view",
                         path=file, start_line=max(1, first - 5), end_line=first + len(parts[0][1]) + 5))
    text = bugged
    for n, (first, old, new) in enumerate(parts):
        old_s, new_s = unique_edit(text, old, new, first)
        why = "This is the bug; I fix it." if n == 0 else "Another part of the same bug."
        out.append(_call(why, "str_replace", path=file, old_str=old_s, new_str=new_s))
        text = text.replace(old_s, new_s, 1)
    out.append(_call("Now the tests again.", "bash",
                     command=f"{HASH_SEED} python3 -m pytest -q --tb=short -p no:cacheprovider {targets} 2>&1 | tail -5"))
    out.append(_call("The tests pass; I submit the fix.", "submit"))
    return out


def demo_trajectory(inst: TaskInstance, bugged: str, variant: AgentVariant) -> Trajectory:
    """The scripted trajectory of a task, with the prompt the agent will build for it (how replay finds it)."""
    prompt = Agent(policy=ScriptedPolicy([]), variant=variant).prompt(inst, WORKDIR)
    steps = [Step(index=i, response=m, tool_calls=list(m.tool_calls)) for i, m in enumerate(script(inst, bugged))]
    return Trajectory(instance_id=inst.instance_id, prompt=prompt, steps=steps, origin="demo:script",
                      policy="script", agent_variant=variant.name)


def write_scripts(instances: list[TaskInstance], path: Path, variant: AgentVariant) -> ReplayPolicy:
    """Write the scripts of ``instances`` (their images must exist) to ``path``; the replay policy of them."""
    trajs = [demo_trajectory(i, read_from_image(i.image, i.extra["file"]), variant) for i in instances]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t.model_dump_json() + "\n" for t in trajs))
    return ReplayPolicy(trajs, source=str(path))
