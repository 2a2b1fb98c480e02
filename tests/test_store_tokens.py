"""Per-trajectory token totals kept in the run store (issue 22, speed: the dashboard's tokens sort summed every step's
JSON, 1.2 s on 10,000 trajectories): right after every kind of step write, filled in once for a store made before them
(resumable after a SIGKILL mid-fill), and what the dashboard's tokens sort reads."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from evolve import store_tokens
from evolve.store import DB_NAME, RunStore
from records import Message, Step, Trajectory, TrajectoryStatus
from tests.tui_fixtures import settle
from tui.app import EvolveApp
from tui.screens.dashboard import SORTS, DashboardScreen

ROOT = Path(__file__).resolve().parents[1]


def step(i: int, prompt: int, completion: int) -> Step:
    return Step(index=i, response=Message(role="assistant", content=f"step {i}"), prompt_tokens=prompt,
                completion_tokens=completion)


def stored(store: RunStore) -> dict[str, int]:
    return dict(store._rows("SELECT trajectory_id, tokens FROM trajectory_tokens"))


def truth(store: RunStore) -> dict[str, int]:
    """Each trajectory's tokens summed from its stored steps, in Python."""
    return {tid: sum(s.prompt_tokens + s.completion_tokens for s in store.get_trajectory(tid).steps)
            for tid in store.trajectory_ids()}


def test_totals_follow_every_write_of_steps(tmp_path: Path):
    with RunStore(tmp_path) as store:
        a = Trajectory(id="a", run_id="r", instance_id="i", steps=[step(0, 100, 10), step(1, 200, 20)])
        store.put_trajectory(a)  # header and steps in one transaction
        assert stored(store) == {"a": 330} == truth(store)
        store.append_step("a", step(2, 300, 30))  # a live episode's step
        assert stored(store)["a"] == 660
        store.append_step("a", step(1, 5, 5))  # the same index written again replaces the step
        assert stored(store)["a"] == 450 == truth(store)["a"]
        a.steps = [step(0, 100, 10), step(1, 5, 5), step(2, 300, 40)]
        a.status = TrajectoryStatus.submitted
        store.put_trajectory(a)  # the finished episode re-puts every step it holds: nothing counted twice
        assert stored(store)["a"] == 460 == truth(store)["a"]
        store.append_step("b", step(0, 7, 1))  # a step stored before its trajectory's header
        store.put_trajectory(Trajectory(id="b", run_id="r", instance_id="i"))
        assert stored(store)["b"] == 8
        store.put_trajectory(Trajectory(id="c", run_id="r", instance_id="j"))  # no steps yet
        assert stored(store)["c"] == 0
        with store._lock:  # what the store's API never does, kept right too: a step rewritten, a step removed
            store._db.execute("UPDATE steps SET data=? WHERE trajectory_id='a' AND idx=0",
                              (step(0, 1, 1).model_dump_json(),))
            store._db.execute("DELETE FROM steps WHERE trajectory_id='a' AND idx=2")
            store._db.execute("DELETE FROM trajectories WHERE id='c'")
        assert stored(store) == truth(store) == {"a": 12, "b": 8}
    with RunStore(tmp_path) as store:  # a reopen changes nothing
        assert stored(store) == truth(store)


def make_old_store(path: Path, n: int = 8) -> dict[str, int]:
    """A store as Evolve wrote it before the totals existed (the same tables, without the totals' table, triggers and
    `meta` row); returns each trajectory's true tokens."""
    with RunStore(path) as store:
        for k in range(n):
            store.put_trajectory(Trajectory(id=f"t{k}", run_id="r", instance_id=f"i{k}",
                                            steps=[step(i, 10 * ((k * 5) % n), k) for i in range(3)]))
        want = truth(store)
    db = sqlite3.connect(path / DB_NAME)
    db.executescript("DROP TABLE trajectory_tokens; " + "".join(
        f"DROP TRIGGER {name}; " for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'"))
                     + f"DELETE FROM meta WHERE key='{store_tokens.META_KEY}';")
    db.close()
    return want


KILL_AT_FOURTH_BATCH = """
import os, signal, sqlite3, sys
from evolve import store_tokens
db = sqlite3.connect(sys.argv[1], isolation_level=None)
store_tokens.ensure(db)
batches = []
def trace(sql):
    if sql.startswith("INSERT OR IGNORE INTO trajectory_tokens"):
        batches.append(sql)
        if len(batches) == 4:
            os.kill(os.getpid(), signal.SIGKILL)
db.set_trace_callback(trace)
store_tokens.fill(db, batch=1)
"""


def test_an_older_store_is_filled_in_once_and_a_kill_mid_fill_resumes(tmp_path: Path):
    want = make_old_store(tmp_path)
    by_tokens = sorted(want, key=lambda t: (want[t], int(t[1:])))
    with RunStore(tmp_path, readonly=True) as ro:  # a reader of the old store: no totals, the steps are summed
        assert not store_tokens.has_table(ro._db)
        assert [r["id"] for r in ro.trajectory_page("r", sort="tokens")[1]] == by_tokens
    proc = subprocess.run([sys.executable, "-c", KILL_AT_FOURTH_BATCH, str(tmp_path / DB_NAME)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with RunStore(tmp_path, readonly=True) as ro:  # three batches were committed before the kill, the fourth not
        part = stored(ro)
        assert len(part) == 3 and all(part[t] == want[t] for t in part), part
        assert not store_tokens.is_filled(ro._db)
        assert [r["id"] for r in ro.trajectory_page("r", sort="tokens")[1]] == by_tokens  # stored and summed mixed
    with RunStore(tmp_path) as store:  # the next writer's open fills in the rest
        assert stored(store) == want and store_tokens.is_filled(store._db)
        assert store_tokens.fill(store._db) == 0  # once
        store.append_step("t0", step(3, 1000, 0))  # and they are kept from then on
        assert stored(store)["t0"] == want["t0"] + 1000


def test_the_dashboards_tokens_sort_reads_the_stored_totals(tmp_path: Path):
    out = tmp_path / "run"
    with RunStore(out) as store:
        store.put_run("run", "run", {}, status="finished")
        for k, n in enumerate([30, 10, 40, 20]):
            store.put_trajectory(Trajectory(id=f"t{k}", run_id="run", instance_id=f"inst-{k}",
                                            status=TrajectoryStatus.submitted,
                                            steps=[step(i, n, 1) for i in range(k + 1)]))
        with store._lock:  # a total that disagrees with the steps: the sort must follow the stored one
            store._db.execute("UPDATE trajectory_tokens SET tokens=1 WHERE trajectory_id='t2'")

    async def go():
        app = EvolveApp(out, poll=0.2)
        app.animation_level = "none"
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(app, pilot)
            dash = app.screen
            assert isinstance(dash, DashboardScreen)
            await pilot.press(*["o"] * SORTS.index("tokens"))
            await settle(app, pilot)
            assert dash.sort == "tokens" and not dash.descending
            assert [r["id"] for r in dash.rows] == ["t2", "t1", "t0", "t3"]  # 1 (stored), 22, 31, 84
            await pilot.press("O")
            await settle(app, pilot)
            assert [r["id"] for r in dash.rows] == ["t3", "t0", "t1", "t2"]
    asyncio.run(go())
