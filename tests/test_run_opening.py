"""`evolve.run.opening` and `evolve.policies.load_policies`: the one way every command opens a run directory,
checks a resume and loads its policies (real directories, a real lock, a real run store, a real replay policy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.errors import ConfigError
from evolve.policies import load_policies
from evolve.run.opening import check_resume, open_run, parse_ids, run_dir
from evolve.store import RunStore, StoreError, lock_holder
from records import Message, Step, Trajectory

ROOT = Path(__file__).resolve().parent.parent


def test_parse_ids_keeps_each_id_once_in_order():
    assert parse_ids(" b, a,b ,,a") == ["b", "a"]
    assert parse_ids(None) is None and parse_ids("") is None and parse_ids(" , ") is None


def test_run_dir_defaults_under_runs_and_refuses_a_file_before_creating_anything(tmp_path: Path):
    assert run_dir(None, "hgm-bundled") == Path("runs") / "hgm-bundled"
    assert run_dir(tmp_path / "new", "x") == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="is a file"):
        run_dir(tmp_path / "file", "x")
    with pytest.raises(StoreError, match="is a file"):
        run_dir(tmp_path / "file" / "below", "x")


def test_open_run_creates_the_directory_and_holds_its_lock_for_the_block(tmp_path: Path):
    out = tmp_path / "a" / "run"
    probe = ("import sys\nfrom evolve.run.run_lock import RunLock, RunLocked\n"
             "try:\n    RunLock(sys.argv[1]).acquire()\nexcept RunLocked as e:\n    print('locked:', e)\n")

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(out)], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout

    with open_run(out, "evolve test opening") as opened:
        assert opened == out and out.is_dir()
        assert lock_holder(out)["what"] == "evolve test opening"
        assert "locked:" in other_process() and "evolve test opening" in other_process()
    assert other_process() == ""  # let go when the block ends


def test_check_resume_refuses_another_kind_and_a_changed_fixed_setting(tmp_path: Path):
    config = {"tasks": ["a", "b"], "budget": 10, "search": {"seed": 0, "alpha": 0.6}}
    fixed = ("tasks", "search.seed", "search.alpha", "privileged_diagnosis")
    with RunStore(tmp_path) as store:
        check_resume(store, "r", "hgm", config, fixed)  # nothing stored yet: a new run
        store.put_run("r", "hgm", config)
        check_resume(store, "r", "hgm", config, fixed)
        check_resume(store, "r", "hgm", config | {"budget": 20}, fixed)  # not fixed: may grow
        # a setting the stored config lacks (a store written before it existed) is not compared
        check_resume(store, "r", "hgm", config | {"privileged_diagnosis": True}, fixed)
        with pytest.raises(ConfigError, match=r"holds an `evolve hgm` run, not an `evolve loop` run"):
            check_resume(store, "r", "loop", config, fixed)
        with pytest.raises(ConfigError, match=r"another `search.seed` setting \(0, not 1\)"):
            check_resume(store, "r", "hgm", config | {"search": {"seed": 1, "alpha": 0.6}}, fixed)
        with pytest.raises(ConfigError, match=r"another `tasks` setting"):
            check_resume(store, "r", "hgm", config | {"tasks": ["a"]}, fixed)
        check_resume(store, "other", "loop", config, fixed)  # another run id in the same store is not this run
        # with defaults, a setting the stored config lacks ran with its default value
        check_resume(store, "r", "hgm", config | {"privileged_diagnosis": False}, fixed,
                     defaults={"privileged_diagnosis": False})
        with pytest.raises(ConfigError, match=r"another `privileged_diagnosis` setting \(False, not True\)"):
            check_resume(store, "r", "hgm", config | {"privileged_diagnosis": True}, fixed,
                         defaults={"privileged_diagnosis": False})


def test_load_policies_loads_a_spec_given_twice_once(tmp_path: Path):
    recorded = Trajectory(instance_id="i", prompt=[Message(role="user", content="fix it")],
                          steps=[Step(index=0, response=Message(role="assistant", content="done"))])
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps([recorded.model_dump(mode="json")]))
    a, b = f"replay:{tmp_path / 'a.json'}", f"replay:{tmp_path / 'b.json'}"
    agent, judge, none, again = load_policies(tmp_path, a, a, None, b)
    assert agent is judge and none is None and again is not agent
    assert agent.spec.startswith("replay:") and again.spec.startswith("replay:")
