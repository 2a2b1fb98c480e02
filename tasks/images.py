"""Task images: the base image plus a task repository at `/testbed`, built locally (no registry needed)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
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


# --- SWE-bench instance images ------------------------------------------------------------------------------

PULL_TIMEOUT = 30.0
"""Seconds a registry may stay silent during a pull before it counts as unreachable."""


def swebench_image_candidates(instance: TaskInstance) -> list[str]:
    """Names an instance's image can have here: the row's own, swebench's published name (what `docker pull`
    and `docker load` of an official image give) and the name of a local build by swebench's image builder."""
    from tasks.spec import instance_image_key  # loads swebench and datasets (seconds)

    names = [instance.image, instance_image_key(instance.instance_id, "swebench"),
             instance_image_key(instance.instance_id, None)]
    return list(dict.fromkeys(n for n in names if n))


def pull_image(name: str, timeout: float = PULL_TIMEOUT) -> str | None:
    """Pull ``name`` through the Docker daemon; None when done, else why not (one line). ``timeout`` bounds
    each wait for the registry, not the whole (possibly long) download."""
    repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "latest")
    try:
        docker_client()  # a clear error when there is no daemon
        client = docker.from_env(timeout=timeout).api
        for event in client.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                return str(event["error"]).splitlines()[0][:300]
    except docker.errors.APIError as e:
        return str(e.explanation or e).splitlines()[0][:300]
    except (docker.errors.DockerException, OSError) as e:  # read timeouts arrive as requests' errors
        return f"{type(e).__name__}: {str(e).splitlines()[0][:240] if str(e) else 'no answer'}"
    except Exception as e:  # noqa: BLE001 - requests' ReadTimeout/ConnectionError
        return f"{type(e).__name__}: {str(e)[:240] or 'no answer'}"
    return None if image_exists(name) else f"the daemon reported no error, but {name} is not here"


def build_swebench_images(instances: list[TaskInstance], task_repo: str | Path) -> list[str]:
    """Build instance images with swebench's own image builder from a swebench task repository (one
    `tasks/<instance_id>/Dockerfile` each; `swebench.task.repo`), named as published. The builder runs `docker
    buildx build`; where `docker buildx` is not installed (Debian bookworm does not package it), the same
    Dockerfile and context are built by the daemon's classic builder instead (it lacks BuildKit-only Dockerfile
    features). Needs whatever the Dockerfiles download. Returns the names built; raises `SandboxError` saying why
    not."""
    from swebench.image_builder.docker_build import BuildImageError, build_instance_image
    from swebench.image_builder.image_spec import make_image_spec
    from swebench.task.repo import load_dockerfiles, load_task_repo, task_paths

    buildx = bool(shutil.which("docker")) and subprocess.run(["docker", "buildx", "version"],
                                                             capture_output=True).returncode == 0
    ids = [i.instance_id for i in instances]
    task_repo = Path(task_repo).resolve()
    try:
        rows = load_task_repo(task_repo, ids)
        dockerfiles, contexts = load_dockerfiles(task_repo, ids), task_paths(task_repo, ids)
    except (FileNotFoundError, KeyError) as e:
        raise SandboxError(f"--task-repo {task_repo}: {str(e).strip(chr(39))}") from None
    built = []
    logs = Path.home() / ".cache" / "evolve" / "swebench-builds"  # swebench writes logs/ under the cwd
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(logs):
        for row in rows:
            spec = make_image_spec(row, dockerfiles[row["instance_id"]], namespace="swebench",
                                   context_dir=Path(contexts[row["instance_id"]]).resolve())
            try:
                if buildx:
                    build_instance_image(spec, docker_client(), None, nocache=False)
                else:
                    _classic_build(spec.dockerfile, Path(spec.context_dir), spec.name, spec.platform)
            except BuildImageError as e:
                raise SandboxError(f"swebench's builder could not build {spec.name}: "
                                   f"{str(e).splitlines()[0][:200]} (logs in {logs})") from None
            built.append(spec.name)
    return built


def _classic_build(dockerfile: str, context: Path, tag: str, platform: str | None) -> None:
    """Build ``dockerfile`` (its text) in ``context`` with the daemon's classic builder, as ``tag``."""
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False) as f:
        f.write(dockerfile)
    try:
        docker_client().images.build(path=str(context), dockerfile=f.name, tag=tag, rm=True,
                                     **({"platform": platform} if platform else {}))
    except docker.errors.BuildError as e:
        raise SandboxError(f"the daemon's classic builder could not build {tag} (no `docker buildx` here: "
                           f"apt-get install docker-buildx where the distribution has it): {e.msg}") from None
    except docker.errors.APIError as e:
        raise SandboxError(f"the daemon's classic builder could not build {tag}: {e.explanation or e}") from None
    finally:
        os.unlink(f.name)


def ensure_swebench_images(instances: list[TaskInstance], *, pull: bool = True,
                           task_repo: str | Path | None = None, force: bool = False) -> dict[str, list[str]]:
    """Make every instance's image present: use a local one under any of its names (the instance's `image`
    is set to it), else pull swebench's published image where a registry answers, else build it with
    swebench's builder from ``task_repo``. Returns {"present", "pulled", "built"}; raises `SandboxError`
    that names exactly which images to `docker load` when some are still missing."""
    done: dict[str, list[str]] = {"present": [], "pulled": [], "built": []}
    missing: list[TaskInstance] = []
    for inst in instances:
        here = None if force else next((n for n in swebench_image_candidates(inst) if image_exists(n)), None)
        if here:
            inst.image = here
            done["present"].append(here)
        else:
            missing.append(inst)
    why_not_pulled = "" if pull else "pulling was not asked for"
    for inst in list(missing):
        if why_not_pulled:
            break
        name = swebench_image_candidates(inst)[0]
        log.info("pulling %s", name)
        why_not_pulled = pull_image(name) or ""
        if not why_not_pulled:
            inst.image = name
            done["pulled"].append(name)
            missing.remove(inst)
    if missing and task_repo is not None:
        for inst, name in zip(missing, build_swebench_images(missing, task_repo)):
            inst.image = name
            done["built"].append(name)
        missing = []
    if missing:
        names = [swebench_image_candidates(i)[0] for i in missing]
        pulled = f"the registry did not answer ({why_not_pulled})" if pull else why_not_pulled
        raise SandboxError(
            f"{len(names)} SWE-bench instance image(s) are not in the local Docker daemon (first: {names[0]}), and "
            f"{pulled}. Where a registry answers: `docker pull {names[0]}` (or `evolve tasks SUITE --build "
            f"--instances ...`), `docker save {names[0]} -o image.tar`; here: `docker load -i image.tar`; or build "
            "them here with swebench's builder: `evolve tasks SUITE --build --task-repo DIR`")
    return done
