"""Local sandboxes for machines without Docker: a workspace directory confined with bubblewrap.

What the sandbox gets: a new user namespace (it is uid 0 inside, an unprivileged uid outside; as root
Evolve gives each sandbox a host uid of its own) with every capability dropped; new pid, ipc, uts,
cgroup and network namespaces (no network unless configured); a clean environment (PATH, HOME, LANG);
the host's `/usr` (and the `/bin`, `/lib*`, `/sbin` links or directories) read-only, the few `/etc`
files Python and git need, a synthetic `/etc/passwd`, `/etc/group` and `/etc/gitconfig`, the task
workspace read-write at `/testbed`, a private `/tmp` and an empty `/root`. Nothing else of the host:
not `/root`, `/home`, `/etc/shadow`, the checkout or other workspaces. Processes and memory are limited
by `sandbox.limits` (cgroups where writable, else rlimits; `sandbox.limits` says which). The sandbox dies
with the process that started it. Where the host cannot give all this (bubblewrap missing, user
namespaces disabled), starting fails with a `SandboxError`: it never runs unconfined.

The command server is the sandbox's pid 1 (`--as-pid-1`: no bubblewrap init holding copies of the host's pipes),
so the kernel drops the signals a command sends it (`kill -9 $PPID` does nothing), and it makes itself
non-dumpable, so commands of its uid cannot ptrace it or take its descriptors (`pidfd_getfd`, `/proc/1/fd`).

Workspaces and snapshots live under `sandbox_root()` with an `owner.json` naming the owning process;
`stop()` removes the workspace, the owner's exit removes its snapshots, and `prune_local()` removes what
dead owners left.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from sandbox.base import WORKDIR, SandboxDied, SandboxError
from sandbox.channel import SERVER_ARGV, PipeChannel, ServerClient
from sandbox.config import SandboxConfig, parse_memory
from sandbox.limits import Limits, prune_cgroups
from sandbox.owner import owner_labels, owner_state
from sandbox.served import ServedSandbox

log = logging.getLogger(__name__)

SYSTEM_DIRS = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"]
"""Top-level host directories the sandbox sees read-only (where they are symlinks, the same symlink)."""
ETC_FILES = ["alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
             "nsswitch.conf", "hosts", "ssl", "ca-certificates", "ca-certificates.conf", "mime.types",
             "os-release", "debian_version", "inputrc", "terminfo", "python3", "python3.11", "python3.12",
             "protocols", "services"]
"""The `/etc` entries Python, git and the shell tools need; nothing with secrets."""
PASSWD = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"
GITCONFIG = ("[user]\n\tname = evolve\n\temail = evolve@localhost\n[safe]\n\tdirectory = *\n"
             "[init]\n\tdefaultBranch = main\n")  # as in the Docker base image
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UID_BASE = 1 << 30
"""As root, each sandbox runs as a host uid drawn from [2^30, 2^30 + 2^24): no user on the host has it."""


def sandbox_root() -> Path:
    """Where local workspaces and snapshots live (`$EVOLVE_SANDBOX_DIR`, default `$TMPDIR/evolve-sandboxes`)."""
    return Path(os.environ.get("EVOLVE_SANDBOX_DIR") or Path(tempfile.gettempdir()) / "evolve-sandboxes")


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxError("the local sandbox needs bubblewrap, which is missing: `apt-get install bubblewrap` "
                           "(or use the docker sandbox)")
    return path


@lru_cache(maxsize=4)
def check_host(uid: int | None) -> None:
    """Refuse to start (SandboxError) where bubblewrap cannot confine: missing, or no user namespaces."""
    argv = [bwrap_path(), "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--uid", "0", "--gid", "0",
            *_system_binds(), "--proc", "/proc", "--dev", "/dev", "--clearenv", "--setenv", "PATH", PATH,
            "--die-with-parent", "true"]
    r = subprocess.run(argv, capture_output=True, text=True, cwd="/", user=uid, group=uid, extra_groups=[]
                       if uid is not None else None, timeout=60)
    if r.returncode != 0:
        raise SandboxError(
            "the local sandbox cannot confine commands here (bubblewrap could not create a user namespace: "
            f"{r.stderr.strip()[-200:] or 'exit %d' % r.returncode}); enable unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces) or use the docker sandbox")


def _system_binds() -> list[str]:
    argv: list[str] = []
    for entry in SYSTEM_DIRS:
        path = f"/{entry}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for entry in ETC_FILES:
        path = f"/etc/{entry}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    return argv


def _chown_tree(path: Path, uid: int) -> None:
    """Give a fresh copy (not yet seen by any sandbox) to the sandbox's uid, without following links."""
    os.lchown(path, uid, uid)
    for _, dirs, files, dirfd in os.fwalk(path):
        for name in dirs + files:
            os.chown(name, uid, uid, dir_fd=dirfd, follow_symlinks=False)


