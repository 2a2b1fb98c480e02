"""The `Suite` interface: a named set of task instances, and the registry of suites."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

from records import TaskInstance
from tasks.errors import SuiteUnavailable

__all__ = ["Suite", "SuiteUnavailable"]


class Suite(ABC):
    """A set of task instances of one kind."""

    name: str
    """Name used on the command line."""
    kind: Literal["swe", "toolcall"]
    """`swe`: patch a repository, graded by tests. `toolcall`: answer with tool calls, graded by ToolRL."""
    description: str = ""

    @abstractmethod
    def instances(self, split: str | None = None) -> list[TaskInstance]:
        """All instances (of `split`, where the suite has splits)."""

    def select(self, ids: list[str] | None = None, limit: int | None = None,
               split: str | None = None, *, check: bool = True) -> list[TaskInstance]:
        """Instances filtered by id (in the order given) and cut to `limit`; each is checked (`validate`)
        before it is returned, so a bad row fails here, before any episode starts. ``check=False`` skips that
        check, for work that does not grade (making images present needs only the instance id)."""
        items = self.instances(split)
        if ids:
            by_id = {i.instance_id: i for i in items}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise SuiteUnavailable(f"suite {self.name!r} has no instance {missing[0]!r}; "
                                       f"`evolve tasks {self.name}` lists them")
            items = [by_id[i] for i in ids]
        chosen = items[:limit] if limit else items
        if check:
            self.validate(chosen)
        return chosen

    def validate(self, instances: list[TaskInstance]) -> None:
        """Raise a one-line `SuiteUnavailable` naming the first instance that cannot be graded. SWE suites
        check every field swebench's grading needs (`tasks.spec.validate`)."""
        if self.kind == "swe":
            from tasks.spec import validate  # loads swebench and datasets (seconds)

            validate(instances)
