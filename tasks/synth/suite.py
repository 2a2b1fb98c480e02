"""`synth:FILE`: a synthesised suite (the JSONL rows `evolve tasks synthesize` wrote) as a suite like any other.

Splits are by source repository: `train` and `test` (held out) never share one. Task images are made when
instances are run (`ensure_images`): each is its source's environment image (rebuilt from the row's
`source_spec` if missing) with the bug committed on top, checked to land on the row's `base_commit`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydantic

from records import TaskInstance
from tasks.images import image_exists
from tasks.suite import Suite, SuiteUnavailable
from tasks.synth.env_image import ensure_source_image, task_image
from tasks.synth.sources import from_spec

log = logging.getLogger(__name__)
SPLITS = ("train", "test")


def load_rows(path: Path) -> list[TaskInstance]:
    if not path.is_file():
        raise SuiteUnavailable(f"synth:{path}: no such file (make one with `evolve tasks synthesize SOURCE... "
                               f"--out {path}`)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(TaskInstance.model_validate(json.loads(line)))
        except (json.JSONDecodeError, pydantic.ValidationError) as e:
            raise SuiteUnavailable(f"synth:{path}:{n} is not a task row: {str(e).splitlines()[0][:200]}") from None
    return out


class SynthSuite(Suite):
    kind = "swe"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = f"synth:{path}"
        self.description = f"tasks synthesised into {path} (splits by source: train, test)"
        self._rows: list[TaskInstance] | None = None

    def instances(self, split: str | None = None) -> list[TaskInstance]:
        """All rows, or those of one split (`train`, or `test` = held out)."""
        if self._rows is None:
            self._rows = load_rows(self.path)
        if split is not None and split not in SPLITS:
            raise SuiteUnavailable(f"synth suites have the splits {', '.join(SPLITS)}, not {split!r}")
        rows = [r for r in self._rows if split is None or r.extra.get("split") == split]
        return [r.model_copy(deep=True) for r in rows]

    def ensure_images(self, chosen: list[TaskInstance], force: bool = False) -> dict[str, list[str]]:
        """Make each chosen instance's image present (its source's image first). Returns {"built": [...]}."""
        built: list[str] = []
        sources: dict[str, str] = {}
        for inst in chosen:
            if image_exists(inst.image) and not force:
                continue
            extra = inst.extra
            src_image = extra["source_image"]
            if not image_exists(src_image) and extra["source_spec"] not in sources:
                tag, commit, _ = ensure_source_image(from_spec(extra["source_spec"]))
                if tag != src_image or commit != extra["source_commit"]:
                    raise SuiteUnavailable(f"{inst.instance_id}: its source {extra['source_spec']} now builds as "
                                           f"{tag} at {commit[:12]}, not {src_image} at "
                                           f"{extra['source_commit'][:12]}")
                sources[extra["source_spec"]] = tag
                built.append(tag)
            built.append(task_image(src_image, extra["source_commit"], inst.patch, inst.base_commit, inst.image))
            log.info("built %s", inst.image)
        return {"built": built}
