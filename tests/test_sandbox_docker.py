"""Docker-only reliability: pid limit, a container killed from outside, the pool, bad images and daemons, the
command channel (the shared unix socket, and the daemon's relay where the socket cannot be reached)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.graph import Agent
from agent.replay import ScriptedPolicy
from sandbox import SandboxConfig, SandboxDied, SandboxError
from tests.test_agent_loop import INSTANCE, call
from sandbox.docker import DockerSandbox, docker_client
from sandbox.pool import SandboxPool

pytestmark = pytest.mark.usefixtures("docker_ready")


def test_fork_bomb_is_held_by_the_pid_limit(repo: Path):
    with DockerSandbox.start(SandboxConfig(pids_limit=64), workspace=repo) as sb:
        r = sb.exec("bomb() { bomb | bomb & }; bomb", timeout=5)
        assert "Resource temporarily unavailable" in r.output or r.timed_out
        stats = sb.container.stats(stream=False)
        assert stats["pids_stats"].get("current", 0) <= 64
        sb.reset()  # kills what the bomb left
        assert sb.exec("echo alive", timeout=20).output == "alive\n"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_container_killed_from_outside_raises_sandbox_died(repo: Path):
    sb = DockerSandbox.start(workspace=repo)
    assert sb.direct  # the end of the server's unix socket is the news
    docker_client().api.kill(sb.container.id)
    with pytest.raises(SandboxDied, match="died"):
        sb.exec("echo hi")
    assert not sb.alive()
    sb.stop()


@pytest.mark.parametrize("direct", [True, False], ids=["unix-socket", "relay"])
def test_commands_go_over_the_channel_the_config_names(repo: Path, direct: bool):
    """`direct_channel` (the default): the server's unix socket in the shared directory carries the commands;
    off: the daemon's exec stream. Same results either way; the directory goes with the sandbox."""
    sb = DockerSandbox.start(SandboxConfig(direct_channel=direct), workspace=repo)
    try:
        assert sb.direct is direct and (sb.channel_dir is not None) is direct
        r = sb.exec("echo out; echo err >&2; exit 3")
        assert (r.output, r.exit_code) == ("out\nerr\n", 3)
        sb.write_file("x.bin", bytes(range(256)) * 64)
        assert sb.read_file("x.bin") == bytes(range(256)) * 64
        assert sb.exec("seq 1 200000 | wc -l").output.strip() == "200000"
        sb.reset()
        if direct:  # nothing of the server's is left in the shared directory once it is connected
            assert list(sb.channel_dir.iterdir()) == []
    finally:
        sb.stop()
    assert sb.channel_dir is None or not sb.channel_dir.exists()


def test_an_unreachable_socket_keeps_the_relay(repo: Path, tmp_path: Path):
    """A daemon on another machine: the host listens on a socket the server cannot reach (the directory is not
    shared), the server says so on the relay, and every command still runs there."""
    import socket

    with DockerSandbox.start(SandboxConfig(direct_channel=False), workspace=repo) as sb:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / "host.sock"))
        listener.listen(1)
        try:
            assert sb._client.upgrade("/.evolve-channel/host.sock", listener, timeout=2) is False
        finally:
            listener.close()
        assert sb.exec("echo still here").output == "still here\n"


ATTACK = ("cp /bin/bash /.evolve-channel/sbash && chmod 4755 /.evolve-channel/sbash && chmod 777 /.evolve-channel; "
          "mknod /.evolve-channel/disk b 8 0; chmod 666 /.evolve-channel/disk; "
          "touch /.evolve-channel/planted; ln -s / /.evolve-channel/root; mkdir /.evolve-channel/d; "
          "mount -o remount,rw /.evolve-channel; echo done")


def _host_view(path: Path) -> list[tuple[str, int]]:
    return sorted((p.name, p.lstat().st_mode) for p in path.iterdir())


