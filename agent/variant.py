"""An agent variant: a small directory under git that defines an agent and that an agent can edit safely.

    variant.yaml          prompts, tool list, loop knobs (this module's `AgentVariant`)
    tools/<name>/         sandbox-side tools: tool.yaml (description + JSON schema) and `run` (a #! script)
    tests/test_*          the variant's own tests of its tools, run inside a sandbox

The Huxley-Gödel Machine copies a variant, lets an agent modify it, and evaluates the result. A variant
is loaded on the host only as data (YAML, JSON schemas, file bytes); its scripts are copied into the
sandbox and run there. Sandbox limits, network and timeouts belong to the run's configuration: a variant
has no field for them, and the command timeout it sets is capped by the run's. Every model forbids
unknown fields, so a typo or an attempt to set something a variant does not own is rejected.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agent.tools import TOOLS, Tool
from agent.tools.sandboxed import SandboxToolSpec, VariantFiles, check_parameters_schema, sandbox_tool
from agent.variant_safety import read_regular, unsafe_entry

DEFAULT_VARIANT = Path(__file__).parent / "variants" / "default"
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
REQUIRED_TOOLS = ("submit",)
"""Host tools every variant keeps (and may not replace): submit ends the episode and takes the patch."""


class VariantError(ValueError):
    """A variant directory cannot be used; the one-line message says which file and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(Strict):
    """When an episode (one attempt) stops if the agent has not submitted."""

    max_steps: int = Field(default=30, ge=1)
    """Most policy calls."""
    max_tokens: int = Field(default=200_000, ge=1)
    """Most prompt + completion tokens over the episode."""
    max_seconds: float = Field(default=1800.0, gt=0)
    """Most wall-clock seconds."""
    max_cost: float = Field(default=0.0, ge=0)
    """Most dollars (0: no limit), counted with `cost_per_1k_tokens`."""
    cost_per_1k_tokens: float = Field(default=0.0, ge=0)
    """Price of 1,000 tokens for the cost budget (hosted APIs)."""


class History(Strict):
    """How old tool observations are shown to the policy. The stored trajectory always keeps them whole."""

    keep_last: int = Field(default=0, ge=0)
    """Observations shown whole, counting from the newest; older ones become `elided_template` (0: all whole)."""
    elided_template: str = "[output of step {step} elided ({chars} characters); run it again if you need it]"
    """One-line notice that replaces an old observation; `{step}` (1-based) and `{chars}` are filled in."""


class PreSubmitCheck(Strict):
    """A command run in the sandbox when the agent submits (e.g. the repository's tests)."""

    command: str = ""
    """Shell command run in the workdir at submit (e.g. `python -m pytest -x -q`); empty: no check."""
    timeout: float = Field(default=300.0, gt=0)
    """Seconds the check may run; capped by the run's command timeout."""
    refuse_times: int = Field(default=1, ge=0)
    """How many failing checks refuse a submit (the agent sees the output and goes on); 0: only show it."""
    max_output_chars: int = Field(default=3000, ge=100)
    """The check's output shown to the agent is cut to this many characters (head and tail)."""
    failed_template: str = ("The check before submit failed (`{command}`, exit code {exit_code}):\n{output}\n"
                            "Fix the problem, then submit again.")
    """Shown when a failing check refuses the submit; `{command}`, `{exit_code}` and `{output}` are filled in."""


class Attempts(Strict):
    """Several independent attempts at one task, the best chosen by signals the agent itself can see."""

    k: int = Field(default=1, ge=1, le=8)
    """Attempts per task; the sandbox is reset to the base commit between them."""
    stop_on_success: bool = True
    """Stop early once an attempt submits a non-empty patch that passes the pre-submit check (if any)."""


class EmptyPatch(Strict):
    """What happens when the agent submits without having changed anything."""

    action: Literal["submit", "retry_once"] = "submit"
    """`submit`: accept the empty patch; `retry_once`: refuse the first such submit with `nudge`."""
    nudge: str = ("You submitted without changing any file, so the patch is empty. Edit the source to resolve "
                  "the issue, then submit.")
    """Observation shown when an empty submit is refused (no template keys)."""


