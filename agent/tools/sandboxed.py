"""Sandbox-side tools: a variant's own tools, whose implementations run inside the sandbox, never on the host.

A variant directory's `tools/<name>/` holds `tool.yaml` (a description and the JSON schema of the
parameters) and `run`, an executable script starting with `#!`. The host only reads these files as data:
they are copied into the sandbox under `VARIANT_ROOT` and executed there. The contract of `run`:

- its JSON arguments arrive on stdin (and in the file named by `$EVOLVE_TOOL_ARGS`);
- it runs in the repository (`$EVOLVE_WORKDIR`, e.g. /testbed), with `$EVOLVE_VARIANT` the installed variant;
- what it prints (stdout and stderr) is the observation; a non-zero exit is shown as `[exit code N]`;
- it is killed at the run's command timeout, like a bash command.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field

from agent.tools.base import Tool, ToolContext, ToolError

VARIANT_ROOT = "/tmp/.evolve/variant"
"""Where a variant's tools/ and tests/ are installed inside a sandbox."""
_INSTALLED = "sandbox_tools_installed"
_CALLS = "sandbox_tool_calls"
_MISSING = 211  # exit code of the wrapper when the tool's script is gone (the agent removed it): reinstall


class SandboxToolSpec(BaseModel):
    """`tools/<name>/tool.yaml`: what the policy is told about a sandbox tool."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    """What the tool does, shown to the policy."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema of the arguments: an object schema with `properties` (and optionally `required`)."""


def check_parameters_schema(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot describe a tool's arguments, or None when it can."""
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        return f"not a valid JSON schema: {e.message}"
    if schema.get("type") != "object":
        return 'its type must be "object"'
    props = schema.get("properties")
    if not isinstance(props, dict):
        return "it needs `properties` (an object, possibly empty)"
    missing = [r for r in schema.get("required", []) if r not in props]
    if missing:
        return f"required names {missing} are not among its properties"
    return None


@dataclass(frozen=True)
class VariantFiles:
    """The files of a variant that are installed into sandboxes (tools/ and tests/), read once at load."""

    files: tuple[tuple[str, bytes], ...]
    """(path relative to the variant directory, bytes), sorted by path."""

    def install(self, ctx: ToolContext, root: str = VARIANT_ROOT) -> None:
        """Copy the files into the sandbox under `root` (replacing what is there) and make scripts executable."""
        sb = ctx.sandbox
        sb.exec(f"rm -rf {shlex.quote(root)} && mkdir -p {shlex.quote(root)}", timeout=30)
        for rel, data in self.files:
            sb.write_file(f"{root}/{rel}", data)
        scripts = [f"{root}/{rel}" for rel, data in self.files if data.startswith(b"#!")]
        if scripts:
            r = sb.exec("chmod +x " + " ".join(shlex.quote(s) for s in scripts), timeout=30)
            if r.exit_code != 0:
                raise ToolError(f"could not install the variant's tools in the sandbox: {r.output[-300:]}")
        ctx.state[_INSTALLED] = True


def _format(out: str, exit_code: int, timed_out: bool, timeout: float) -> str:
    if timed_out:
        out += f"\n[tool timed out after {timeout:.0f} s and was killed]"
    elif exit_code != 0:
        out += f"\n[exit code {exit_code}]"
    return out or "[no output]"


def sandbox_tool(name: str, spec: SandboxToolSpec, files: VariantFiles) -> Tool:
    """A `Tool` whose calls run `tools/<name>/run` inside the sandbox."""
    validator = jsonschema.Draft202012Validator(spec.parameters)

    def run(ctx: ToolContext, args: dict[str, Any]) -> str:
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise ToolError(f"bad arguments for {name}{' at ' + where if where else ''}: {error.message}")
        if not ctx.state.get(_INSTALLED):
            files.install(ctx)
        n = ctx.state[_CALLS] = ctx.state.get(_CALLS, 0) + 1
        wd = shlex.quote(ctx.sandbox.workdir)
        args_file = f"{VARIANT_ROOT}/calls/{n}.json"
        script = shlex.quote(f"{VARIANT_ROOT}/tools/{name}/run")
        cmd = (f"[ -x {script} ] || exit {_MISSING}; EVOLVE_TOOL_ARGS={args_file} EVOLVE_WORKDIR={wd} "
               f"EVOLVE_VARIANT={VARIANT_ROOT} {script} < {args_file}; rc=$?; rm -f {args_file}; exit $rc")
        for _ in range(2):
            ctx.sandbox.write_file(args_file, json.dumps(args))
            r = ctx.sandbox.exec(cmd, timeout=ctx.command_timeout, cwd=ctx.sandbox.workdir)
            if r.exit_code != _MISSING:
                break
            files.install(ctx)  # removed or broken inside the sandbox: reinstall once and call again
        return _format(r.output, r.exit_code, r.timed_out, ctx.command_timeout)

    return Tool(name, spec.description, spec.parameters, run)