def test_the_agent_can_change_nothing_on_the_host_through_the_channel_directory(repo: Path):
    """Issue 18 item 1, attacked as the agent would (its bash tool runs exactly this in the sandbox): a setuid
    root shell, a device node of the host's disk, a chmod of the directory. The directory is read-only in the
    container, the capabilities that would matter are gone, and no-new-privileges holds."""
    with DockerSandbox.start(workspace=repo) as sb:
        assert sb.direct and sb.channel_dir is not None
        before = sb.channel_dir.stat().st_mode
        traj = Agent(ScriptedPolicy([call("bash", command=ATTACK), call("submit")])).run(INSTANCE, sb)
        observation = traj.steps[0].observation.content
        assert "Read-only file system" in observation and "done" in observation, observation
        assert _host_view(sb.channel_dir) == []  # nothing was created on the host
        assert sb.channel_dir.stat().st_mode == before
        status = sb.exec("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status").output
        caps = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines()}
        assert caps["NoNewPrivs"] == "1"
        eff = int(caps["CapEff"], 16)
        mknod, sys_admin, fsetid, setfcap = 27, 21, 4, 31
        for bit in (mknod, sys_admin, fsetid, setfcap):
            assert not eff & (1 << bit), f"capability bit {bit} is still effective ({caps['CapEff']})"
        assert sb.exec("mknod /tmp/disk b 8 0").exit_code != 0  # nowhere, not only in the channel directory
        assert sb.exec("echo still served").output == "still served\n"  # the channel itself still works


def test_nothing_else_can_connect_to_the_host_socket_after_the_handshake(repo: Path):
    """The host's socket exists only during the handshake: an agent command cannot reach the host's listener
    later (connecting would let it speak for the server)."""
    probe = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
             "s.connect('/.evolve-channel/host.sock')\"")
    with DockerSandbox.start(workspace=repo) as sb:
        r = sb.exec(probe)
        assert r.exit_code != 0 and ("No such file" in r.output or "refused" in r.output), r.output


def test_a_daemon_that_cannot_mount_the_channel_directory_still_starts_the_sandbox(repo: Path, monkeypatch):
    """Docker Desktop without file sharing of the temp dir, say: the real daemon refuses the bind mount (here: a
    directory name it cannot parse), the container is started again without it and uses the relay."""
    import tempfile

    import sandbox.docker as sandbox_docker

    made: list[str] = []
    mkdtemp = tempfile.mkdtemp

    def unmountable(prefix: str = "") -> str:
        made.append(mkdtemp(prefix=prefix + "a:b-"))
        return made[-1]

    monkeypatch.setattr(sandbox_docker.tempfile, "mkdtemp", unmountable)
    with DockerSandbox.start(workspace=repo, name="evolve-mount-fallback") as sb:
        assert not sb.direct and sb.channel_dir is None
        assert sb.exec("cat calc.py").exit_code == 0
    assert made and not Path(made[0]).exists()  # the refused directory is gone
    assert not docker_client().containers.list(all=True, filters={"name": "evolve-mount-fallback"})


def test_pool_hands_out_reset_sandboxes_and_replaces_dead_ones(repo: Path):
    with SandboxPool(lambda: DockerSandbox.start(workspace=repo), size=2) as pool:
        a = pool.acquire()
        a.write_file("dirty.txt", "x")
        pool.release(a)
        b, c = pool.acquire(), pool.acquire()
        for sb in (b, c):
            assert sb.diff() == ""
        dead_id = b.id
        docker_client().api.kill(b.container.id)
        pool.release(b)  # reset fails on the dead one: it is replaced
        pool.release(c)
        got = {pool.acquire().id, pool.acquire().id}
        assert dead_id not in got and len(got) == 2


def test_bad_image_is_a_clear_error():
    with pytest.raises(SandboxError, match="not found"):
        DockerSandbox.start(image="evolve-no-such-image:nope")


