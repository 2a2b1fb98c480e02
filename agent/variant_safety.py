"""What keeps a variant directory inside itself: no symbolic links, devices, FIFOs or sockets anywhere in it,
files read without following a link, and agent-made patches that would create a link refused before any
host tool applies them.

A variant is edited by an agent (HGM's meta-agent) and then read on the host. A symbolic link in it (`tests`
pointing at a host directory, `variant.yaml` pointing at `/proc/self/status`) would make the host read,
copy or ship files outside the variant; a FIFO would hang the reader. So a variant holds regular files and
directories only, and every check here answers with a one-line reason instead of following anything.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

SKIP_DIRS = (".git",)
"""Directories not scanned: the host's own git metadata (made by `git init` on the host, never by an agent)."""
ALLOWED_MODES = ("100644", "100755")
"""The only git file modes a variant's patch may create: regular files, executable or not (120000 is a
symbolic link, 160000 a submodule)."""
_MODE_LINE = re.compile(r"^(?:new file mode|new mode|old mode|deleted file mode|index [0-9a-fA-F]+\.\.[0-9a-fA-F]+)"
                        r" (\d{6})\s*$")


def unsafe_entry(root: str | Path) -> str:
    """'' when everything under `root` (itself resolved) is a directory or a regular file; else one line
    naming the first entry that is a symbolic link or a special file. Links are never followed."""
    base = Path(root)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (here == base and d in SKIP_DIRS))
        for name in sorted(dirnames) + sorted(filenames):
            kind = _kind(here / name)
            if kind:
                return f"{here / name}: {kind}; a variant holds only regular files and directories (no symbolic links)"
    return ""


def _kind(path: Path) -> str:
    """'' for a regular file or directory, else what it is."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        return f"cannot be examined ({e.strerror or e})"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"


def read_regular(path: str | Path) -> bytes:
    """The bytes of `path`, which must be a regular file reached without a symbolic link at its last part
    (`O_NOFOLLOW`); `OSError` with a one-line reason otherwise (what the link points at is never read)."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == getattr(os, "ELOOP", 40) or p.is_symlink():
            raise OSError(e.errno, "is a symbolic link; a variant holds only regular files and directories") \
                from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "is not a regular file; a variant holds only regular files and directories")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def patch_link_problem(patch: str) -> str:
    """'' when the git-format `patch` creates or changes only regular files; else one line saying which
    entry would become a symbolic link, a submodule or another non-file (such a patch is never applied)."""
    current = ""
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            current = line[len("diff --git "):]
            continue
        m = _MODE_LINE.match(line)
        if m and m.group(1) not in ALLOWED_MODES and not line.startswith(("old mode", "deleted file mode")):
            what = {"120000": "a symbolic link", "160000": "a submodule"}.get(m.group(1), f"mode {m.group(1)}")
            return f"the patch makes {current or 'an entry'} {what}; a variant holds only regular files"
    return ""
