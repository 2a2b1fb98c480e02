"""SWE-bench Verified and Lite through the `swebench` package: its dataset loader, its images, its grading.

Rows come in two formats and both are accepted: the current one (with `image`, `eval_script`, `log_parser`,
`eval_type`) and the classic one, completed with what swebench derives (`tasks.spec`). Every row is
checked when the selection is made, before any episode starts. Without the Hugging Face hub, pass a
local copy of the dataset (`--dataset FILE.json|.jsonl|.parquet`); the instance images are pulled where a
registry answers, else must be loaded into the local Docker daemon (`tasks.images`).
"""

from __future__ import annotations

import os

import pydantic

from records import TaskInstance
from tasks.spec import InvalidInstance, instance_image_key
from tasks.suite import Suite, SuiteUnavailable

DATASETS = {"swe-bench-verified": "SWE-bench/SWE-bench_Verified", "swe-bench-lite": "SWE-bench/SWE-bench_Lite"}


def instance_image(instance_id: str) -> str:
    """swebench's published name of an instance's image (what `docker pull` / `docker load` give)."""
    return instance_image_key(instance_id, namespace="swebench")


def row_instance(row: dict, suite: str, n: int) -> TaskInstance:
    """A dataset row as a `TaskInstance` (its image named as swebench names it when the row has none)."""
    iid = row.get("instance_id")
    if not iid:
        raise InvalidInstance(f"dataset row {n} has no `instance_id`")
    row = dict(row)
    if not row.get("image"):
        row["image"] = instance_image(iid)
    try:
        return TaskInstance.model_validate({**row, "suite": suite})
    except (pydantic.ValidationError, ValueError) as e:
        first = str(e).splitlines()
        raise InvalidInstance(f"instance {iid} (dataset row {n}): {' '.join(first[:3])[:300]}") from None


class SWEBenchSuite(Suite):
    kind = "swe"

    def __init__(self, name: str, dataset: str | None = None):
        self.name = name
        self.dataset = dataset
        self.description = f"{DATASETS[name]} via the swebench package, in its official per-instance images"
        self._cache: list[TaskInstance] | None = None

    def instances(self, split: str | None = None) -> list[TaskInstance]:
        if self._cache is None:
            from swebench.harness.utils import load_swebench_dataset

            source = self.dataset or DATASETS[self.name]
            if self.dataset and not os.path.exists(self.dataset):
                raise SuiteUnavailable(f"--dataset {self.dataset} does not exist")
            try:
                rows = load_swebench_dataset(source, split or "test")
            except Exception as e:  # offline hub, bad file: both end in the same advice
                raise SuiteUnavailable(
                    f"cannot load {source} ({type(e).__name__}: {str(e)[:150]}). Without the Hugging Face hub, "
                    f"save the dataset elsewhere (datasets.load_dataset('{DATASETS[self.name]}', split='test')"
                    ".to_json('verified.jsonl')) and pass --dataset verified.jsonl") from None
            self._cache = [row_instance(dict(row), self.name, n) for n, row in enumerate(rows, 1)]
        return [i.model_copy(deep=True) for i in self._cache]