def test_bad_memory_limit_is_a_clear_error():
    with pytest.raises(SandboxError, match="bad memory limit"):
        DockerSandbox.start(SandboxConfig(memory="lots"))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_cli_missing_daemon_is_one_line_without_traceback():
    r = _cli("sandbox", "prune", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cannot reach the Docker daemon" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3


def test_cli_bad_option_is_a_clear_error():
    r = _cli("sandbox", "build-base", "--method", "carrier-pigeon")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "auto, debootstrap or pull" in r.stderr


LEFTOVER = """
import sys, time
sys.path.insert(0, {root!r})
from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox
sb = DockerSandbox.start(SandboxConfig(run_id={run!r}), workspace={repo!r})
sb.snapshot("prune-test-" + {run!r})
print(sb.container.id, flush=True)
time.sleep(300)
"""


def _leftover(run: str, repo: Path) -> tuple[subprocess.Popen, str]:
    """A process that starts a sandbox and a snapshot of run `run`, then waits to be killed."""
    code = LEFTOVER.format(root=str(Path(__file__).parents[1]), run=run, repo=str(repo))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def _containers(run: str) -> list:
    return docker_client().containers.list(all=True, filters={"label": f"evolve.run={run}"})


def _snapshots(run: str) -> list:
    return docker_client().images.list(filters={"label": f"evolve.run={run}"})


def test_prune_keeps_what_live_owners_hold_and_removes_what_dead_ones_left(repo: Path):
    from sandbox.docker import prune

    live, live_id = _leftover("prune-live", repo)
    dead, dead_id = _leftover("prune-dead", repo)
    mine = DockerSandbox.start(SandboxConfig(run_id="prune-live"), workspace=repo)
    try:
        dead.kill()
        dead.wait()
        assert prune("prune-live") == (0, 0, 3)  # a live run's containers and snapshot stay
        assert prune("prune-other") == (0, 0, 0)
        assert len(_containers("prune-dead")) == 1 and len(_snapshots("prune-dead")) == 1
        dead_channel = Path(_containers("prune-dead")[0].labels["evolve.channel"])
        assert dead_channel.is_dir()  # the killed owner could not remove its channel directory
        removed = prune()  # every run: only dead owners' leftovers go (other tests' may be among them)
        assert removed[0] >= 1 and removed[1] >= 1 and removed[2] >= 3
        assert _containers("prune-dead") == [] and _snapshots("prune-dead") == []
        assert not dead_channel.exists() and mine.channel_dir.is_dir()
        assert {c.id for c in _containers("prune-live")} == {live_id, mine.container.id}
        assert mine.exec("echo still here").output == "still here\n"
        r = _cli("sandbox", "prune", "--run", "prune-live")
        assert r.returncode == 0 and "kept 3 owned by live processes" in r.stdout
        assert len(_containers("prune-live")) == 2
        r = _cli("sandbox", "prune", "--run", "prune-live", "--force")
        assert r.returncode == 0 and "removed 2 containers, 1 snapshot images" in r.stdout
        assert _containers("prune-live") == [] and _snapshots("prune-live") == []
    finally:
        for p in (live, dead):
            p.kill()
            p.wait()
        mine.stop()  # safe after prune
        prune("prune-live", force=True)


def test_prune_orphans_at_the_start_of_a_run_removes_a_killed_run_s_containers(repo: Path):
    from sandbox.prune import prune_orphans

    dead, dead_id = _leftover("orphan-run", repo)
    other, other_id = _leftover("orphan-other-run", repo)
    try:
        dead.kill()
        other.kill()
        dead.wait()
        other.wait()
        mine = DockerSandbox.start(SandboxConfig(run_id="orphan-run"), workspace=repo)
        pruned = prune_orphans("orphan-run")
        assert (pruned.containers, pruned.images) == (1, 1)
        assert [c.id for c in _containers("orphan-run")] == [mine.container.id]
        assert len(_containers("orphan-other-run")) == 1  # another run's leftovers are its own business
        mine.stop()
    finally:
        from sandbox.docker import prune

        prune("orphan-other-run", force=True)
        prune("orphan-run", force=True)


def test_pool_close_stops_every_sandbox_it_started(repo: Path):
    pool = SandboxPool(lambda: DockerSandbox.start(SandboxConfig(run_id="pool-close-test"), workspace=repo), size=2)
    pool.acquire()  # handed out and never released
    pool.close()
    left = docker_client().containers.list(all=True, filters={"label": "evolve.run=pool-close-test"})
    assert left == []
