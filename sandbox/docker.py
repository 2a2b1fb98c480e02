"""Docker sandboxes through docker-py: one container per sandbox, commands through the in-sandbox server."""

from __future__ import annotations

import io
import logging
import os
import shlex
import shutil
import socket
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import docker
import docker.errors

from sandbox.base import WORKDIR, SandboxDied, SandboxError
from sandbox.channel import SERVER_ARGV, FramedSocketChannel, ServerClient
from sandbox.config import SandboxConfig, parse_memory
from sandbox.owner import owner_labels, owner_state
from sandbox.served import ServedSandbox

log = logging.getLogger(__name__)

LABEL = "evolve.sandbox"
"""Every container and snapshot image Evolve makes carries this label (`evolve sandbox prune` uses it)."""
BASE_FILE = "/.evolve-base-commit"
"""Where a sandbox records its base commit, so snapshots keep diffing against the original base."""
CHANNEL_DIR = "/.evolve-channel"
"""Where the container sees its channel directory (`SandboxConfig.direct_channel`), read-only: the host listens
on a unix socket there and the server connects; the container can create, change or chmod nothing on the host."""
SOCKET_NAME = "host.sock"
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"]
"""The only capabilities a sandbox keeps (root in a container is the host's uid 0): what package installs, file
ownership and test suites that switch users need. Dropped from Docker's default set: MKNOD (device files),
FSETID, SETFCAP, SETPCAP, NET_RAW, NET_BIND_SERVICE, SYS_CHROOT, AUDIT_WRITE."""
SECURITY_OPT = ["no-new-privileges"]
"""No setuid binary or file capability raises a process's privileges inside the sandbox."""
CHANNEL_PREFIX = "evolve-channel-"
CHANNEL_LABEL = "evolve.channel"
"""Label naming the host directory of a container's channel."""

INIT_PY = """import ctypes, os, signal
from time import sleep
try:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
except Exception:
    pass
signal.signal(signal.SIGINT, signal.SIG_DFL)
while True:
    sleep(1)
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"""
INIT_ARGV = ["/bin/sh", "-c", 'command -v python3 >/dev/null 2>&1 && exec python3 -c "$1"; exec sleep infinity',
             "evolve-init", INIT_PY]
"""The container's first process: it reaps orphans and nothing inside can end it. The kernel drops every signal sent
to a pid namespace's init from inside unless the init handles it, and this one handles none (Python's SIGINT handler
is reset); it is non-dumpable, so no ptrace either. So a command cannot stop its container and pass the stop off as
the infrastructure's failure. Without python3 in the image, `sleep infinity` (the server cannot run there anyway)."""

_client: docker.DockerClient | None = None


def docker_client() -> docker.DockerClient:
    """The process's Docker client; a clear error when the daemon cannot be reached."""
    global _client
    if _client is None:
        try:
            client = docker.from_env(timeout=300)
            client.ping()
        except docker.errors.DockerException as e:
            raise SandboxError(
                f"cannot reach the Docker daemon ({str(e).splitlines()[0][:160]}). Start it with "
                "`bash scripts/setup.sh` (installs and starts dockerd), or use `--sandbox local`.") from None
        _client = client
    return _client


