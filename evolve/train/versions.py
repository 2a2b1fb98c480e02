"""Policy versions across run directories: `version:ID` / `version:latest` -> a loadable policy spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from records import PolicyVersion

from evolve.store import DB_NAME, RunStore, StoreError
from evolve.train.errors import TrainError


def _stores(runs_root: Path) -> list[Path]:
    root = Path(runs_root)
    found = [root] if (root / DB_NAME).exists() else []
    if root.is_dir():
        for db in sorted(root.glob(f"*/{DB_NAME}")) + sorted(root.glob(f"*/*/{DB_NAME}")):
            found.append(db.parent)
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
    """The stored version ``version_id``; `latest` is the newest trained (non-base) version."""
    versions = all_versions(runs_root)
    if version_id == "latest":
        trained = [v for v, _ in versions if v.kind != "base"]
        if not trained:
            raise TrainError(f"no trained policy version under {runs_root}; train one with `evolve train sft`")
        return trained[-1]
    for v, _ in versions:
        if v.id == version_id:
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


def resolve_policy(spec: str, runs_root: Path) -> tuple[str, dict[str, Any]]:
    """``version:ID`` (or ``version:latest``) -> (`hf:BASE`, {"adapter": DIR}) or (`hf:DIR`, {});
    any other spec passes through as ``(spec, {})``."""
    if not spec.startswith("version:"):
        return spec, {}
    return version_spec(get_version(spec.split(":", 1)[1], runs_root))
