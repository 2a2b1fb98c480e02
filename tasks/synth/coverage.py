"""What the original code's tests ran (recorded by the container runner in the baseline's first run): which
functions each test file called, and which lines ran at all. Synthesis uses it twice:

* a bug whose changed lines never ran cannot change what any test sees: it is not tried (`ran`);
* a bug is tested, and its task graded, with only the test files that ran the changed function or class
  (`test_files`), as SWE-bench runs only the test files of an instance: the other files never call it. Calls made
  outside any test file (a session fixture, a conftest), or a repository whose test ids are not paths from its
  root, mean the whole suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.synth.families import Entity, Mutation

Location = tuple[str, int]
"""(file relative to the repository root, line)."""


@dataclass
class Coverage:
    calls: dict[str, set[Location]] = field(default_factory=dict)
    """Test file ('' = outside any test file) -> first lines of the functions it called."""
    lines: set[Location] = field(default_factory=set)
    """Lines of the code files that ran."""
    selectable: bool = True
    """Test ids start with their file's path (pytest's root is the repository's): files can be selected."""

    @classmethod
    def from_json(cls, data: dict | None) -> "Coverage | None":
        if not data:
            return None
        calls = {k: {(f, int(n)) for f, n in v} for k, v in data.get("calls", {}).items()}
        return cls(calls=calls, lines={(f, int(n)) for f, n in data.get("lines", [])},
                   selectable=not data.get("mismatch", False))

    def functions(self) -> set[Location]:
        """Every function that ran (by its first line, decorators included)."""
        out: set[Location] = set()
        for fns in self.calls.values():
            out |= fns
        return out

    def ran(self, m: Mutation, content: bytes) -> bool:
        """Some line the mutation changes ran under the original code."""
        first = content.count(b"\n", 0, m.start) + 1
        last = content.count(b"\n", 0, max(m.start, m.end - 1)) + 1
        return any((m.entity.file, n) in self.lines for n in range(first, last + 1))

    def test_files(self, entity: Entity) -> list[str] | None:
        """The test files that ran code of the entity (a function, or any method of a class), sorted; None for
        the whole suite (calls outside test files, or test files that cannot be selected)."""
        files = {tf for tf, fns in self.calls.items()
                 if any(f == entity.file and entity.start_line <= n <= entity.end_line for f, n in fns)}
        if not self.selectable or not files or "" in files:
            return None
        return sorted(files)
