"""Replay a bundled repository's `git format-patch` series into a fresh git repository.

The series under `repos/<name>/history/` is applied with `git am` under a fixed committer identity,
committer dates equal to the author dates written in the patches, and none of the user's git
configuration, so HEAD's hash is the same on every machine (git >= 2.39):

    python -m tasks.bundled.materialize ini-parser /tmp/ini-parser
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPOS_DIR = Path(__file__).resolve().parent / "repos"
"""One folder per bundled repository."""

IDENTITY_NAME = "Evolve Bundled"
IDENTITY_EMAIL = "bundled@evolve.invalid"
FIXED_DATE = "2024-01-01T00:00:00+00:00"
"""Used wherever git wants a date that the patches do not give (committer dates follow the authors')."""

GIT_OPTIONS = [
    "-c", f"user.name={IDENTITY_NAME}",
    "-c", f"user.email={IDENTITY_EMAIL}",
    "-c", "init.defaultBranch=main",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "core.autocrlf=false",
    "-c", "core.safecrlf=false",
    "-c", "core.fileMode=true",
    "-c", f"core.hooksPath={os.devnull}",
    "-c", "am.threeWay=false",
    "-c", "am.keepcr=false",
    "-c", "am.messageid=false",
    "-c", "mailinfo.scissors=false",
    "-c", "apply.whitespace=nowarn",
    "-c", "i18n.commitEncoding=UTF-8",
]
"""Passed to every git call, on top of an environment that hides the user's and the system's config."""


class MaterializeError(RuntimeError):
    """A series is missing or does not apply; the message says which and why."""


def git_env() -> dict[str, str]:
    """The environment for git: no global or system config, fixed identity and dates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME=IDENTITY_NAME,
        GIT_AUTHOR_EMAIL=IDENTITY_EMAIL,
        GIT_AUTHOR_DATE=FIXED_DATE,
        GIT_COMMITTER_NAME=IDENTITY_NAME,
        GIT_COMMITTER_EMAIL=IDENTITY_EMAIL,
        GIT_COMMITTER_DATE=FIXED_DATE,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        TZ="UTC",
    )
    return env


def git(args: list[str], cwd: Path, input: str | None = None) -> str:
    """Run git with the fixed options; return stdout, or raise `MaterializeError` with git's stderr."""
    proc = subprocess.run(["git", *GIT_OPTIONS, *args], cwd=cwd, env=git_env(), input=input,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MaterializeError(f"git {' '.join(args[:2])} failed in {cwd}: "
                               f"{(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def names() -> list[str]:
    """Names of the bundled repositories (those with a history series)."""
    return sorted(p.parent.name for p in REPOS_DIR.glob("*/history") if any(p.glob("*.patch")))


def series(name: str) -> list[Path]:
    """The patch files of `name`'s history, in order."""
    patches = sorted((REPOS_DIR / name / "history").glob("*.patch"))
    if not patches:
        raise MaterializeError(f"no bundled repository {name!r}; known: {', '.join(names())}")
    return patches


def materialize(name: str, dest: Path) -> str:
    """Create a git repository at `dest` (empty or absent) holding `name`'s history; return HEAD's hash."""
    patches = series(name)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise MaterializeError(f"{dest} is not empty; materialize needs an empty or absent folder")
    git(["init", "-q", "--template="], dest)
    try:
        git(["am", "-q", "--committer-date-is-author-date", "--whitespace=nowarn", "--no-3way",
             *[str(p) for p in patches]], dest)
    except MaterializeError:
        subprocess.run(["git", *GIT_OPTIONS, "am", "--abort"], cwd=dest, env=git_env(),
                       capture_output=True)
        raise
    return git(["rev-parse", "HEAD"], dest).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.bundled.materialize",
                                     description="Replay a bundled repository into DEST; print HEAD.")
    parser.add_argument("name", help=f"one of: {', '.join(names())}")
    parser.add_argument("dest", type=Path, help="empty or absent folder")
    args = parser.parse_args(argv)
    try:
        print(materialize(args.name, args.dest))
    except MaterializeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
