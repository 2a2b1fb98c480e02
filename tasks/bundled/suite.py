"""`BundledSuite`: the bundled repositories' task instances, read from `instances.jsonl`."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from records import TaskInstance
from tasks.suite import Suite, SuiteUnavailable

INSTANCES_PATH = Path(__file__).resolve().parent / "instances.jsonl"
GRADING = {"log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}
"""How swebench judges every bundled instance: its `test_cmd` is `python3 -m pytest -rA ...`."""


@lru_cache(maxsize=1)
def _load() -> tuple[TaskInstance, ...]:
    if not INSTANCES_PATH.is_file():
        raise SuiteUnavailable(f"{INSTANCES_PATH} is missing; regenerate it with "
                               "`python -m tasks.bundled.build_instances build`")
    items = []
    for n, line in enumerate(INSTANCES_PATH.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(TaskInstance.model_validate(json.loads(line)))
            except ValueError as exc:
                raise SuiteUnavailable(f"{INSTANCES_PATH}:{n} is not a valid task instance: {exc}") from exc
    return tuple(sorted(items, key=lambda i: i.instance_id))


class BundledSuite(Suite):
    """Small Python repositories written for this project, one SWE-style issue each."""

    name = "bundled"
    kind = "swe"
    description = ("Small self-contained Python repositories (stdlib + pytest), one real bug each, "
                   "graded SWE-bench style by FAIL_TO_PASS / PASS_TO_PASS.")

    def instances(self, split: str | None = None) -> list[TaskInstance]:
        """All instances, sorted by id (the suite has no splits; `split` is ignored). Copies: edit freely."""
        return [i.model_copy(deep=True, update=GRADING) for i in _load()]
