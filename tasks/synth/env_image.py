"""Environment images of sources, and the image of each synthesised task.

A source's image is `FROM evolve-base:latest` with its repository at `/testbed` (at the source's commit),
its dependencies' pure-Python wheels unpacked into the interpreter's site-packages (what pip does for a
purelib wheel; the image has no pip and the build no network) and a `.pth` file putting its import root on
`sys.path` (an editable install without a build backend). A task's image is its source's image with the
bugged tree committed as the repository's only commit (`commit_bug_command`: the history an agent sees never
holds the code without the bug); it is made only when the task is run (`task_image`).
"""

from __future__ import annotations

import io
import logging
import shlex
import tarfile
import tempfile
from pathlib import Path

import docker.errors

from sandbox import BASE_IMAGE, SandboxError
from sandbox.docker import LABEL, docker_client
from tasks.images import image_exists
from tasks.synth import prepare as prep
from tasks.synth.sources import Source

log = logging.getLogger(__name__)

SITE = "/usr/local/lib/python3.11/dist-packages"
"""Debian's site directory for locally installed packages (on `sys.path` of the base image's python3)."""
BUG_IDENTITY = ("-c user.name='Evolve Synth' -c user.email=synth@evolve.invalid -c commit.gpgsign=false "
                "-c core.hooksPath=/dev/null")
BUG_ENV = "GIT_AUTHOR_DATE='2024-01-01T00:00:00+00:00' GIT_COMMITTER_DATE='2024-01-01T00:00:00+00:00'"


def commit_bug_command(message: str = "synthetic bug", forget: str | None = None) -> str:
    """Shell command (in `/testbed`) that commits the working tree as a root commit (no parent: the task's history
    must not hold the code without the bug, or `git show HEAD` would give the fix away) under a fixed identity
    and date, so the same bugged tree always gets the same hash; moves the branch there and prints the hash.
    ``forget`` (the source's commit, for the task image): then drop every other ref, the reflogs and every object
    only they reached, and check that commit is gone."""
    drop = ("git for-each-ref --format='%(refname)' | while read -r ref; do "
            "[ \"$ref\" = \"$(git symbolic-ref -q HEAD)\" ] || git update-ref -d \"$ref\"; done && "
            "rm -f .git/ORIG_HEAD .git/FETCH_HEAD && git reflog expire --expire=now --all && "
            f"git gc -q --prune=now && ! git cat-file -e {shlex.quote(forget)} 2>/dev/null && "
            "test \"$(git rev-list --all --count)\" = 1 && ") if forget else ""
    return (f"git add -A && tree=$(git write-tree) && "
            f"bug=$({BUG_ENV} git {BUG_IDENTITY} commit-tree \"$tree\" -m {shlex.quote(message)}) && "
            f"git reset -q \"$bug\" && {drop}echo \"$bug\"")


def source_image_tag(source: Source, fingerprint: str) -> str:
    return f"evolve-synth-src-{source.name}:{fingerprint}"


def task_image_tag(source_name: str, commit: str) -> str:
    return f"evolve-synth-{source_name}:{commit[:12]}"


def _dockerfile(source: Source, wheels: list[Path]) -> str:
    lines = [f"FROM {BASE_IMAGE}", "COPY testbed /testbed"]
    if wheels:
        lines.append("COPY wheels /tmp/evolve-wheels")
        lines.append(f"RUN mkdir -p {SITE} && for w in /tmp/evolve-wheels/*.whl; do "
                     f"python3 -m zipfile -e \"$w\" {SITE} || exit 1; done && rm -rf /tmp/evolve-wheels")
    root = "/testbed" + (f"/{source.import_root}" if source.import_root else "")
    lines.append(f"RUN mkdir -p {SITE} && echo {root} > {SITE}/evolve-synth-testbed.pth && "
                 "mkdir -p /testbed/.git/info && printf '__pycache__/\\n*.py[co]\\n' >> /testbed/.git/info/exclude")
    lines += ["WORKDIR /testbed", f"LABEL {LABEL}=task", f"LABEL evolve.synth.source={source.spec}"]
    return "\n".join(lines) + "\n"


def build_source_image(source: Source, repo: Path, wheels: list[Path], tag: str) -> str:
    """Build (no network) the source's environment image from its prepared repository and wheels."""
    dockerfile = _dockerfile(source, wheels).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(repo, arcname="testbed")
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}")
    buf.seek(0)
    try:
        docker_client().images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, network_mode="none")
    except docker.errors.BuildError as e:
        raise SandboxError(f"building {tag} failed: {e.msg}") from None
    except docker.errors.APIError as e:
        if "No such image" in str(e) or "not found" in str(e):
            raise SandboxError(f"{BASE_IMAGE} is missing: run `evolve sandbox build-base` first") from None
        raise
    return tag


def ensure_source_image(source: Source) -> tuple[str, str, list[str]]:
    """The source's image (built unless present), its commit and its code files. Downloads what a PyPI
    source needs into the cache first."""
    wheels = prep.fetch_wheels(source.deps) if source.deps else []
    with tempfile.TemporaryDirectory(prefix="evolve-synth-") as tmp:
        repo = Path(tmp) / "testbed"
        commit = prep.prepare(source, repo)
        tag = source_image_tag(source, prep.source_fingerprint(source, commit, wheels))
        files = prep.code_files(source, repo)
        if not image_exists(tag):
            log.info("building %s", tag)
            build_source_image(source, repo, wheels, tag)
    return tag, commit, files


def task_image(source_image: str, source_commit: str, gold_patch: str, bug_commit: str, tag: str) -> str:
    """The task's image: the source image with the bug (the gold patch reversed) committed, checked to give the
    row's `base_commit`. Built from a container (`docker commit`), no network."""
    if image_exists(tag):
        return tag
    client = docker_client()
    script = (f"cd /testbed && test \"$(git rev-parse HEAD)\" = {source_commit} && "
              f"git apply -R --whitespace=nowarn /tmp/evolve-gold.diff && rm /tmp/evolve-gold.diff && "
              f"{commit_bug_command(forget=source_commit)}")
    container = client.containers.create(source_image, ["bash", "-c", script], network_mode="none",
                                         labels={LABEL: "1"})
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = gold_patch.encode()
            info = tarfile.TarInfo("evolve-gold.diff")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        container.put_archive("/tmp", buf.getvalue())
        container.start()
        status = container.wait(timeout=300)
        out = container.logs().decode(errors="replace").strip()
        if status.get("StatusCode") != 0 or out.splitlines()[-1:] != [bug_commit]:
            raise SandboxError(f"cannot rebuild the task image {tag} from {source_image}: the bug commit came out as "
                               f"{out.splitlines()[-1:] or out!r}, the row says {bug_commit[:12]} (rows synthesised "
                               "before bug commits had no parent cannot be rebuilt: synthesise them again)")
        repo, _, version = tag.rpartition(":")
        container.commit(repository=repo, tag=version, conf={"Cmd": ["bash"], "Labels": {LABEL: "task"}})
    finally:
        container.remove(force=True)
    return tag
