"""Task images: the base image plus a task repository at `/testbed`, built locally (no registry needed)."""

from __future__ import annotations

import io
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

import docker.errors

from records import TaskInstance
from sandbox import BASE_IMAGE, SandboxError
from sandbox.docker import LABEL, docker_client

log = logging.getLogger(__name__)


def repo_image(name: str, base_commit: str) -> str:
    """Image tag of a repository at a commit."""
    return f"evolve-task-{name}:{base_commit[:12]}"


def image_exists(tag: str) -> bool:
    try:
        docker_client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build_repo_image(repo_dir: Path, tag: str, base: str = BASE_IMAGE) -> str:
    """`FROM base`, the repository copied to `/testbed`, labelled as Evolve's."""
    dockerfile = f"FROM {base}\nCOPY testbed /testbed\nWORKDIR /testbed\nLABEL {LABEL}=task\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
        tar.add(repo_dir, arcname="testbed")
    buf.seek(0)
    try:
        docker_client().images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, network_mode="none")
    except docker.errors.BuildError as e:
        raise SandboxError(f"building {tag} failed: {e.msg}") from None
    except docker.errors.APIError as e:
        if "No such image" in str(e) or "not found" in str(e):
            raise SandboxError(f"{base} is missing: run `evolve sandbox build-base` first") from None
        raise
    return tag


def ensure_images(instances: list[TaskInstance], materialize: Callable[[str, Path], str],
                  force: bool = False) -> list[str]:
    """Build the image of each instance's repository unless it exists. Returns the tags built."""
    built = []
    for inst in instances:
        if not force and image_exists(inst.image):
            continue
        name = inst.repo.split("/")[-1]
        with tempfile.TemporaryDirectory() as tmp:
            head = materialize(name, Path(tmp) / name)
            if head != inst.base_commit:
                raise SandboxError(f"{name} materialised at {head[:12]}, but {inst.instance_id} expects "
                                   f"{inst.base_commit[:12]}: the bundled data is inconsistent")
            build_repo_image(Path(tmp) / name, inst.image)
        log.info("built %s", inst.image)
        built.append(inst.image)
    return built
