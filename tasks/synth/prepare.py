"""A source's repository on the host: a git repository with one known commit, and its dependency wheels.

PyPI packages are fetched with `pip download` (the sdist, and pure-Python wheels of the pinned dependencies)
into a cache, unpacked and committed under a fixed identity and date, so the commit is the same on every
machine. Bundled repositories are materialised from their patch series; local repositories are cloned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from tasks.bundled.materialize import git, materialize
from tasks.synth.sources import TEST_DIR_NAMES, Source, SourceError

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("EVOLVE_SYNTH_CACHE", Path.home() / ".cache" / "evolve" / "synth"))
"""Where sdists and wheels are kept between runs (`EVOLVE_SYNTH_CACHE` moves it)."""
SKIP_DIRS = {".git", "docs", "doc", "examples", "benchmarks", "benchmark", "build", "dist", "scripts", "tools",
             *TEST_DIR_NAMES}


def _pip(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.startswith("ERROR")] or [r.stderr[-300:]]
        raise SourceError(f"pip {' '.join(args[:1])} {' '.join(a for a in args if '==' in a)} failed: {lines[0]}")


def fetch_sdist(name: str, version: str) -> Path:
    """The package's sdist from the package index (cached)."""
    dest = CACHE / "sdists"
    dest.mkdir(parents=True, exist_ok=True)
    norm = name.lower().replace("-", "_")
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(f"{norm}_{version}.")]
    if not found:
        log.info("downloading the sdist of %s==%s", name, version)
        _pip(["download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(dest), f"{name}=={version}"])
        found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(f"{norm}_{version}.")]
    if not found:
        raise SourceError(f"pip downloaded no sdist of {name}=={version}")
    return found[0]


def fetch_wheels(requirements: list[str]) -> list[Path]:
    """Pure-Python wheels of pinned requirements (cached); a requirement with no such wheel is an error."""
    dest = CACHE / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for req in requirements:
        name, _, version = req.partition("==")
        norm = name.lower().replace("-", "_")
        match = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}-")]
        if not match:
            log.info("downloading the wheel of %s", req)
            _pip(["download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(dest), req])
            match = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{norm}-{version}-")]
        if not match or not match[0].name.endswith("-none-any.whl"):
            raise SourceError(f"{req}: no pure-Python wheel (containers have no network and no compiler step)")
        out.append(match[0])
    return out


def _unpack(archive: Path, dest: Path) -> None:
    """The sdist's top folder becomes ``dest``."""
    tmp = dest.parent / (dest.name + ".unpack")
    tmp.mkdir(parents=True)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    tops = list(tmp.iterdir())
    (tops[0] if len(tops) == 1 and tops[0].is_dir() else tmp).rename(dest)
    if tmp.exists():
        tmp.rmdir()


def commit_all(repo: Path, message: str) -> str:
    """A fresh repository with every file of ``repo`` in one commit (fixed identity and date); its hash."""
    git(["init", "-q", "--template="], repo)
    git(["add", "-A", "-f", "."], repo)
    git(["commit", "-q", "--no-verify", "-m", message], repo)
    return git(["rev-parse", "HEAD"], repo).strip()


def prepare(source: Source, dest: Path) -> str:
    """Put the source's repository at ``dest`` (absent or empty); return its commit."""
    if source.kind == "bundled":
        return materialize(source.spec.split(":", 1)[1], dest)
    if source.kind == "git":
        path = source.spec.split(":", 1)[1]
        r = subprocess.run(["git", "clone", "-q", "--no-hardlinks", path, str(dest)], capture_output=True, text=True)
        if r.returncode != 0:
            raise SourceError(f"cannot clone {path}: {r.stderr.strip()[:200]}")
        return git(["rev-parse", "HEAD"], dest).strip()
    name, _, version = source.spec.split(":", 1)[1].partition("==")
    _unpack(fetch_sdist(name, version), dest)
    return commit_all(dest, f"{name} {version} (sdist)")


def code_files(source: Source, repo: Path) -> list[str]:
    """Files whose functions and classes may get bugs: the source's `code` paths, else every `.py` file that
    is not a test, a build script or documentation."""
    roots = [repo / c for c in source.code] if source.code else [repo]
    out = set()
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py")) if root.is_dir() else []
        for f in files:
            rel = f.relative_to(repo)
            parts = set(rel.parts[:-1])
            name = rel.name
            if parts & SKIP_DIRS or name.startswith("test_") or name.endswith("_test.py") \
                    or name in ("conftest.py", "setup.py", "noxfile.py", "_version.py"):
                continue
            out.add(rel.as_posix())
    return sorted(out)


def source_fingerprint(source: Source, commit: str, wheels: list[Path]) -> str:
    """What the environment image depends on (its tag)."""
    h = hashlib.sha256()
    for part in (commit, source.import_root, *sorted(w.name for w in wheels), "recipe-1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:12]