class DockerSandbox(ServedSandbox):
    """A running container with the task repository at `/testbed`."""

    def __init__(self, container, config: SandboxConfig, channel_dir: Path | None = None):
        self.container = container
        self.config = config
        self.id = container.id[:12]
        self.channel_dir = channel_dir
        self._client = self._connect()
        self.direct = channel_dir is not None and self._upgrade(channel_dir)
        """Whether commands go over the host's unix socket (else through the daemon's exec stream)."""
        self.base_commit = self._init_base()

    # --- start ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, config: SandboxConfig | None = None, image: str | None = None,
              workspace: str | Path | None = None, name: str | None = None) -> "DockerSandbox":
        """Start a container from `image` (default `config.image`). With `workspace`, a host directory
        (a git repository) is copied to `/testbed` first."""
        config = config or SandboxConfig()
        image = image or config.image
        client = docker_client()
        labels = {LABEL: "1", "evolve.run": config.run_id, **owner_labels(), **config.labels}
        memory = parse_memory(config.memory)
        channel_dir = Path(tempfile.mkdtemp(prefix=CHANNEL_PREFIX)) if config.direct_channel else None
        volumes = {str(channel_dir): {"bind": CHANNEL_DIR, "mode": "ro"}} if channel_dir else None
        if channel_dir is not None:
            labels[CHANNEL_LABEL] = str(channel_dir)  # `prune` removes it with a dead owner's container
        cname = name or f"evolve-{uuid.uuid4().hex[:10]}"
        try:
            try:
                client.images.get(image)  # never let `run` try a registry pull
                container = client.containers.run(
                    image, INIT_ARGV, detach=True, init=False, labels=labels, name=cname,
                    network_mode="bridge" if config.network else "none",
                    nano_cpus=int(config.cpus * 1e9), mem_limit=memory, memswap_limit=memory,
                    pids_limit=config.pids_limit, environment={"PAGER": "cat", "GIT_PAGER": "cat"},
                    volumes=volumes, cap_drop=["ALL"], cap_add=CAPABILITIES, security_opt=SECURITY_OPT,
                )
            except docker.errors.ImageNotFound:
                hint = ("build it with `evolve sandbox build-base`" if image.startswith("evolve-")
                        else "pull it (`docker pull`) or build it locally; no registry is reachable here")
                raise SandboxError(f"Docker image {image!r} not found: {hint}") from None
            except docker.errors.APIError as e:
                _remove_container(client, cname)  # created, then failed to start
                if channel_dir is not None:  # a daemon that cannot mount the host's directory (file sharing)
                    log.info("starting %s without the channel directory (%s); commands use the relay",
                             image, e.explanation or e)
                    _remove_dir(channel_dir)
                    return cls.start(config.model_copy(update={"direct_channel": False}), image, workspace, cname)
                raise SandboxError(f"Docker could not start {image!r}: {e.explanation or e}") from None
            try:
                if workspace is not None:
                    cls._put_directory(container, Path(workspace), WORKDIR)
                return cls(container, config, channel_dir)
            except BaseException:
                container.remove(force=True)
                raise
        except BaseException:
            _remove_dir(channel_dir)
            raise

    @staticmethod
    def _put_directory(container, src: Path, dest: str) -> None:
        if not src.is_dir():
            raise SandboxError(f"workspace {src} is not a directory")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=os.path.basename(dest.rstrip("/")))
        container.put_archive(os.path.dirname(dest.rstrip("/")) or "/", buf.getvalue())

    def _connect(self) -> ServerClient:
        api = self.container.client.api
        try:
            exec_id = api.exec_create(self.container.id, SERVER_ARGV, stdin=True, stdout=True, stderr=True,
                                      tty=False)["Id"]
            raw = api.exec_start(exec_id, socket=True, tty=False)
        except docker.errors.APIError as e:
            raise self._died(f"could not start the command server: {e.explanation or e}") from None
        sock = getattr(raw, "_sock", raw)
        sock.settimeout(None)
        return ServerClient(FramedSocketChannel(sock), describe_death=self._died)

    def _upgrade(self, channel_dir: Path) -> bool:
        """Listen on a unix socket in the channel directory, which the container sees read-only, and let the
        server connect to it once; the socket is gone before anything untrusted runs."""
        path = channel_dir / SOCKET_NAME
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(1)
            return self._client.upgrade(f"{CHANNEL_DIR}/{SOCKET_NAME}", listener)
        finally:
            listener.close()
            path.unlink(missing_ok=True)

    def _init_base(self) -> str:
        q = shlex.quote(WORKDIR)
        r = self._client.exec(
            f"mkdir -p {q} && cd {q} && if [ -s {BASE_FILE} ]; then cat {BASE_FILE}; "
            f"elif git rev-parse --verify -q HEAD >/dev/null 2>&1; then git rev-parse HEAD | tee {BASE_FILE}; fi",
            timeout=60, session=None, max_output=1000, cwd="/")
        return r.output.strip() if r.exit_code == 0 else ""

    # --- files ----------------------------------------------------------------------------------
    def copy_in(self, host_path: str, path: str) -> None:
        src = Path(host_path)
        if src.is_dir():
            self._put_directory(self.container, src, self._abs(path))
        else:
            self.write_file(path, src.read_bytes())

    def copy_out(self, path: str, host_path: str) -> None:
        try:
            stream, _ = self.container.get_archive(self._abs(path))
        except docker.errors.NotFound:
            raise SandboxError(f"{path} does not exist in sandbox {self.id}") from None
        buf = io.BytesIO(b"".join(stream))
        dest = Path(host_path)
        with tarfile.open(fileobj=buf) as tar:
            members = tar.getmembers()
            if len(members) == 1 and members[0].isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
                return
            dest.mkdir(parents=True, exist_ok=True)
            top = members[0].name.split("/")[0]
            for m in members:
                m.name = os.path.relpath(m.name, top)
            tar.extractall(dest, members=[m for m in members if m.name != "."], filter="data")

    # --- state ----------------------------------------------------------------------------------
    def snapshot(self, name: str | None = None) -> str:
        tag = name or uuid.uuid4().hex[:12]
        try:
            image = self.container.commit(repository="evolve-snapshot", tag=tag,
                                          conf={"Labels": {LABEL: "1", "evolve.run": self.config.run_id,
                                                           **owner_labels()}})
        except docker.errors.NotFound:
            raise self._died() from None
        log.debug("snapshot %s of %s", image.id[:19], self.id)
        return f"evolve-snapshot:{tag}"

    def alive(self) -> bool:
        return not self._client.dead and self._client.ping()

    def _died(self, detail: str = "") -> SandboxDied:
        """Why the sandbox cannot answer. Inside: the container still runs and recorded no out-of-memory kill, so its
        command server was ended (or stalled) from inside; the container's first process cannot be signalled from
        inside (`INIT_ARGV`), so a stopped container was stopped from outside."""
        inside = False
        try:
            self.container.reload()
            if self.container.attrs["State"].get("Running"):  # the daemon's view lags a kill from outside:
                inside = self._standing()  # a new process must start there, after the server ended
                self.container.reload()
            state = self.container.attrs["State"]
            why = "out of memory" if state.get("OOMKilled") else f"status {state['Status']}, exit {state.get('ExitCode')}"
            inside = inside and bool(state.get("Running")) and not state.get("OOMKilled")
        except docker.errors.NotFound:
            why = "container removed"
        except docker.errors.DockerException as e:
            why = f"daemon error: {e}"
        return SandboxDied(f"sandbox {self.id} died ({why}){': ' + detail if detail else ''}", inside=inside)

    def _standing(self) -> bool:
        """True when the container still runs a new command: its first process outlived the server. A kill or removal
        from outside ends that process first (the rest of the container dies with it), so no command starts then."""
        try:
            ok = self.container.exec_run(["true"]).exit_code == 0
        except docker.errors.DockerException:
            return False
        time.sleep(0.5)  # an out-of-memory kill is recorded by an event that may trail the kill itself
        return ok

    def stop(self) -> None:
        self._client.close()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                log.warning("could not remove container %s: %s", self.id, e)
        _remove_dir(self.channel_dir)


