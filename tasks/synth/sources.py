"""Sources of synthesised tasks: what a user names on the command line, resolved to a repository to test.

    bundled                 every bundled repository          bundled:NAME   one of them
    pypi                    every package of the catalog      NAME / NAME==VERSION   one package (pinned)
    PATH                    a local git repository (its HEAD; tests found under tests/, test/ or test_*.py)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tasks.bundled.materialize import names as bundled_names
from tasks.suite import SuiteUnavailable
from tasks.synth import catalog

TEST_DIR_NAMES = ("tests", "test", "testing")
HASH_SEED = "PYTHONHASHSEED=0"


class SourceError(SuiteUnavailable):
    """A source cannot be used (unknown name, not a git repository, tests not green); says why."""


class Source(BaseModel):
    """One repository to synthesise tasks from, and how its tests run."""

    name: str
    """Short name, unique among sources: `toolz`, `bundled-cachebox`, `git-myrepo`."""
    kind: Literal["bundled", "pypi", "git"]
    spec: str
    """What rebuilds it: `pypi:NAME==VERSION`, `bundled:NAME`, `git:/abs/path`."""
    version: str = ""
    tests: list[str] = Field(default_factory=list)
    """Test paths given to pytest (relative to the repository root)."""
    code: list[str] = Field(default_factory=list)
    """Files and directories whose functions and classes get bugs (empty: every non-test `.py` file)."""
    import_root: str = ""
    pytest_args: list[str] = Field(default_factory=list)
    deps: list[str] = Field(default_factory=list)

    @property
    def repo(self) -> str:
        """The `repo` field of its rows (SWE-bench's `owner/name`)."""
        return f"evolve-synth/{self.name}"

    @property
    def category_name(self) -> str:
        return self.name

    def test_command(self, tests: list[str] | None = None) -> str:
        """The command that runs its tests with per-test results (`-rA`: swebench's pytest log parser). String
        hashing is seeded (`PYTHONHASHSEED=0`, as in the validation runs): some suites build parametrized test
        ids from sets, whose order, and so the ids, would change from one interpreter to the next. ``tests``: run
        only those test paths (default: the source's)."""
        args = ["python3", "-m", "pytest", *self.pytest_argv(tests)]
        return f"{HASH_SEED} " + " ".join(shlex.quote(a) if a else "''" for a in args)

    def pytest_argv(self, tests: list[str] | None = None) -> list[str]:
        """The same as `test_command`, as pytest's own arguments. `--color=no` wins over a configured
        `addopts = --color=yes` (coloured status lines are not read by the log parser)."""
        return ["-rA", "-p", "no:cacheprovider", "--color=no", *self.pytest_args, *(tests or self.tests)]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "repo"


def pypi_source(spec: catalog.PackageSpec) -> Source:
    return Source(name=spec.source_name, kind="pypi", spec=f"pypi:{spec.name}=={spec.version}", version=spec.version,
                  tests=spec.tests, code=spec.code, import_root=spec.import_root, pytest_args=spec.pytest_args,
                  deps=spec.deps)


def bundled_source(name: str) -> Source:
    return Source(name=f"bundled-{name}", kind="bundled", spec=f"bundled:{name}", tests=["tests"])


def git_source(path: Path) -> Source:
    path = path.resolve()
    if not (path / ".git").exists():
        raise SourceError(f"{path} is not a git repository (no .git): a local source must be one")
    tests = [d for d in TEST_DIR_NAMES if (path / d).is_dir()]
    tests += sorted(p.name for p in path.glob("test_*.py")) if not tests else []
    if not tests:
        raise SourceError(f"{path}: no tests found (a tests/ or test/ directory, or test_*.py files)")
    return Source(name=f"git-{_slug(path.name)}", kind="git", spec=f"git:{path}", tests=tests)


def resolve(args: list[str]) -> list[Source]:
    """Sources from command-line words; one-line `SourceError` for a name that is none of them."""
    out: list[Source] = []
    for arg in args:
        if arg == "bundled":
            out += [bundled_source(n) for n in bundled_names()]
        elif arg.startswith("bundled:"):
            name = arg.split(":", 1)[1]
            if name not in bundled_names():
                raise SourceError(f"no bundled repository {name!r}; they are: {', '.join(bundled_names())}")
            out.append(bundled_source(name))
        elif arg == "pypi":
            out += [pypi_source(p) for p in catalog.PACKAGES]
        elif arg.startswith("git:") or "/" in arg or Path(arg).is_dir():
            out.append(git_source(Path(arg.removeprefix("git:"))))
        else:
            name, _, version = arg.removeprefix("pypi:").partition("==")
            spec = catalog.find(name, version or None)
            if spec is None:
                known = ", ".join(f"{p.name}=={p.version}" for p in catalog.PACKAGES)
                have = catalog.find(name)
                why = (f"only {have.name}=={have.version} is pinned" if have else
                       "it is not a bundled repository, a local git repository or a package of the catalog")
                raise SourceError(f"unknown source {arg!r}: {why}. The catalog: {known}")
            out.append(pypi_source(spec))
    seen: set[str] = set()
    unique = []
    for s in out:
        if s.name not in seen:
            seen.add(s.name)
            unique.append(s)
    if not unique:
        raise SourceError("no sources given: name bundled, pypi, a package (toolz==1.2.0) or a git repository")
    return unique


def from_spec(spec: str) -> Source:
    """The source a row's `extra.source_spec` names (to rebuild its image)."""
    kind, _, rest = spec.partition(":")
    if kind == "bundled":
        return bundled_source(rest)
    if kind == "git":
        return git_source(Path(rest))
    if kind == "pypi":
        name, _, version = rest.partition("==")
        found = catalog.find(name, version or None)
        if found is None:
            raise SourceError(f"source {spec!r} is not in this version's catalog")
        return pypi_source(found)
    raise SourceError(f"unknown source spec {spec!r}")
