"""`evolve agent-r --executor ray`: the SWE search's branches (scripted replays in fresh Docker sandboxes and their
grading) and the splices' replays run as Ray tasks on a real cluster on 127.0.0.1 (2 CPUs), the driver samples and
stores. The same seeded search as with `local` gives the same tree, rewards, pairs and splices, even when a Ray
worker is killed in the middle of a branch (Ray reruns it). The option's parsing and refusal are checked on the CLI."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from evolve.agent_r.build import BuildResult, build_instance
from evolve.agent_r.config import AgentRConfig
from evolve.agent_r.verifier import policy_ask
from evolve.run.executor import Executor, LocalExecutor
from evolve.store import RunStore

INSTANCE = "bundled__unitconv-1"


def search(base: Path, name: str, executor: Executor) -> tuple[BuildResult, RunStore]:
    """The Agent-R search of test_agent_r_docker (its menu policy, 2 rollouts of 2 samples, depth 3)."""
    from agent.variant import AgentVariant
    from evolve.agent_r.swe import SweWorld
    from sandbox import SandboxConfig
    from tasks.registry import get_suite
    from tests.test_agent_r_docker import MenuPolicy

    inst = get_suite("bundled").select([INSTANCE])[0]
    policy = MenuPolicy()
    store = RunStore(base / name)
    world = SweWorld(inst, policy, AgentVariant.load(), SandboxConfig(run_id=f"agent-r-ray-{name}"), store, "run",
                     workers=2, executor=executor)
    res = build_instance(world, AgentRConfig(rollouts=2, n_gen=2, max_depth=3, max_pairs=4), policy_ask(policy),
                         instance_id=inst.instance_id, store=store, run_id="run", path_trajectory=world.path_trajectory)
    assert world.prefix_mismatches == 0
    return res, store


def tree(res: BuildResult, store: RunStore) -> list[tuple]:
    """Per node in tree order: depth, action, whether it ended the episode, reward, visits, value, and the
    stored trajectory's patch, status and SWE reward."""
    rows = []
    for n in res.root.walk():
        traj = store.get_trajectory(n.trajectory_id) if n.trajectory_id else None
        swe = store.rewards(n.trajectory_id).get("swe") if n.trajectory_id else None
        rows.append((n.depth, n.label, n.done, n.reward, n.visits, n.value, n.state,
                     traj.patch if traj else None, traj.status.value if traj else None,
                     swe.total if swe else None))
    return rows


def splices(res: BuildResult, store: RunStore) -> list[tuple]:
    out = []
    for _, d in sorted(store.documents("agent-r:splice"), key=lambda kv: kv[0]):
        out.append((d["kept"], d["bad_steps"], d["replay_steps"], d["replayed_state"], d["replayed_reward"]))
    out += [(t.patch, [s.response.content for s in t.steps], [s.response.train for s in t.steps])
            for t in res.splices]
    return out


def branch_workers() -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines() if "ray::run_branch" in line]


def search_killing(base: Path, name: str, executor: Executor, enough: Callable[[list[int]], bool]):
    """`search` in a thread while this one SIGKILLs Ray workers in the middle of a branch (seen running one
    twice, 0.2 s apart) until `enough(killed pids)`; returns the search's result, its store and the pids."""
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(got=search(base, name, executor)))
    runner.start()
    killed: list[int] = []
    deadline = time.time() + 300
    while runner.is_alive() and not enough(killed) and time.time() < deadline:
        seen = set(branch_workers())
        if seen:
            time.sleep(0.2)
            busy = [pid for pid in branch_workers() if pid in seen]
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
                time.sleep(2.0)  # Ray notices the death and reruns (or fails) the task
        time.sleep(0.1)
    runner.join(timeout=600)
    assert not runner.is_alive()
    return (*box["got"], killed)


@pytest.fixture(scope="module")
def cluster():
    """One Ray cluster on 127.0.0.1 (2 CPUs) for the module, owned by this executor (max 3 reruns a task)."""
    pytest.importorskip("ray", reason="Ray is the optional extra `evolve[ray]`")
    from evolve.run.executor import ExecutorConfig, RayExecutor
    from sandbox import prune_orphans

    with RayExecutor(ExecutorConfig(backend="ray", num_cpus=2)) as executor:
        yield executor
    for name in ("ray", "no-retries"):
        prune_orphans(f"agent-r-ray-{name}")  # the killed workers' sandboxes


