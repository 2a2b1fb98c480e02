"""The project's base image: Debian bookworm with Python 3, git, pytest, patch and build tools.

Where a registry answers, it starts from the official `python:3.11-slim-bookworm` image; with none
reachable (as on an offline machine) it is built with debootstrap from Debian's package mirror and
`docker import`ed. Either way the image is labelled with a hash of its
recipe and rebuilt only when the recipe changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import docker.errors

from sandbox.base import WORKDIR, SandboxError
from sandbox.config import BASE_IMAGE
from sandbox.docker import LABEL, docker_client

log = logging.getLogger(__name__)

PACKAGES = ["python3", "python3-pytest", "python-is-python3", "git", "patch", "build-essential", "procps",
            "ca-certificates"]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PULL_IMAGE = "python:3.11-slim-bookworm"
SETUP = (  # run inside the new root: make git usable on any workspace, keep the image small
    "git config --system user.name evolve && git config --system user.email evolve@localhost && "
    "git config --system --add safe.directory '*' && git config --system init.defaultBranch main && "
    f"mkdir -p {WORKDIR} && rm -rf /var/cache/apt/archives/*.deb /var/lib/apt/lists/*"
)
CACHE_DIR = Path("/var/cache/evolve/debootstrap")


def recipe_hash(method: str) -> str:
    recipe = {"packages": PACKAGES, "suite": SUITE, "setup": SETUP, "method": method,
              "pull": PULL_IMAGE if method == "pull" else None}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def current_recipe(image: str = BASE_IMAGE) -> str | None:
    """The recipe hash of the existing image, or None when there is none."""
    try:
        return (docker_client().images.get(image).labels or {}).get("evolve.recipe")
    except docker.errors.ImageNotFound:
        return None


def build_base(image: str = BASE_IMAGE, method: Literal["auto", "debootstrap", "pull"] = "auto",
               force: bool = False) -> tuple[str, bool]:
    """Build the base image unless it is up to date. Returns (image, built).

    `auto` pulls the official image where a registry answers and falls back to debootstrap, which
    needs only Debian's package mirror."""
    methods = ["pull", "debootstrap"] if method == "auto" else [method]
    if not force and current_recipe(image) in {recipe_hash(m) for m in methods}:
        log.info("%s is up to date", image)
        return image, False
    if "pull" in methods:
        try:
            _build_from_pull(image, recipe_hash("pull"))
            return image, True
        except SandboxError as e:
            if method == "pull":
                raise
            log.info("no registry (%s): building with debootstrap", str(e).split(":")[0])
    _build_with_debootstrap(image, recipe_hash("debootstrap"))
    return image, True


def _changes(recipe: str) -> list[str]:
    return ["ENV LANG=C.UTF-8", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"WORKDIR {WORKDIR}", f"LABEL {LABEL}=base", f"LABEL evolve.recipe={recipe}", 'CMD ["bash"]']


def _build_with_debootstrap(image: str, recipe: str) -> None:
    if shutil.which("debootstrap") is None:
        raise SandboxError("building the base image needs debootstrap: `apt-get install debootstrap` "
                           "(scripts/setup.sh does it)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evolve-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--cache-dir={CACHE_DIR}", f"--include={','.join(PACKAGES)}",
               SUITE, str(root), MIRROR]
        log.info("debootstrap %s (a few minutes the first time)", SUITE)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError(f"debootstrap failed (is {MIRROR} reachable?): {(r.stdout + r.stderr)[-600:]}")
        r = subprocess.run(["chroot", str(root), "sh", "-c", SETUP], capture_output=True, text=True)
        if r.returncode != 0:
            raise SandboxError(f"base image setup failed: {r.stderr[-600:]}")
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            repo, tag = image.rsplit(":", 1) if ":" in image else (image, "latest")
            docker_client().api.import_image(src=tar.stdout, repository=repo, tag=tag, changes=_changes(recipe))
        finally:
            tar.stdout.close()  # type: ignore[union-attr]
            tar.wait()
    log.info("built %s", image)


def _build_from_pull(image: str, recipe: str) -> None:
    client = docker_client()
    try:
        client.images.pull(PULL_IMAGE)
    except docker.errors.APIError as e:
        raise SandboxError(f"cannot pull {PULL_IMAGE} ({e.explanation or e}): use `--method debootstrap`, "
                           "which needs only Debian's package mirror") from None
    apt = ("apt-get update && apt-get install -y --no-install-recommends "
           + " ".join(p for p in PACKAGES if p != "python3") + " && " + SETUP)
    container = client.containers.run(PULL_IMAGE, ["sh", "-c", apt], detach=True, network_mode="host")
    try:
        if container.wait()["StatusCode"] != 0:
            raise SandboxError(f"base image setup failed: {container.logs()[-600:].decode(errors='replace')}")
        repo, tag = image.rsplit(":", 1) if ":" in image else (image, "latest")
        container.commit(repository=repo, tag=tag, changes=_changes(recipe))
    finally:
        container.remove(force=True)
