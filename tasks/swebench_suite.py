"""SWE-bench Verified and Lite through the `swebench` package: its dataset loader, its images, its grading.

Without the Hugging Face hub, pass a local copy of the dataset (`--dataset FILE.json|.jsonl|.parquet`);
the per-instance images must be in the local Docker daemon (no registry is needed once they are).
"""

from __future__ import annotations

import os

from records import TaskInstance
from tasks.suite import Suite, SuiteUnavailable

DATASETS = {"swe-bench-verified": "SWE-bench/SWE-bench_Verified", "swe-bench-lite": "SWE-bench/SWE-bench_Lite"}


def instance_image(instance_id: str) -> str:
    """swebench's name for an instance's evaluation image."""
    return f"sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:latest".lower()


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
            self._cache = []
            for row in rows:
                row = dict(row)
                row.setdefault("image", instance_image(row["instance_id"]))
                self._cache.append(TaskInstance.model_validate({**row, "suite": self.name}))
        return [i.model_copy(deep=True) for i in self._cache]


def missing_images(instances: list[TaskInstance]) -> list[str]:
    """Images of `instances` that the local Docker daemon does not have."""
    from tasks.images import image_exists

    return sorted({i.image for i in instances if not image_exists(i.image)})
