"""`evolve hgm` and `evolve se-agent` end to end through the command line: each opens its run the library's way
(`hgm.run.open_hgm` + `search`, `se_agent.run.open_se_agent`), resumes it with the same options, and refuses
one line (no traceback) for other settings or another command's directory. Real Docker, the real bundled task,
the real agent loop; the policy is `version:latest`, a stored version that loads `replay:` of a trajectory
with no steps (it submits at once), so the episodes are short and fail, which is all these checks need; the runs
record it as the `version:ID` it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolve.store import RunStore
from records import Message, PolicyVersion, Trajectory
from tests.test_cli_run import evolve

pytestmark = pytest.mark.docker


def store_version(runs: Path, base: str, created: float) -> PolicyVersion:
    """A version without weights of its own (it loads `base`) stored in a run under `runs`, where
    `version:latest` finds it."""
    v = PolicyVersion(base=base, kind="sft", path="", created_at=created)
    with RunStore(runs / f"versions-{created:.0f}") as store:
        store.put_policy_version(v)
    return v


@pytest.fixture
def submit_at_once(tmp_path: Path) -> str:
    t = Trajectory(instance_id="any", prompt=[Message(role="user", content="matches no prompt")], steps=[])
    path = tmp_path / "submit.json"
    path.write_text(json.dumps([t.model_dump(mode="json")]))
    return f"replay:{path}"


def refused(r, *expected: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert all(e in " ".join(r.stderr.split()) for e in expected), r.stderr[-1500:]


def test_hgm_runs_resumes_and_refuses_other_tasks_or_another_command(tmp_path: Path, docker_ready,
                                                                    submit_at_once: str):
    out = tmp_path / "runs" / "hgm"
    v = store_version(out.parent, submit_at_once, 1.0)
    args = ["hgm", "bundled", "--limit", "1", "--budget", "1", "--initial-expansions", "0", "--no-smoke",
            "--policy", "version:latest", "--out", str(out)]
    r = evolve(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["best"] == "hgm:root" and report["evaluations"] == 1 and report["stopped"] is False
    with RunStore(out, readonly=True) as store:
        (run,) = store.runs()
        assert (run["kind"], run["status"]) == ("hgm", "finished")
        assert run["config"]["policy"] == run["config"]["meta_policy"] == f"version:{v.id}"  # not `latest`
        outcomes = store.outcomes(run_id="hgm")
        assert [(o["node_id"], o["status"]) for o in outcomes] == [("hgm:root", "fail")]
        events = [e["what"] for e in store.events() if e["kind"] == "hgm"]
    assert events and events[0] == f"evaluate root on {run['config']['tasks'][0]}: fail"  # stored as it happened

    again = evolve(*args)  # the same command resumes: the budget is spent, nothing is evaluated again
    assert again.returncode == 0, again.stderr[-2000:]
    with RunStore(out, readonly=True) as store:
        assert len(store.outcomes(run_id="hgm")) == 1

    refused(evolve(*args, "--limit", "2"), "another `tasks` setting")  # the last --limit counts
    refused(evolve("se-agent", "bundled", "--limit", "1", "--policy", submit_at_once, "--out", str(out)),
            "holds an `evolve hgm` run, not an `evolve se-agent` run")


def test_se_agent_runs_and_refuses_other_settings_before_anything_runs(tmp_path: Path, docker_ready,
                                                                      submit_at_once: str):
    out = tmp_path / "runs" / "se"
    v = store_version(out.parent, submit_at_once, 1.0)
    args = ["se-agent", "bundled", "--limit", "1", "--iterations", "1", "--no-judge", "--policy", "version:latest",
            "--out", str(out)]
    r = evolve(*args, "--pilots", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["instances"] == 1 and report["candidates"] == 1
    with RunStore(out, readonly=True) as store:
        before = store.trajectory_ids()
        assert store.runs()[0]["config"]["policy"] == f"version:{v.id}"
    refused(evolve(*args, "--pilots", "2"), "another `pilots` setting (1, not 2)")
    newer = store_version(out.parent, submit_at_once, 2.0)  # `latest` now names another version
    refused(evolve(*args, "--pilots", "1"), f"another `policy` setting ('version:{v.id}', not 'version:{newer.id}')")
    with RunStore(out, readonly=True) as store:
        assert store.trajectory_ids() == before  # refused before a pilot ran
