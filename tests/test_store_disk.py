"""The run store on a full disk and in a read-only directory (issue 18, items 13 and 14), on real small tmpfs
disks and read-only bind mounts in a private mount namespace (`tests/mount_ns.py`).

A write that fills the disk is reported as such (not SQLite's "cannot rollback - no transaction is active"),
in one line that says what to do; nothing stored before is lost or corrupted and writing resumes once space is
free. Readers open a store in a read-only directory, or on a full disk, and a store that cannot be opened is
never called "not an Evolve run store" when the disk or the directory is the reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.store import RunStore
from records import Message, Step, Trajectory
from tests.mount_ns import in_mount_ns, json_of, mount_ns_skip

pytestmark = pytest.mark.skipif(bool(mount_ns_skip()), reason=mount_ns_skip() or "-")

FILL = """
def fill(d):
    with open(os.path.join(d, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as e:
            assert e.errno == 28, e
"""


def test_a_disk_filling_during_writes_is_one_clear_error_and_nothing_is_lost(tmp_path: Path):
    snippet = "import json, os, sys\n" + FILL + """
from evolve.store import RunStore, StoreError
from records import Message, Step, Trajectory
d = sys.argv[1]
store = RunStore(d + "/run")
store.put_run("r", "run", {})
kept = Trajectory(run_id="r", instance_id="kept", steps=[Step(index=0, response=Message(role="assistant", content="k"))])
store.put_trajectory(kept)
fill(d)
errors = []
for i in range(40):  # one trajectory write per transaction, each bigger than what is left
    t = Trajectory(run_id="r", instance_id=f"i{i}")
    t.steps = [Step(index=j, response=Message(role="assistant", content="y" * 50_000)) for j in range(4)]
    try:
        store.put_trajectory(t)
    except StoreError as e:
        errors.append(f"{type(e).__name__}: {e}")
        break
try:
    store.append_step(kept.id, Step(index=1, response=Message(role="assistant", content="z" * 200_000)))
except StoreError as e:
    errors.append(f"{type(e).__name__}: {e}")
os.unlink(os.path.join(d, "filler"))
store.put_trajectory(Trajectory(run_id="r", instance_id="after"))
store.close()
with RunStore(d + "/run") as again:  # the same command resumes: the store opens and holds what was written
    ids = {again.get_trajectory(t).instance_id for t in again.trajectory_ids()}
    check = again._db.execute("PRAGMA integrity_check").fetchone()[0]
    steps = len(again.get_trajectory(kept.id).steps)
print(json.dumps({"errors": errors, "ids": sorted(ids), "integrity": check, "kept_steps": steps}))
"""
    d = tmp_path / "disk"
    d.mkdir()
    got = json_of(in_mount_ns(snippet, tmpfs={d: "2m"}, args=(str(d),)))
    assert len(got["errors"]) == 2, got
    for err in got["errors"]:
        assert err.startswith("StoreWriteError: cannot write the run store"), err
        assert "database or disk is full" in err and "free some disk space" in err and "resume" in err, err
        assert "cannot rollback" not in err and "\n" not in err, err
    assert got["integrity"] == "ok" and "kept" in got["ids"] and "after" in got["ids"], got
    assert got["kept_steps"] == 1  # the step that did not fit is not half there


def test_opening_a_store_on_a_full_disk_says_the_disk_is_full(tmp_path: Path):
    snippet = "import json, os, sys\n" + FILL + """
from evolve.store import RunStore, StoreError
d = sys.argv[1]
with RunStore(d + "/old") as s:  # a run from before the disk filled
    s.put_run("r", "run", {})
fill(d)
out = {}
for name, kw in (("new", {}), ("old", {"readonly": True})):
    try:
        with RunStore(d + "/" + name, **kw) as s:
            out[name] = "opened: " + ",".join(r["id"] for r in s.runs())
    except StoreError as e:
        out[name] = str(e)
print(json.dumps(out))
"""
    d = tmp_path / "disk"
    d.mkdir()
    got = json_of(in_mount_ns(snippet, tmpfs={d: "1m"}, args=(str(d),)))
    assert "not an Evolve run store" not in got["new"] and "disk is full" in got["new"], got
    assert got["old"] == "opened: r", got  # a reader reads a run on a full disk


def _make_run(run: Path, killed: bool) -> None:
    """A run directory with one trajectory: closed cleanly (only evolve.db), or its writer SIGKILLed
    (evolve.db-wal and -shm left, the trajectory only in the WAL)."""
    if not killed:
        with RunStore(run) as store:
            store.put_run("r", "run", {})
            store.put_trajectory(Trajectory(run_id="r", instance_id="i1",
                                            steps=[Step(index=0, response=Message(role="assistant", content="a"))]))
        return
    code = ("import os, signal, sys\nfrom evolve.store import RunStore\nfrom records import Trajectory\n"
            "s = RunStore(sys.argv[1]); s.put_run('r', 'run', {}); s.put_trajectory(Trajectory(run_id='r', "
            "instance_id='i1'))\nos.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code, str(run)], cwd=Path(__file__).resolve().parent.parent,
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (run / "evolve.db-wal").stat().st_size > 0 and (run / "evolve.db-shm").exists()


READ = """
import json, sys
from evolve.store import RunStore, StoreError
try:
    with RunStore(sys.argv[1], readonly=True) as s:
        print(json.dumps({"ids": [s.get_trajectory(t).instance_id for t in s.trajectory_ids()]}))
except StoreError as e:
    print(json.dumps({"error": str(e)}))
"""


@pytest.mark.parametrize("killed", [False, True], ids=["closed", "writer killed"])
def test_a_read_only_run_directory_is_read(tmp_path: Path, killed: bool):
    run = tmp_path / "run"
    _make_run(run, killed)
    before = sorted(os.listdir(run))
    got = json_of(in_mount_ns(READ, read_only=(run,), args=(str(run),)))
    assert got == {"ids": ["i1"]}, got
    assert sorted(os.listdir(run)) == before  # nothing was written there


def test_a_read_only_store_whose_log_cannot_be_read_says_why(tmp_path: Path):
    run = tmp_path / "run"
    _make_run(run, killed=True)
    (run / "evolve.db-shm").unlink()  # the WAL's index is gone and cannot be made in a read-only directory
    got = json_of(in_mount_ns(READ, read_only=(run,), args=(str(run),)))
    err = got.get("error", "")
    assert "not an Evolve run store" not in err and "read-only" in err and "copy the run directory" in err, got


def test_the_cli_reads_a_read_only_run_and_refuses_a_read_only_export_in_one_line(tmp_path: Path):
    run, dest = tmp_path / "run", tmp_path / "ro-dest"
    _make_run(run, killed=False)
    dest.mkdir()
    snippet = """
import json, subprocess, sys
run, dest = sys.argv[1], sys.argv[2]
def cli(*args):
    r = subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}
print(json.dumps({"list": cli("trajectories", run), "export": cli("trajectories", run, "--export", dest + "/t.jsonl")}))
"""
    got = json_of(in_mount_ns(snippet, read_only=(run, dest), args=(str(run), str(dest))))
    assert got["list"]["rc"] == 0 and "i1" in got["list"]["out"], got["list"]
    export = got["export"]
    assert export["rc"] == 2 and "Traceback" not in export["err"], export
    assert len(export["err"].strip().splitlines()) == 1 and "Read-only file system" in export["err"], export
    assert os.listdir(dest) == []


@pytest.mark.docker
@pytest.mark.slow
def test_a_disk_filling_during_evolve_run_ends_it_in_one_line_and_the_same_command_resumes(tmp_path: Path,
                                                                                            docker_ready):
    """The real CLI on a 3 MB disk: once the first step is stored the disk is filled from outside; the run
    ends with exit 2 and one error line naming the full disk (no traceback); with the space freed the same
    command resumes and resolves the instance, and the store passes SQLite's integrity check."""
    from tasks.registry import get_suite

    get_suite("bundled").build_images()
    d = tmp_path / "disk"
    d.mkdir()
    r = in_mount_ns(DRIVER, tmpfs={d: "3m"}, args=(str(d),), timeout=900)
    got = json_of(r)
    first, second = got["first"], got["second"]
    assert got["filled"] and first["rc"] == 2, first
    assert "Traceback" not in first["err"] and "cannot rollback" not in first["err"], first["err"]
    last = first["err"].strip().splitlines()[-1]
    assert last.startswith("error: cannot write the run store") and "database or disk is full" in last, last
    assert second["rc"] == 0 and "resolved 1/1" in second["out"], second
    assert got["integrity"] == "ok" and ["submitted"] in got["statuses"], got


DRIVER = """
import json, os, sqlite3, subprocess, sys, time
d = sys.argv[1]
out = os.path.join(d, "run")
CLI = '''
import json, sys
import evolve.policies as ep  # every command loads its policies through it
from agent.replay import ScriptedPolicy
from tasks.registry import get_suite
inst = get_suite("bundled").instances()[0]
def call(name, **p):
    return "<think>" + "t" * 2000 + "</think>\\\\n<tool_call>\\\\n" + json.dumps({"name": name, "parameters": p}) + "\\\\n</tool_call>"
steps = [call("bash", command="sleep 4; echo slept")] + [call("bash", command=f"echo step {i}") for i in range(6)]
steps += [call("create", path="/tmp/fix.diff", content=inst.patch), call("bash", command="git apply /tmp/fix.diff")]
ep.load_policy = lambda spec, runs=None: ScriptedPolicy(steps)
from evolve.cli import main
sys.argv = ["evolve", *sys.argv[1:]]
main()
'''
from tasks.registry import get_suite
iid = get_suite("bundled").instances()[0].instance_id
args = [sys.executable, "-c", CLI, "run", "bundled", "--instances", iid, "--workers", "1", "--out", out,
        "--infra-retries", "0"]
env = {**os.environ, "COLUMNS": "200"}
proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
db, filled, deadline = os.path.join(out, "evolve.db"), False, time.time() + 400
while time.time() < deadline and proc.poll() is None and not filled:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        n = con.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
        con.close()
    except sqlite3.Error:
        n = 0
    if n >= 1:  # the episode is under way: fill the disk
        with open(os.path.join(d, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass
        filled = True
    time.sleep(0.2)
o, e = proc.communicate(timeout=400)
first = {"rc": proc.returncode, "out": o[-4000:], "err": e[-4000:]}
os.unlink(os.path.join(d, "filler"))
r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=400)
con = sqlite3.connect(db)
print(json.dumps({"filled": filled, "first": first, "second": {"rc": r.returncode, "out": r.stdout[-4000:],
                  "err": r.stderr[-4000:]}, "integrity": con.execute("PRAGMA integrity_check").fetchone()[0],
                  "statuses": con.execute("SELECT status FROM trajectories").fetchall()}))
"""
