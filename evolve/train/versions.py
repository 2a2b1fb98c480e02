"""Policy versions across run directories: `version:ID` / `version:latest` -> a loadable policy spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from records import PolicyVersion

from evolve.store import DB_NAME, RunStore, StoreError
from evolve.train.errors import TrainError


SEARCH_DEPTH = 4
"""How many directory levels below a runs root its run stores are looked for: `evolve agent-r` keeps its versions
at `RUN/itK/sft` and `evolve loop` at `RUN/train/CHILD`, three levels below the root a user names."""
_SKIP = ("checkpoints", "final", "workspaces", "variants", "edits")


def _stores(runs_root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Run directories at `runs_root` and up to `depth` levels below it (breadth first, sorted by name;
    checkpoint, weight, workspace and variant directories are not entered)."""
    root = Path(runs_root)
    found = [root] if (root / DB_NAME).exists() else []
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        below: list[Path] = []
        for d in level:
            try:
                below += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
                                and c.name not in _SKIP)
            except OSError:
                continue
        found += [d for d in below if (d / DB_NAME).exists()]
        level = below
    return found


def all_versions(runs_root: Path) -> list[tuple[PolicyVersion, Path]]:
    """Every stored policy version under ``runs_root`` (itself, its children and grandchildren), oldest first."""
    out: list[tuple[PolicyVersion, Path]] = []
    seen: set[str] = set()
    for d in _stores(runs_root):
        try:
            with RunStore(d, readonly=True) as store:
                versions = store.policy_versions()
        except StoreError:
            continue
        for v in versions:
            if v.id not in seen:
                seen.add(v.id)
                out.append((v, d))
    out.sort(key=lambda x: x[0].created_at)
    return out


def get_version(version_id: str, runs_root: Path) -> PolicyVersion:
    """The stored version ``version_id``; `latest` is the newest trained (non-base) version whose weights are saved.
    A version still training (or stopped, or failed) has no weights yet: asking for it is a `TrainError`."""
    versions = all_versions(runs_root)
    if version_id == "latest":
        trained = [v for v, _ in versions if v.kind != "base" and v.status == "ready"]
        if not trained:
            raise TrainError(f"no trained policy version under {runs_root}; train one with `evolve train sft`")
        return trained[-1]
    for v, _ in versions:
        if v.id == version_id:
            if v.status != "ready":
                raise TrainError(f"policy version {version_id} is {v.status}: its weights are not saved yet"
                                 + (" (rerun its training command to finish it)" if v.status != "training" else
                                    " (wait for its training to finish)"))
            return v
    raise TrainError(f"unknown policy version {version_id!r}: none stored under {runs_root} "
                     f"({len(versions)} versions found)")


def version_spec(v: PolicyVersion) -> tuple[str, dict[str, Any]]:
    """The `load_policy` spec and keyword arguments of a version."""
    if v.kind == "base" or not v.path:
        return v.base, {}
    if v.adapter:
        return v.base, {"adapter": v.path}
    return f"hf:{v.path}", {}


def canonical_spec(spec: str, runs_root: Path) -> str:
    """The spec a run records: `version:latest` becomes `version:ID` of the version it names now (so a resumed
    run compares ids, never the moving `latest`); any other spec is returned as it is."""
    if not spec.startswith("version:"):
        return spec
    return f"version:{get_version(spec.split(':', 1)[1], runs_root).id}"


def resolve_policy(spec: str, runs_root: Path) -> tuple[str, dict[str, Any]]:
    """``version:ID`` (or ``version:latest``) -> (`hf:BASE`, {"adapter": DIR}) or (`hf:DIR`, {});
    any other spec passes through as ``(spec, {})``."""
    if not spec.startswith("version:"):
        return spec, {}
    return version_spec(get_version(spec.split(":", 1)[1], runs_root))
