"""Executors: the option's syntax, local threads, and a real Ray cluster on 127.0.0.1 (a killed worker's
task is rerun; the function's own exceptions are not)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from evolve.errors import ConfigError
from evolve.run.executor import ExecutorConfig, LocalExecutor, make_executor, parse_executor


def test_executor_option_syntax():
    assert parse_executor("local") == ExecutorConfig()
    assert parse_executor("ray") == ExecutorConfig(backend="ray")
    assert parse_executor("ray=10.0.0.1:6379").address == "10.0.0.1:6379"
    for bad in ("threads", "ray=", "local=x", ""):
        with pytest.raises(ConfigError, match="--executor must be"):
            parse_executor(bad)


def _square(x: int) -> int:
    return x * x


def _fail() -> None:
    raise ValueError("the function's own error")


def _pid_then_sleep(path: str, seconds: float) -> int:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


def test_local_executor_runs_in_threads():
    with LocalExecutor(2) as ex:
        assert not ex.remote
        assert [f.result() for f in [ex.submit(_square, i) for i in range(4)]] == [0, 1, 4, 9]
        with pytest.raises(ValueError, match="own error"):
            ex.submit(_fail).result()


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray", reason="Ray is the optional extra `evolve[ray]`")
    ex = make_executor(ExecutorConfig(backend="ray", num_cpus=2, max_retries=2), workers=2)
    yield ex
    ex.close()


def test_ray_runs_functions_in_worker_processes(ray_executor):
    assert ray_executor.remote
    futures = [ray_executor.submit(_square, i) for i in range(6)]
    assert [f.result(timeout=120) for f in futures] == [0, 1, 4, 9, 16, 25]
    with pytest.raises(ValueError, match="own error"):  # not retried: the function's answer
        ray_executor.submit(_fail).result(timeout=60)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


def test_the_one_machine_cluster_listens_on_loopback_only(ray_executor):
    """Issue 18 item 12: no process of the cluster this run started (GCS, raylet, agents, workers) listens on an
    address another machine can reach."""
    import re
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        pytest.skip("`ss` (iproute2) is not installed")
    assert ray_executor.submit(_square, 3).result(timeout=120) == 9  # a worker is up
    ours = _descendants(os.getpid())
    rows = subprocess.run(["ss", "-Hltnup"], capture_output=True, text=True, check=True).stdout.splitlines()
    listening = []
    for row in rows:
        pids = {int(p) for p in re.findall(r"pid=(\d+)", row)}
        if pids & ours:
            listening.append((row.split()[4], row))
    assert len(listening) >= 3, rows  # GCS, raylet, a worker at least: the check sees the cluster
    loopback = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::ffff:127\.\d+\.\d+\.\d+\]|\[::1\]|localhost):\d+$")
    exposed = [row for address, row in listening if not loopback.match(address)]
    assert not exposed, "\n".join(exposed)


def test_ray_reruns_a_task_whose_worker_was_killed(ray_executor, tmp_path: Path):
    pids = tmp_path / "pids"
    fut = ray_executor.submit(_pid_then_sleep, str(pids), 3.0)
    deadline = time.time() + 60
    while not (pids.exists() and pids.read_text().strip()):
        assert time.time() < deadline, "the task never started"
        time.sleep(0.1)
    first = int(pids.read_text().split()[0])
    assert first != os.getpid()
    os.kill(first, signal.SIGKILL)
    second = fut.result(timeout=120)
    assert second != first and [int(p) for p in pids.read_text().split()] == [first, second]
