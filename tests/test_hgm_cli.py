"""`evolve tree show|diff|best|export` on a stored search (a simulated world through the real scheduler and
store journal) and `evolve hgm`'s input checks (one-line errors, exit 2, nothing started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.hgm.config import HGMConfig
from evolve.hgm.search import open_search, run_search
from evolve.hgm.sim import MismatchWorld
from evolve.store import RunStore

ROOT = Path(__file__).resolve().parents[1]


def evolve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    run = tmp_path_factory.mktemp("hgm") / "simrun"
    with RunStore(run) as store:
        store.put_run("simrun", "hgm", {"suite": "sim", "privileged_diagnosis": False})
        sched = open_search(HGMConfig(budget=120, seed=3), MismatchWorld(seed=3, n_tasks=20, reject_prob=0.2), store,
                            "simrun")
        run_search(sched, MismatchWorld(seed=3, n_tasks=20, reject_prob=0.2), simulated=True)
    return run, sched


def test_tree_export_matches_the_scheduler(stored, tmp_path):
    run, sched = stored
    r = evolve("tree", "export", str(run), "--output", str(tmp_path / "tree.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "tree.json").read_text())
    assert data["best"] == sched.final_pick()
    by_id = {n["id"]: n for n in data["nodes"]}
    assert set(by_id) == set(sched.nodes)
    for node_id in sched.stats.nodes():
        assert tuple(by_id[node_id]["own"]) == sched.stats.own(node_id)
        assert tuple(by_id[node_id]["clade"]) == sched.stats.clade(node_id)
    rejected = [n for n in data["nodes"] if n["status"] == "rejected"]
    assert rejected and all(n["reason"] == "simulated validation failure" for n in rejected)


def test_tree_show_and_diff(stored):
    run, sched = stored
    r = evolve("tree", "show", str(run))
    assert r.returncode == 0, r.stderr
    best = sched.final_pick().rsplit(":", 1)[-1]
    assert f"★ {best}" in r.stdout and "clade" in r.stdout and "rejected" in r.stdout
    r = evolve("tree", "diff", "n0002", "--run", str(run))
    assert r.returncode == 0 and "simulated change to" in r.stdout, r.stderr
    r = evolve("tree", "diff", "n9999", "--run", str(run))
    assert r.returncode == 2 and "no single node" in r.stderr


def test_tree_best_without_variant_dirs_and_errors(stored, tmp_path):
    run, sched = stored
    r = evolve("tree", "best", str(run))
    assert r.returncode == 0 and sched.final_pick() in r.stdout, r.stderr
    r = evolve("tree", "show", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "not a run directory" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, expected", [
    (["hgm", "bundled", "--expansion-rule", "bogus"], "--expansion-rule"),
    (["hgm", "bundled", "--root-variant", "/nonexistent-variant"], "is not an agent variant"),
])
def test_hgm_input_errors_are_one_line(args, expected, tmp_path):
    r = evolve(*args, "--out", str(tmp_path / "run"))
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and expected in r.stderr, r.stderr[-1500:]
    assert not (tmp_path / "run" / "evolve.db").exists()  # nothing stored for bad input


def test_holdout_split():
    from evolve.errors import ConfigError
    from evolve.hgm.run import choose
    from tasks.registry import get_suite

    suite = get_suite("bundled")
    chosen = suite.select(None, 4)
    search, held = choose(suite, None, 4, "1")
    assert search == chosen[:3] and held == chosen[3:]
    other = suite.select(None, None)[5]
    search, held = choose(suite, None, 4, other.instance_id)
    assert search == chosen and [h.instance_id for h in held] == [other.instance_id]
    search, held = choose(suite, None, 4, None)
    assert search == chosen and held == []
    with pytest.raises(ConfigError, match="--holdout 4"):
        choose(suite, None, 4, "4")
    with pytest.raises(ConfigError, match="takes every chosen instance"):
        choose(suite, [chosen[0].instance_id], None, chosen[0].instance_id)
    with pytest.raises(ConfigError, match="HGM evolves coding agents"):
        choose(get_suite("toolcall"), None, 4, None)