def _remove_container(client: docker.DockerClient, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.DockerException:
        pass  # never created, or already gone


def _remove_dir(path: Path | None) -> None:
    """Remove a sandbox's channel directory (a stale socket at most)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def prune(run_id: str | None = None, force: bool = False) -> tuple[int, int, int]:
    """Remove Evolve's containers and snapshot images whose owner process is dead (every one with
    `force`), only those of `run_id` when given. Returns (containers, images) removed and how many were
    kept because their owner is alive (or on another host)."""
    client = docker_client()
    run_filter = [f"evolve.run={run_id}"] if run_id is not None else []
    removed_c = removed_i = kept = 0
    for c in client.containers.list(all=True, filters={"label": [LABEL, *run_filter]}):
        if not force and owner_state(c.labels) != "dead":
            kept += 1
            continue
        try:
            c.remove(force=True)
            removed_c += 1
        except docker.errors.NotFound:
            pass  # its owner removed it meanwhile
        channel = Path(c.labels.get(CHANNEL_LABEL, ""))
        if channel.parent == Path(tempfile.gettempdir()) and channel.name.startswith(CHANNEL_PREFIX):
            _remove_dir(channel)
    for img in client.images.list(filters={"label": [LABEL, *run_filter]}):
        if not any(t.startswith("evolve-snapshot:") for t in img.tags):
            continue
        if not force and owner_state(img.labels or {}) != "dead":
            kept += 1
            continue
        try:
            client.images.remove(img.id, force=True)
            removed_i += 1
        except docker.errors.APIError as e:
            log.debug("could not remove snapshot image %s: %s", img.id[:19], e)
    return removed_c, removed_i, kept
