"""Real small disks and read-only directories for tests: a Python snippet runs in a private mount namespace
(`unshare`) where a tmpfs of a given size, or a read-only bind mount, sits on a directory of the test's own.
Nothing is mounted outside that namespace, and nothing is left mounted when the snippet ends.

`mount_ns_skip()` gives the reason to skip where no mount namespace can be made (not root and no user
namespaces); the tests then skip with it."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def _unshare() -> tuple[str, ...] | None:
    if shutil.which("unshare") is None:
        return None
    for argv in (("unshare", "--mount", "--propagation", "private"),
                 ("unshare", "--mount", "--map-root-user", "--propagation", "private")):
        probe = f"d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"
        if subprocess.run([*argv, "sh", "-c", probe], capture_output=True).returncode == 0:
            return argv
    return None


def mount_ns_skip() -> str:
    """'' where tests can mount in a private namespace, else why not."""
    return "" if _unshare() else "cannot make a private mount namespace here (unshare: not root, no user namespaces)"


def in_mount_ns(snippet: str, *, tmpfs: dict[Path, str] | None = None, read_only: tuple[Path, ...] = (),
                args: tuple[str, ...] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -c snippet ARGS` (cwd: the repository) with each `tmpfs` directory a tmpfs of its size
    (e.g. '2m') and each `read_only` directory bind-mounted read-only onto itself."""
    steps = []
    for d, size in (tmpfs or {}).items():
        steps.append(f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(d))}")
    for d in read_only:
        q = shlex.quote(str(d))
        steps += [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"]
    steps.append(shlex.join([sys.executable, "-c", snippet, *args]))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*_unshare(), "sh", "-c", " && ".join(steps)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def json_of(r: subprocess.CompletedProcess) -> dict:
    """The last stdout line of a snippet that printed its findings as JSON."""
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and lines, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(lines[-1])
