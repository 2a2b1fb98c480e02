"""Stored policy versions as models of `evolve serve`: `version:ID` and `version:latest` by name."""

from __future__ import annotations

from pathlib import Path

from agent.policy.serve import ModelSource
from evolve.train.versions import all_versions, get_version, version_spec
from records import PolicyVersion

PREFIX = "version:"


def version_source(v: PolicyVersion) -> ModelSource:
    """How `evolve serve` loads a stored version (LoRA versions as adapters on their base)."""
    spec, options = version_spec(v)
    adapter = v.path if v.adapter and v.kind != "base" and v.path else None
    return ModelSource(name=f"{PREFIX}{v.id}", spec=spec, options=options, base=v.base if adapter else None,
                       adapter=adapter, created=int(v.created_at))


def version_models(runs_root: Path):
    """(resolver, lister) for `PolicyServer`: names `version:ID` / `version:latest` -> stored versions under
    `runs_root`; any other name is not a version (None)."""

    def resolve(name: str) -> ModelSource | None:
        if not name.startswith(PREFIX):
            return None
        return version_source(get_version(name[len(PREFIX):], runs_root))

    def list_all() -> list[ModelSource]:
        return [version_source(v) for v, _ in all_versions(runs_root)]

    return resolve, list_all
