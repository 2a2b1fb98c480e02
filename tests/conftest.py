"""Shared fixtures: the real Docker daemon, the base image, small real git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `agent` sets it (see agent/__init__.py): tests share 2 cores


def make_git_repo(path: Path, files: dict[str, str]) -> Path:
    """A real git repository with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=path, check=True)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return a + b\n",
        "tests/test_calc.py": "from calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    })


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """The Docker daemon and the base image; skip (with the reason) only where Docker cannot run."""
    from sandbox.base import SandboxError
    from sandbox.config import BASE_IMAGE
    from sandbox.docker import docker_client

    try:
        client = docker_client()
    except SandboxError as e:
        pytest.skip(f"Docker is not available here: {e}")
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        pytest.fail(f"{BASE_IMAGE} is missing: run `bash scripts/setup.sh` (or `evolve sandbox build-base`)")


def bwrap_works() -> bool:
    try:
        return subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"],
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def loop_warm_model(tmp_path_factory) -> Path:
    """The tiny model warm-started on three toolcall answers (`tests/loop_helpers.py`) for the `evolve loop` tests,
    built once per machine into the test cache (`$EVOLVE_TEST_CACHE`, default `~/.cache/evolve/tests`)."""
    from tests.loop_helpers import warm_tiny_model

    cache = Path(os.environ.get("EVOLVE_TEST_CACHE") or Path.home() / ".cache" / "evolve" / "tests")
    return warm_tiny_model(cache / "loop-warm")
