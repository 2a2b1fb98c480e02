"""Docker-only reliability: pid limit, a container killed from outside, the pool, bad images and daemons."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import SandboxConfig, SandboxDied, SandboxError
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
    docker_client().api.kill(sb.container.id)
    with pytest.raises(SandboxDied, match="died"):
        sb.exec("echo hi")
    assert not sb.alive()
    sb.stop()


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


def test_prune_removes_leftovers(repo: Path):
    sb = DockerSandbox.start(SandboxConfig(run_id="prune-test"), workspace=repo)
    from sandbox.docker import prune

    containers, _ = prune("prune-test")
    assert containers == 1
    time.sleep(0.2)
    assert not docker_client().containers.list(all=True, filters={"label": "evolve.run=prune-test"})
    sb.stop()  # safe after prune


def test_pool_close_stops_every_sandbox_it_started(repo: Path):
    pool = SandboxPool(lambda: DockerSandbox.start(SandboxConfig(run_id="pool-close-test"), workspace=repo), size=2)
    pool.acquire()  # handed out and never released
    pool.close()
    left = docker_client().containers.list(all=True, filters={"label": "evolve.run=pool-close-test"})
    assert left == []