@pytest.mark.docker
@pytest.mark.slow
def test_ray_branches_give_the_local_tree_even_with_a_killed_worker(tmp_path, docker_ready, cluster):
    with LocalExecutor(2) as local:
        want, local_store = search(tmp_path, "local", local)
    got, ray_store, killed = search_killing(tmp_path, "ray", cluster, enough=bool)
    assert killed, "no branch ever ran on a Ray worker"
    # (a) the same search: tree, per-node trajectories and rewards, pairs, verdicts and splices
    assert tree(got, ray_store) == tree(want, local_store)
    assert got.root.value >= 1 and got.splices
    strip = lambda s: {k: v for k, v in s.items() if not k.endswith("_ids") and k != "seconds"}  # noqa: E731
    assert strip(got.summary()) == strip(want.summary())
    assert splices(got, ray_store) == splices(want, local_store)
    # (b) every branch and every splice replay ran as a Ray task in another process, none with `local`
    events = [e for e in ray_store.events() if e["kind"] == "agent-r:remote_branch"]
    replays = len(ray_store.documents("agent-r:splice"))
    assert len(events) == len(got.root.walk()) - 1 + replays  # every child of the tree, every splice replay
    assert {r["id"] for r in ray_store.trajectory_summaries()} <= {e["trajectory_id"] for e in events}
    assert all(int(e["worker"].rsplit(":", 1)[1]) != os.getpid() for e in events)
    assert not [e for e in local_store.events() if e["kind"] == "agent-r:remote_branch"]
    # (c) the killed worker's branch was rerun: nothing is missing (the tree above is complete)
    assert len(got.root.walk()) == len(want.root.walk())
    local_store.close()
    ray_store.close()


@pytest.mark.docker
@pytest.mark.slow
def test_a_branch_lost_beyond_reruns_is_left_out_and_the_search_goes_on(tmp_path, docker_ready, cluster, caplog):
    """No reruns (`max_retries=0`, on the same cluster): the killed worker's branch (or splice replay) is lost,
    which drops that child (or splice) with a warning; the search itself finishes and is stored."""
    from evolve.run.executor import ExecutorConfig, RayExecutor

    no_retries = RayExecutor(ExecutorConfig(backend="ray", max_retries=0))  # joins the running cluster
    lost = lambda: [r for r in caplog.records if "could not run" in r.getMessage()]  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="evolve.agent_r.swe"):
        res, store, killed = search_killing(tmp_path, "no-retries", no_retries, enough=lambda k: bool(lost()))
    assert killed and lost(), "no kill landed inside a branch"
    assert store.document("agent-r:instance", f"run/{INSTANCE}") is not None  # the instance's search finished
    assert len(store.tree(tree_id=f"run/{INSTANCE}", kind="mcts")) == len(res.root.walk())
    store.close()


@pytest.mark.parametrize("args,msg", [
    (["bundled", "--executor", "dask"], "--executor must be local, ray or ray=ADDRESS, not 'dask'"),
    (["bundled", "--executor", "ray="], "--executor must be local, ray or ray=ADDRESS"),
    (["toolcall", "--executor", "ray"], "the toolcall world has none"),
    (["toolcall", "--executor", "ray=10.0.0.1:6379"], "use --executor local"),
])
def test_cli_executor_option_errors(args, msg, tmp_path):
    from typer.testing import CliRunner

    from evolve.cli import app
    from evolve.errors import user_errors

    r = CliRunner().invoke(app, ["agent-r", *args, "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, user_errors()) and msg in str(r.exception) and "\n" not in str(r.exception)
    assert not (tmp_path / "o").exists()  # refused before anything was made


def test_executor_option_reaches_the_run_config():
    from evolve.agent_r.loop import AgentRRunConfig, check_executor, run_agent_r
    from evolve.errors import ConfigError
    from evolve.run.executor import parse_executor

    cfg = AgentRRunConfig(executor=parse_executor("ray=10.0.0.1:6379"))
    assert (cfg.executor.backend, cfg.executor.address) == ("ray", "10.0.0.1:6379")
    assert AgentRRunConfig().executor.backend == "local"
    check_executor(cfg)  # a SWE suite: accepted
    toolcall = AgentRRunConfig(kind="toolcall", suite="toolcall", executor=parse_executor("ray"))
    with pytest.raises(ConfigError, match="toolcall world has none"):
        run_agent_r(toolcall, [object()], [], lambda spec: None)  # type: ignore[list-item]
