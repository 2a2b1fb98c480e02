"""Local sandboxes for machines without Docker: a workspace directory isolated with bubblewrap.

The sandbox sees the host's system read-only, its workspace read-write at `/testbed`, a private `/tmp`,
no network and its own pid namespace. It runs the same command server as a Docker sandbox. Limits:
memory is capped per process (RLIMIT_AS), not per sandbox; there is no pid limit for root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from sandbox.base import WORKDIR, SandboxError
from sandbox.channel import SERVER_ARGV, PipeChannel, ServerClient
from sandbox.config import SandboxConfig, parse_memory
from sandbox.served import ServedSandbox

SKIP_ROOT = {"proc", "dev", "tmp", "sys", "run", "testbed", "lost+found"}


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxError("the local sandbox needs bubblewrap, which is missing: `apt-get install bubblewrap` "
                           "(or use the docker sandbox)")
    return path


class LocalSandbox(ServedSandbox):
    """A bubblewrap-isolated workspace directory on the host."""

    def __init__(self, workspace: Path, config: SandboxConfig, owns_workspace: bool):
        self.workspace = workspace
        self.config = config
        self.id = workspace.name
        self._owns = owns_workspace
        self._proc = subprocess.Popen(self._argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, preexec_fn=self._limits)
        self._client = ServerClient(PipeChannel(self._proc), describe_death=self._describe_death)
        self.base_commit = self._init_base()

    @classmethod
    def start(cls, config: SandboxConfig | None = None, image: str | None = None,
              workspace: str | Path | None = None, name: str | None = None) -> "LocalSandbox":
        """Start on a copy of `workspace` (or of `image`, a directory made by `snapshot`)."""
        config = config or SandboxConfig(backend="local")
        bwrap_path()
        source = Path(workspace or image or "")
        if not (workspace or image) or not source.is_dir():
            raise SandboxError(f"the local sandbox needs a workspace directory, got {str(source)!r}")
        root = Path(tempfile.mkdtemp(prefix=f"evolve-{name or uuid.uuid4().hex[:10]}-"))
        dest = root / "testbed"
        shutil.copytree(source, dest, symlinks=True)
        return cls(dest, config, owns_workspace=True)

    def _argv(self) -> list[str]:
        argv = [bwrap_path(), "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--new-session"]
        if not self.config.network:
            argv.append("--unshare-net")
        for entry in sorted(os.listdir("/")):
            if entry in SKIP_ROOT:
                continue
            path = f"/{entry}"
            argv += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", str(self.workspace), WORKDIR,
                 "--chdir", WORKDIR, "--setenv", "HOME", "/tmp", "--setenv", "PAGER", "cat",
                 "--setenv", "GIT_PAGER", "cat"]
        return argv + SERVER_ARGV

    def _limits(self) -> None:
        import resource

        mem = parse_memory(self.config.memory)
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))

    def _describe_death(self) -> str:
        code = self._proc.poll()
        err = b""
        if code is not None and self._proc.stderr is not None:
            err = self._proc.stderr.read() or b""
        return f"local sandbox {self.id} died (exit {code}){': ' + err.decode(errors='replace')[-300:] if err else ''}"

    def _init_base(self) -> str:
        mark = ".git/evolve-base-commit"  # kept across snapshots, so diffs stay against the original base
        r = self._client.exec(f"if [ -s {mark} ]; then cat {mark}; else git rev-parse --verify -q HEAD | tee {mark}; fi",
                              60, None, 1000, WORKDIR)
        return r.output.strip() if r.exit_code == 0 else ""

    # --- files ----------------------------------------------------------------------------------
    def _host_path(self, path: str) -> Path:
        full = os.path.normpath(self._abs(path))
        if not (full == WORKDIR or full.startswith(WORKDIR + "/")):
            raise SandboxError(f"the local sandbox copies files only under {WORKDIR}, not {path}")
        return self.workspace / os.path.relpath(full, WORKDIR)

    def copy_in(self, host_path: str, path: str) -> None:
        src, dest = Path(host_path), self._host_path(path)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)

    def copy_out(self, path: str, host_path: str) -> None:
        src = self._host_path(path)
        if not src.exists():
            raise SandboxError(f"{path} does not exist in sandbox {self.id}")
        if src.is_dir():
            shutil.copytree(src, host_path, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, host_path)

    # --- state ----------------------------------------------------------------------------------
    def snapshot(self, name: str | None = None) -> str:
        """Copy the workspace; `LocalSandbox.start(image=path)` starts from the copy."""
        dest = Path(tempfile.mkdtemp(prefix=f"evolve-snapshot-{name or uuid.uuid4().hex[:8]}-")) / "testbed"
        shutil.copytree(self.workspace, dest, symlinks=True)
        return str(dest)

    def alive(self) -> bool:
        return self._proc.poll() is None and not self._client.dead and self._client.ping()

    def stop(self) -> None:
        self._client.close()
        if self._owns:
            shutil.rmtree(self.workspace.parent, ignore_errors=True)