# PR_SET_PDEATHSIG (bubblewrap's --die-with-parent) fires when the *thread* that started the sandbox
# ends, so every sandbox is started from this one long-lived thread (pools start them from short-lived ones).
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evolve-bwrap")
_my_snapshots: list[Path] = []
_snap_lock = threading.Lock()


_creator = os.getpid()


@atexit.register
def _remove_my_snapshots() -> None:
    if os.getpid() != _creator:  # a forked child exiting: the snapshots are its parent's
        return
    with _snap_lock:
        for path in _my_snapshots:
            shutil.rmtree(path, ignore_errors=True)


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's `data` filter, dropping (not failing on) what it refuses: absolute paths, links that
    lead outside the destination, devices."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:
        log.warning("not copied out of the sandbox: %s", e)
        return None


def _write_owner(root: Path, run_id: str, kind: str) -> None:
    (root / "owner.json").write_text(json.dumps({**owner_labels(), "evolve.run": run_id, "kind": kind}))


class LocalSandbox(ServedSandbox):
    """A bubblewrap-confined workspace directory on the host."""

    def __init__(self, workspace: Path, config: SandboxConfig, owns_workspace: bool):
        self.workspace = workspace
        self.config = config
        self.id = workspace.parent.name
        self._owns = owns_workspace
        self.host_uid = UID_BASE + secrets.randbelow(1 << 24) if os.geteuid() == 0 else None
        check_host(None if self.host_uid is None else UID_BASE)  # once per process: any such uid will do
        if self.host_uid is not None:
            _chown_tree(workspace.parent, self.host_uid)
        mem = parse_memory(config.memory)
        self.limits = Limits(self.id, mem, config.pids_limit, self.host_uid)
        fds = []
        for text in (PASSWD, GROUP, GITCONFIG):
            r, w = os.pipe()
            os.write(w, text.encode())  # a few bytes: fits in the pipe's buffer
            os.close(w)
            fds.append(r)
        argv = self._argv(mem, fds)
        self._proc: subprocess.Popen | None = None
        try:
            self._proc = _spawner.submit(self._spawn, argv, fds).result()
            self._client = ServerClient(PipeChannel(self._proc), describe_death=self._describe_death)
            self.base_commit = self._init_base()
        except BaseException:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self.limits.cleanup()
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def _spawn(self, argv: list[str], fds: list[int]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=self._child_setup, pass_fds=fds, cwd="/", env={"PATH": PATH})

    def _child_setup(self) -> None:
        self.limits.child_setup()  # with the host's privileges (joins the cgroup), then drop them
        if self.host_uid is not None:
            os.setgroups([])
            os.setresgid(self.host_uid, self.host_uid, self.host_uid)
            os.setresuid(self.host_uid, self.host_uid, self.host_uid)

    @classmethod
    def start(cls, config: SandboxConfig | None = None, image: str | None = None,
              workspace: str | Path | None = None, name: str | None = None) -> "LocalSandbox":
        """Start on a copy of `workspace` (or of `image`, a directory made by `snapshot`)."""
        config = config or SandboxConfig(backend="local")
        bwrap_path()
        source = Path(workspace or image or "")
        if not (workspace or image) or not source.is_dir():
            raise SandboxError(f"the local sandbox needs a workspace directory, got {str(source)!r}")
        root = _new_dir(f"sb-{name or uuid.uuid4().hex[:10]}", config.run_id, "workspace")
        try:
            shutil.copytree(source, root / "testbed", symlinks=True)
            return cls(root / "testbed", config, owns_workspace=True)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _argv(self, mem: int, data_fds: list[int]) -> list[str]:
        argv = [bwrap_path(), "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--uid", "0", "--gid", "0",
                "--hostname", "sandbox", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv",
                "--setenv", "PATH", PATH, "--setenv", "HOME", "/root", "--setenv", "LANG", "C.UTF-8",
                "--setenv", "PAGER", "cat", "--setenv", "GIT_PAGER", "cat"]
        if self.config.network:
            argv += ["--share-net"] + (["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
                                       if os.path.exists("/etc/resolv.conf") else [])
        argv += _system_binds()
        argv += ["--proc", "/proc", "--dev", "/dev", "--bind", str(self.workspace), WORKDIR]
        for tmp in ("/tmp", "/var/tmp", "/root"):  # writable, private, bounded (tmpfs is memory)
            argv += ["--size", str(mem), "--tmpfs", tmp]
        for fd, dest in zip(data_fds, ("/etc/passwd", "/etc/group", "/etc/gitconfig")):
            argv += ["--ro-bind-data", str(fd), dest]
        return argv + ["--remount-ro", "/", "--chdir", WORKDIR] + SERVER_ARGV

    def _describe_death(self) -> SandboxDied:
        """Why the server is gone. Inside: bubblewrap exited by itself (it follows its child, the server) or still
        runs with a server that stopped answering, and the cgroup recorded no out-of-memory kill; the host's own
        kill of bubblewrap (stop, Ctrl-C) shows as a negative exit code. Nothing in the sandbox can signal
        bubblewrap's outer process: it is outside the sandbox's pid namespace."""
        try:
            code = self._proc.wait(timeout=2)  # it is ending: its last words are on stderr
        except subprocess.TimeoutExpired:
            code = None
        err = b""
        if code is not None and self._proc.stderr is not None:
            err = self._proc.stderr.read() or b""
        oom = bool(self.limits.oom_kills())
        inside = not oom and (code is None or code >= 0)
        why = "out of memory" if oom else "still running" if code is None else f"exit {code}"
        return SandboxDied(f"local sandbox {self.id} died ({why}){': ' + err.decode(errors='replace')[-300:] if err else ''}",
                           inside=inside)

    def _init_base(self) -> str:
        mark = ".git/evolve-base-commit"  # kept across snapshots, so diffs stay against the original base
        r = self._client.exec(f"if [ -s {mark} ]; then cat {mark}; else git rev-parse --verify -q HEAD | tee {mark}; fi",
                              60, None, 1000, WORKDIR)
        return r.output.strip() if r.exit_code == 0 else ""

    # --- files ----------------------------------------------------------------------------------
    # Copies go through the in-sandbox server as tar streams, so the sandbox's own confinement applies:
    # the host never follows a path (or a symlink) that the agent controls.
    def copy_in(self, host_path: str, path: str) -> None:
        src = Path(host_path)
        if not src.is_dir():
            self.write_file(path, src.read_bytes())
            return
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=".")
        tmp = f"/tmp/.evolve-copy-{uuid.uuid4().hex}.tar"
        self.write_file(tmp, buf.getvalue())
        dest = shlex.quote(self._abs(path))
        r = self.exec(f"mkdir -p {dest} && tar -xf {tmp} -C {dest} --no-same-owner; rc=$?; rm -f {tmp}; exit $rc",
                      timeout=300, cwd="/")
        if r.exit_code != 0:
            raise SandboxError(f"copy into {path} in sandbox {self.id} failed: {r.output[-300:]}")

    def copy_out(self, path: str, host_path: str) -> None:
        where = shlex.quote(self._abs(path))
        kind = self.exec(f"if [ -d {where} ]; then echo dir; elif [ -f {where} ]; then echo file; fi",
                         timeout=60, cwd="/").output.strip()
        if kind == "file":
            dest = Path(host_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(self.read_file(path))
            return
        if kind != "dir":
            raise SandboxError(f"{path} does not exist in sandbox {self.id}")
        tmp = f"/tmp/.evolve-copy-{uuid.uuid4().hex}.tar"
        r = self.exec(f"tar -cf {tmp} -C {where} .", timeout=300, cwd="/")
        if r.exit_code != 0:
            raise SandboxError(f"copy of {path} out of sandbox {self.id} failed: {r.output[-300:]}")
        try:
            data = self.read_file(tmp)
        finally:
            self.exec(f"rm -f {tmp}", timeout=60, cwd="/")
        Path(host_path).mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(host_path, filter=_safe_member)

    # --- state ----------------------------------------------------------------------------------
    def snapshot(self, name: str | None = None) -> str:
        """Copy the workspace; `LocalSandbox.start(image=path)` starts from the copy. The copy lives until
        the process that made it exits (or `prune_local` finds its owner dead)."""
        root = _new_dir(f"snap-{name or uuid.uuid4().hex[:10]}", self.config.run_id, "snapshot")
        shutil.copytree(self.workspace, root / "testbed", symlinks=True)
        with _snap_lock:
            _my_snapshots.append(root)
        return str(root / "testbed")

    def alive(self) -> bool:
        return self._proc.poll() is None and not self._client.dead and self._client.ping()

    def stop(self) -> None:
        self._client.close()
        self.limits.cleanup()
        if self._owns:
            shutil.rmtree(self.workspace.parent, ignore_errors=True)


def _new_dir(name: str, run_id: str, kind: str) -> Path:
    base = sandbox_root()
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # each sandbox's own uid must be able to reach its workspace
        for parent in base.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise SandboxError(f"local sandboxes live under {base}, but {parent} is closed to other users "
                                   "(no o+x); set EVOLVE_SANDBOX_DIR to a directory under /tmp")
    os.chmod(base, 0o711)  # sandboxes' uids reach their own directory, list nothing
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    _write_owner(root, run_id, kind)
    return root


def prune_local(run_id: str | None = None, force: bool = False) -> tuple[int, int]:
    """Remove local workspaces and snapshots whose owner process is dead (all of them with `force`),
    only those of `run_id` when given; returns (workspaces, snapshots) removed."""
    base = sandbox_root()
    removed = [0, 0]
    for root in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            owner = json.loads((root / "owner.json").read_text())
        except (OSError, ValueError):
            owner = {}
        if run_id is not None and owner.get("evolve.run") != run_id:
            continue
        if not force and owner_state(owner) != "dead":
            continue
        shutil.rmtree(root, ignore_errors=True)
        removed[owner.get("kind") == "snapshot"] += 1
    prune_cgroups()
    return removed[0], removed[1]
