"""The swebench `TestSpec` of an instance, and the checks that every row can be graded before anything runs.

swebench 5.0.2 grades an instance from four things its rows carry: `image`, `eval_script`, `log_parser`
(a key of `swebench.harness.log_parsers.PARSER_REGISTRY`) and `eval_type` (`pass_and_fail` or
`fail_only`). Rows in the classic format (instance_id, repo, base_commit, patch, test_patch, FAIL_TO_PASS,
PASS_TO_PASS, version, environment_setup_commit, ...) lack them; what swebench itself can derive is filled
in here: the image from swebench's own image naming, the log parser from its per-repository parser maps
(`MAP_REPO_TO_PARSER_*`), the eval type from `FAIL_ONLY_REPOS`. The eval script cannot be derived:
swebench 5.0.2 no longer has per-repository test commands (they moved into the datasets' `eval_script`
column), so a row without one (and without the bundled suites' `test_cmd`) is refused up front with a
message that says which row and what to provide. The pytest parser is never assumed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable

from swebench.harness.constants import END_TEST_OUTPUT, FAIL_ONLY_REPOS, START_TEST_OUTPUT, EvalType
from swebench.harness.log_parsers import PARSER_REGISTRY
from swebench.harness.utils import make_test_spec
from swebench.types import TestSpec

from records import TaskInstance
from tasks.errors import SuiteUnavailable

HEREDOC = "EOF_114329324912"  # SWE-bench's heredoc delimiter
EVAL_TYPES = tuple(e.value for e in EvalType)


class InvalidInstance(SuiteUnavailable):
    """A row cannot be graded (a field is missing or unknown); the message names the row and the field."""


def patched_files(test_patch: str) -> list[str]:
    """Files a test patch touches (SWE-bench resets them to the base commit before and after)."""
    return sorted(set(re.findall(r"^diff --git a/(\S+) b/", test_patch, flags=re.M)))


def eval_script_from_test_cmd(instance: TaskInstance) -> str:
    """SWE-bench's eval script shape for an instance that gives `test_cmd` (the bundled suites)."""
    files = " ".join(patched_files(instance.test_patch))
    reset = f"git checkout {instance.base_commit} -- {files}" if files else ":"
    return "\n".join([
        "#!/bin/bash", "set -uxo pipefail", "cd /testbed", reset,
        f"git apply -v - <<'{HEREDOC}'", instance.test_patch.rstrip("\n"), HEREDOC,
        f": '{START_TEST_OUTPUT}'", instance.test_cmd, f": '{END_TEST_OUTPUT}'", reset, "",
    ])


@lru_cache(maxsize=1)
def _repo_parsers() -> dict[str, str]:
    """swebench's repository -> log parser maps (every language), as PARSER_REGISTRY keys."""
    from swebench.harness.log_parsers import c, go, java, javascript, php, python, ruby, rust

    by_function: dict[int, str] = {}
    for key, fn in PARSER_REGISTRY.items():  # aliases share a function; prefer the function's own name
        if id(fn) not in by_function or key == fn.__name__:
            by_function[id(fn)] = key
    out: dict[str, str] = {}
    for module in (python, javascript, c, go, java, php, ruby, rust):
        for name in dir(module):
            if name.startswith("MAP_REPO_TO_PARSER"):
                for repo, fn in getattr(module, name).items():
                    if id(fn) in by_function:
                        out[repo] = by_function[id(fn)]
    return out


def log_parser_for(repo: str) -> str | None:
    """swebench's log parser (a PARSER_REGISTRY key) for a repository, None when it has none."""
    return _repo_parsers().get(repo)


def eval_type_for(repo: str) -> str:
    """swebench's eval type for a repository: `fail_only` for its FAIL_ONLY_REPOS, else `pass_and_fail`."""
    return EvalType.FAIL_ONLY.value if repo in FAIL_ONLY_REPOS else EvalType.PASS_AND_FAIL.value


def instance_image_key(instance_id: str, namespace: str | None = "swebench") -> str:
    """The image swebench names for an instance: with a namespace, the published form that `docker pull`
    and `docker load` of an official image give (`swebench/sweb.eval.x86_64.<id, __ as _1776_>:latest`);
    without one, the name swebench's image builder gives a local build (`sweb.eval.x86_64.<id>:latest`)."""
    from swebench.image_builder.image_spec import ImageSpec

    return ImageSpec(instance_id=instance_id, dockerfile="-", namespace=namespace).name


def completed(instance: TaskInstance) -> dict:
    """The instance as swebench's `make_test_spec` wants it: the row's own `image`, `eval_script`,
    `log_parser` and `eval_type` where it has them, else what swebench derives (see the module doc).
    Fields that cannot be derived stay missing; `problems` names them."""
    data = instance.model_dump()
    if not data.get("image") and data.get("instance_id"):
        data["image"] = instance_image_key(data["instance_id"])
    if not data.get("eval_script") and instance.test_cmd and instance.test_patch:
        data["eval_script"] = eval_script_from_test_cmd(instance)
    if not data.get("log_parser") and instance.repo:
        parser = log_parser_for(instance.repo)
        if parser:
            data["log_parser"] = parser
    if not data.get("eval_type") and instance.repo:
        data["eval_type"] = eval_type_for(instance.repo)
    return data


def problems(instance: TaskInstance) -> list[str]:
    """Why the instance cannot be graded (empty when it can); each item names one field."""
    data = completed(instance)
    out = []
    for field in ("repo", "base_commit"):
        if not data.get(field):
            out.append(f"no `{field}`")
    if not data.get("FAIL_TO_PASS"):
        out.append("no `FAIL_TO_PASS` tests (nothing would decide whether a patch resolved it)")
    if not data.get("eval_script"):
        out.append("no `eval_script` (swebench 5.0.2 reads each instance's eval script from the dataset and no "
                   "longer derives one from repo/version): adding an `eval_script` column to this row is enough "
                   "(`image`, `log_parser` and `eval_type` are derived for a classic row), or use the current "
                   "SWE-bench rows, which carry all four")
    elif START_TEST_OUTPUT not in data["eval_script"] or END_TEST_OUTPUT not in data["eval_script"]:
        out.append(f"`eval_script` lacks swebench's '{START_TEST_OUTPUT}' / '{END_TEST_OUTPUT}' markers")
    parser = data.get("log_parser")
    if not parser:
        out.append(f"no `log_parser`, and swebench has none for repo {instance.repo!r}")
    elif parser not in PARSER_REGISTRY:
        out.append(f"unknown `log_parser` {parser!r} (not in swebench's PARSER_REGISTRY)")
    if data.get("eval_type") not in EVAL_TYPES:
        out.append(f"`eval_type` {data.get('eval_type')!r} is not one of {', '.join(EVAL_TYPES)}")
    return out


def make_spec(instance: TaskInstance) -> TestSpec:
    """swebench's `TestSpec` of the instance; `InvalidInstance` (one line) when a field is missing."""
    found = problems(instance)
    if found:
        raise InvalidInstance(f"instance {instance.instance_id}: {found[0]}")
    return make_test_spec(completed(instance))



def validate(instances: Iterable[TaskInstance]) -> None:
    """Check that every instance can be graded, before any episode starts: `InvalidInstance` naming the
    first bad instance, its first missing field, and how many others are bad too."""
    bad = [(i.instance_id, p[0]) for i in instances if (p := problems(i))]
    if bad:
        more = f" (and {len(bad) - 1} other instance(s))" if len(bad) > 1 else ""
        raise InvalidInstance(f"instance {bad[0][0]}: {bad[0][1]}{more}")