TEMPLATE_KEYS: dict[str, set[str]] = {
    "system_template": {"tools", "workdir"},
    "instance_template": {"problem_statement", "workdir"},
    "observation_template": {"observation"},
    "format_error_template": {"error"},
    "history.elided_template": {"step", "chars"},
    "pre_submit_check.failed_template": {"command", "exit_code", "output"},
    "empty_patch.nudge": set(),
}
"""The `{keys}` each template may use (`{{` and `}}` are literal braces)."""


def template_keys(text: str) -> set[str]:
    """Names of the `{fields}` in a str.format template; ValueError on unbalanced braces."""
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


class AgentVariant(Strict):
    """Everything that defines one agent's behaviour (`variant.yaml`)."""

    name: str = "default"
    """Variant name (a hash of its contents is added when stored)."""
    system_template: str
    """System prompt; `{tools}` is replaced by the tool descriptions, `{workdir}` by the repository path."""
    instance_template: str
    """First user message; `{problem_statement}` and `{workdir}` are filled in."""
    observation_template: str = "<tool_response>\n{observation}\n</tool_response>"
    """How tool results are shown to the policy (text protocol)."""
    format_error_template: str = ("Your last message had no valid tool call: {error}\n"
                                  "Reply with <think>...</think> then <tool_call>...</tool_call>.")
    """Observation after a response that could not be parsed."""
    tools: list[str] = Field(default_factory=lambda: ["bash", "view", "str_replace", "create", "search", "submit"])
    """Tools the agent may call, by name: host tools (`agent/tools`) or this variant's `tools/<name>/`."""
    tool_descriptions: dict[str, str] = Field(default_factory=dict)
    """New descriptions for host tools, by name (what the policy reads; the behaviour stays)."""
    native_tools: bool = False
    """Use the server's native tool calling (OpenAI-compatible servers) instead of the text protocol."""
    max_observation_chars: int = Field(default=6000, ge=200)
    """Tool output longer than this is cut to its head and tail with a notice."""
    temperature: float = Field(default=0.0, ge=0)
    """Sampling temperature for the policy."""
    max_tokens_per_step: int = Field(default=512, ge=1)
    """Most tokens the policy may generate per step."""
    budget: Budget = Field(default_factory=Budget)
    """When an attempt stops without a submit."""
    command_timeout: float = Field(default=120.0, gt=0)
    """Seconds before a command or sandbox tool is killed; capped by the run's command timeout."""
    history: History = Field(default_factory=History)
    """History compaction: how old observations are elided from the policy's prompt."""
    pre_submit_check: PreSubmitCheck = Field(default_factory=PreSubmitCheck)
    """A check run in the sandbox before submit; its output is shown, a failure refuses the submit."""
    attempts: Attempts = Field(default_factory=Attempts)
    """Several attempts per task, the best chosen by visible signals."""
    empty_patch: EmptyPatch = Field(default_factory=EmptyPatch)
    """What to do when the agent submits an empty patch."""

    _directory: Path | None = PrivateAttr(default=None)
    _sandbox_specs: dict[str, SandboxToolSpec] = PrivateAttr(default_factory=dict)
    _files: VariantFiles = PrivateAttr(default_factory=lambda: VariantFiles(()))

    @model_validator(mode="after")
    def _check(self) -> "AgentVariant":
        for name in REQUIRED_TOOLS:
            if name not in self.tools:
                raise ValueError(f"`tools` must include {name!r} (it ends the episode and takes the patch)")
        dupes = sorted({t for t in self.tools if self.tools.count(t) > 1})
        if dupes:
            raise ValueError(f"`tools` names {dupes} more than once")
        bad = [t for t in self.tools if not TOOL_NAME.match(t)]
        if bad:
            raise ValueError(f"bad tool names {bad}: use lower-case letters, digits and _")
        stray = sorted(set(self.tool_descriptions) - set(self.tools))
        if stray:
            raise ValueError(f"`tool_descriptions` names tools that are not in `tools`: {stray}")
        for path, allowed in TEMPLATE_KEYS.items():
            obj: Any = self
            for part in path.split("."):
                obj = getattr(obj, part)
            try:
                keys = template_keys(obj)
            except ValueError as e:
                raise ValueError(f"{path}: {e} (write {{{{ and }}}} for literal braces)") from None
            unknown = sorted(keys - allowed)
            if unknown:
                raise ValueError(f"{path} uses unknown key(s) {', '.join('{' + k + '}' for k in unknown)}; "
                                 f"it may use {', '.join('{' + k + '}' for k in sorted(allowed)) or 'none'} "
                                 "(write {{ and }} for literal braces)")
        return self

    # --- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path = DEFAULT_VARIANT) -> "AgentVariant":
        """Read and validate a variant directory; `VariantError` with a one-line reason when it is unusable."""
        root = Path(directory)
        path = root / "variant.yaml"
        if not os.path.lexists(path):
            raise VariantError(f"{root} is not an agent variant (no variant.yaml)")
        problem = unsafe_entry(root)  # a link or a FIFO anywhere is refused before any file is read
        if problem:
            raise VariantError(problem)
        try:
            data = yaml.safe_load(read_regular(path).decode())
        except OSError as e:
            raise VariantError(f"{path}: {e.strerror or e}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise VariantError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise VariantError(f"{path}: must be a mapping of settings, not {type(data).__name__}")
        try:
            variant = cls.model_validate(data)
        except ValidationError as e:
            raise VariantError(f"{path}: {_one_line(e)}") from None
        variant._directory = root.resolve()
        variant._sandbox_specs, variant._files = _read_sandbox_side(root)
        variant.resolve_tools()
        missing = [n for n in variant.sandbox_tools if n in variant.tools and not any(
            rel.startswith(f"tests/test_{n}") for rel, _ in variant._files.files)]
        if missing:
            raise VariantError(f"{root}: sandbox tool(s) {missing} have no test (tests/test_<tool>...)")
        return variant

    @property
    def directory(self) -> Path | None:
        """The directory this variant was loaded from (None when built in code)."""
        return self._directory

    @property
    def sandbox_tools(self) -> dict[str, SandboxToolSpec]:
        """The variant's own tools (from tools/), enabled or not."""
        return dict(self._sandbox_specs)

    @property
    def files(self) -> VariantFiles:
        """tools/ and tests/ as loaded: what is installed into sandboxes."""
        return self._files

    def resolve_tools(self) -> dict[str, Tool]:
        """The tools the agent may call, in order: sandbox tools first by name, then host tools."""
        out: dict[str, Tool] = {}
        for name in self.tools:
            if name in self._sandbox_specs:
                out[name] = sandbox_tool(name, self._sandbox_specs[name], self._files)
            elif name in TOOLS:
                tool = TOOLS[name]
                if name in self.tool_descriptions:
                    tool = Tool(tool.name, self.tool_descriptions[name], tool.parameters, tool.run)
                out[name] = tool
            else:
                known = sorted(set(TOOLS) | set(self._sandbox_specs))
                raise VariantError(f"{self._where()}tools: unknown tool {name!r} (variant {self.name!r}); "
                                   f"known: {', '.join(known)}")
        for name in self.tool_descriptions:
            if name in self._sandbox_specs:
                raise VariantError(f"{self._where()}tool_descriptions: {name!r} is a sandbox tool; "
                                   f"edit tools/{name}/tool.yaml")
        return out

    def __eq__(self, other: object) -> bool:
        """Same settings and the same tools/ and tests/ files (where each was loaded from does not matter)."""
        if not isinstance(other, AgentVariant):
            return NotImplemented
        return self.model_dump() == other.model_dump() and self._files == other._files

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    def _where(self) -> str:
        return f"{self._directory / 'variant.yaml'}: " if self._directory is not None else ""

    def save(self, directory: str | Path) -> Path:
        """Write variant.yaml (and copy tools/ and tests/ when loaded from another directory)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "variant.yaml").write_text(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False,
                                                          allow_unicode=True, width=100))
        if self._directory is not None and self._directory != path.resolve():
            for part in ("tools", "tests"):
                if (self._directory / part).is_dir():
                    shutil.copytree(self._directory / part, path / part, dirs_exist_ok=True)
        return path

    def fingerprint(self) -> str:
        """`name@hash` over the settings and every file of tools/ and tests/: the exact variant that acted."""
        h = hashlib.sha256(self.model_dump_json().encode())
        for rel, data in self._files.files:
            h.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(data).digest())
        return f"{self.name}@{h.hexdigest()[:10]}"


def with_undo(variant: AgentVariant) -> AgentVariant:
    """`variant` offering the `undo` tool (listed before `submit`); the same object when it already does."""
    if "undo" in variant.tools:
        return variant
    tools = [t for t in variant.tools if t != "submit"] + ["undo"] + (["submit"] if "submit" in variant.tools else [])
    return variant.model_copy(update={"tools": tools})


def _one_line(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (a variant may not set it)"
        parts.append(f"{where}: {msg}" if where else msg)
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    return "; ".join(parts) + more


def _read(path: Path) -> bytes:
    """A variant file's bytes, never through a symbolic link (`VariantError` naming the file otherwise)."""
    try:
        return read_regular(path)
    except OSError as e:
        raise VariantError(f"{path}: {e.strerror or e}") from None


def _read_sandbox_side(root: Path) -> tuple[dict[str, SandboxToolSpec], VariantFiles]:
    """The specs of tools/ and the bytes of tools/ and tests/ (never executed here)."""
    specs: dict[str, SandboxToolSpec] = {}
    files: list[tuple[str, bytes]] = []
    for part in ("tools", "tests"):
        base = root / part
        if base.exists() and not base.is_dir():
            raise VariantError(f"{base}: must be a directory")
        for f in sorted(base.rglob("*")) if base.is_dir() else []:
            if f.is_symlink():
                raise VariantError(f"{f}: symbolic links are not allowed in a variant")
            if f.is_file() and "__pycache__" not in f.parts:
                files.append((f.relative_to(root).as_posix(), _read(f)))
    tools_dir = root / "tools"
    for d in sorted(tools_dir.iterdir()) if tools_dir.is_dir() else []:
        if not d.is_dir():
            raise VariantError(f"{d}: tools/ holds one directory per tool (tools/<name>/tool.yaml and run)")
        if d.name == "__pycache__":
            continue
        if not TOOL_NAME.match(d.name):
            raise VariantError(f"{d}: bad tool name; use lower-case letters, digits and _")
        if d.name in REQUIRED_TOOLS:
            raise VariantError(f"{d}: {d.name!r} is a host tool a variant may not replace")
        spec_path, run = d / "tool.yaml", d / "run"
        if not spec_path.is_file():
            raise VariantError(f"{d}: no tool.yaml (description and parameters)")
        if not run.is_file():
            raise VariantError(f"{d}: tool {d.name!r} has no implementation (an executable `run` script)")
        if not _read(run).startswith(b"#!"):
            raise VariantError(f"{run}: must start with a #! line naming its interpreter")
        try:
            raw = yaml.safe_load(_read(spec_path).decode())
            spec = SandboxToolSpec.model_validate(raw if raw is not None else {})
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise VariantError(f"{spec_path}: not valid YAML: {' '.join(str(e).split())}") from None
        except ValidationError as e:
            raise VariantError(f"{spec_path}: {_one_line(e)}") from None
        problem = check_parameters_schema(spec.parameters)
        if problem:
            raise VariantError(f"{spec_path}: bad parameters schema: {problem}")
        specs[d.name] = spec
    tests_dir = root / "tests"
    for f in sorted(tests_dir.iterdir()) if tests_dir.is_dir() else []:
        if f.is_file() and f.name.startswith("test_") and not _read(f).startswith(b"#!"):
            raise VariantError(f"{f}: a variant test must start with a #! line naming its interpreter")
    return specs, VariantFiles(tuple(files))
