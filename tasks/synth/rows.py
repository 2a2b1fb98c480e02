"""A validated bug as a SWE-bench row (the current format: `image`, `eval_script`, `log_parser`, `eval_type`)."""

from __future__ import annotations

import shlex

from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT

from records import TaskInstance
from tasks.synth.env_image import task_image_tag
from tasks.synth.sources import Source

SUITE_PREFIX = "synth"
LOG_PARSER = "parse_log_pytest"


def instance_id(source: Source, key: str) -> str:
    return f"synth__{source.name}-{key}"


def category(source_name: str, family: str) -> str:
    """The curriculum's arm: source x bug family."""
    return f"{source_name}/{family}"


def eval_script(source: Source, base_commit: str, tests: list[str] | None = None) -> str:
    """SWE-bench's eval script shape: the test files back to the task's commit (a patch's edits to tests never
    grade it), the task's test files (``tests``; None: the whole suite) between swebench's markers, the test files
    back again."""
    every = " ".join(shlex.quote(t) for t in source.tests)
    reset = f"git checkout {base_commit} -- {every}"
    return "\n".join(["#!/bin/bash", "set -uxo pipefail", "cd /testbed", reset, f": '{START_TEST_OUTPUT}'",
                      source.test_command(tests), f": '{END_TEST_OUTPUT}'", reset, ""])


def make_row(*, source: Source, source_image: str, source_commit: str, key: str, bug_commit: str, gold: str,
             fail_to_pass: list[str], pass_to_pass: list[str], statement: str, method: str, family: str,
             file: str, function: str, suite: str = SUITE_PREFIX, tests: list[str] | None = None) -> TaskInstance:
    """``tests``: the task's test files (None: the source's whole suite)."""
    return TaskInstance(
        instance_id=instance_id(source, key), suite=suite, repo=source.repo, base_commit=bug_commit,
        problem_statement=statement, patch=gold, test_patch="", FAIL_TO_PASS=fail_to_pass,
        PASS_TO_PASS=pass_to_pass, version=source.version, environment_setup_commit=source_commit,
        image=task_image_tag(source.name, bug_commit), eval_script=eval_script(source, bug_commit, tests),
        log_parser=LOG_PARSER, eval_type="pass_and_fail",
        extra={"method": method, "family": family, "file": file, "function": function,
               "category": category(source.name, family), "source": source.name, "source_spec": source.spec,
               "source_image": source_image, "source_commit": source_commit, "bug_key": key,
               "tests": list(tests or source.tests)})
