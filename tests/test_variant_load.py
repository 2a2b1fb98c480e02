"""Variant directories on the host: validation with one-line reasons, fingerprint, copy and diff, history
compaction. Nothing here starts a sandbox, and nothing of a variant is ever executed on the host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.graph import Agent, compact_history
from agent.replay import ScriptedPolicy
from agent.variant import DEFAULT_VARIANT, AgentVariant, History, VariantError
from agent.variant_dir import copy_variant, variant_diff
from records import Message, Step, Trajectory


@pytest.fixture
def vdir(tmp_path: Path) -> Path:
    """A copy of the default variant to break."""
    d = tmp_path / "v"
    shutil.copytree(DEFAULT_VARIANT, d)
    return d


def edit_yaml(d: Path, **changes) -> None:
    data = yaml.safe_load((d / "variant.yaml").read_text())
    for key, value in changes.items():
        target = data
        *parents, last = key.split("__")
        for p in parents:
            target = target.setdefault(p, {})
        target[last] = value
    (d / "variant.yaml").write_text(yaml.safe_dump(data))


def rejected(d: Path) -> str:
    with pytest.raises(VariantError) as e:
        AgentVariant.load(d)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_default_variant_loads_with_a_sandbox_tool_and_its_test():
    v = AgentVariant.load()
    assert "find_files" in v.sandbox_tools and "submit" in v.tools
    assert "undo" not in v.tools  # its per-step checkpoint is opt-in (Agent-R adds it)
    tools = v.resolve_tools()
    assert list(tools) == v.tools
    names = [rel for rel, _ in v.files.files]
    assert "tools/find_files/run" in names and "tests/test_find_files.sh" in names


@pytest.mark.parametrize("changes,expected", [
    ({"tools": ["bash", "teleport", "submit"]}, "unknown tool 'teleport'"),
    ({"tools": ["bash", "view"]}, "must include 'submit'"),
    ({"tools": ["bash", "bash", "submit"]}, "more than once"),
    ({"system_template": "Hi {foo} at {workdir}"}, "system_template uses unknown key(s) {foo}"),
    ({"instance_template": "{problem_statement.__class__}"}, "unknown key"),
    ({"observation_template": "{observation"}, "observation_template"),
    ({"history__elided_template": "gone {what}"}, "history.elided_template"),
    ({"pre_submit_check__failed_template": "{output} {secret}"}, "{secret}"),
    ({"network": True}, "network: unknown field"),
    ({"memory": "64g"}, "memory: unknown field"),
    ({"budget__max_stepz": 3}, "budget.max_stepz: unknown field"),
    ({"budget__max_steps": 0}, "budget.max_steps"),
    ({"attempts__k": 100}, "attempts.k"),
    ({"empty_patch__action": "pray"}, "empty_patch.action"),
    ({"tool_descriptions": {"ghost": "x"}}, "not in `tools`"),
    ({"tool_descriptions": {"find_files": "x"}}, "is a sandbox tool"),
])
def test_bad_settings_are_rejected_in_one_line(vdir: Path, changes: dict, expected: str):
    edit_yaml(vdir, **changes)
    msg = rejected(vdir)
    assert expected in msg and str(vdir) in msg, msg


def test_broken_files_are_rejected_in_one_line(vdir: Path, tmp_path: Path):
    (vdir / "variant.yaml").write_text("name: x\nsystem_template: [unclosed\n")
    assert "not valid YAML" in rejected(vdir)
    (vdir / "variant.yaml").write_text("- a list\n")
    assert "must be a mapping" in rejected(vdir)
    assert "no variant.yaml" in rejected(tmp_path / "nowhere")


@pytest.mark.parametrize("breakage,expected", [
    (lambda t: (t / "run").unlink(), "has no implementation"),
    (lambda t: (t / "tool.yaml").unlink(), "no tool.yaml"),
    (lambda t: (t / "run").write_text("print('no shebang')\n"), "#! line"),
    (lambda t: (t / "tool.yaml").write_text("description: x\nparameters: {type: array}\n"), 'type must be "object"'),
    (lambda t: (t / "tool.yaml").write_text("description: x\nparameters: {type: object, properties: {a: {type: "
                                            "wrong}}}\n"), "not a valid JSON schema"),
    (lambda t: (t / "tool.yaml").write_text("description: x\nparameters: {type: object, properties: {}, "
                                            "required: [a]}\n"), "required names ['a']"),
    (lambda t: (t / "tool.yaml").write_text("description: x\nsecret: 1\n"), "secret: unknown field"),
    (lambda t: (t / "tool.yaml").write_text("description: ''\n"), "description"),
    (lambda t: (t.parent.parent / "tests" / "test_find_files.sh").unlink(), "have no test"),
    (lambda t: (t.parent / "submit").mkdir(), "may not replace"),
    (lambda t: (t.parent / "Bad-Name").mkdir(), "bad tool name"),
    (lambda t: (t.parent / "stray.txt").write_text("x"), "one directory per tool"),
    (lambda t: (t / "link").symlink_to("/etc/passwd"), "symbolic links"),
    (lambda t: (t.parent.parent / "tests" / "test_x.py").write_text("assert 1\n"), "#! line"),
])
def test_broken_tools_are_rejected_in_one_line(vdir: Path, breakage, expected: str):
    breakage(vdir / "tools" / "find_files")
    msg = rejected(vdir)
    assert expected in msg, msg


def test_variant_error_is_a_user_error():
    from evolve.errors import user_errors

    assert VariantError in user_errors()


def test_a_variant_may_redescribe_host_tools_and_replace_them_with_sandbox_tools(vdir: Path):
    edit_yaml(vdir, tool_descriptions={"bash": "A shell. Prefer grep -n."})
    v = AgentVariant.load(vdir)
    assert v.resolve_tools()["bash"].description == "A shell. Prefer grep -n."
    prompt = Agent(ScriptedPolicy([]), v).prompt(_instance(), "/testbed")[0].content
    assert "- bash: A shell. Prefer grep -n." in prompt
    # a sandbox tool named like a host tool replaces it
    shutil.copytree(vdir / "tools" / "find_files", vdir / "tools" / "view")
    shutil.copy(vdir / "tests" / "test_find_files.sh", vdir / "tests" / "test_view.sh")
    assert AgentVariant.load(vdir).resolve_tools()["view"].description.startswith("List files")


def test_fingerprint_covers_settings_tools_and_tests(vdir: Path):
    base = AgentVariant.load(vdir).fingerprint()
    assert base == AgentVariant.load(DEFAULT_VARIANT).fingerprint()
    run = vdir / "tools" / "find_files" / "run"
    run.write_text(run.read_text() + "# a comment\n")
    tool_changed = AgentVariant.load(vdir).fingerprint()
    test = vdir / "tests" / "test_find_files.sh"
    test.write_text(test.read_text() + "# a comment\n")
    test_changed = AgentVariant.load(vdir).fingerprint()
    edit_yaml(vdir, temperature=0.5)
    setting_changed = AgentVariant.load(vdir).fingerprint()
    assert len({base, tool_changed, test_changed, setting_changed}) == 4


def test_copy_commits_and_diff_shows_the_change(vdir: Path, tmp_path: Path):
    child = copy_variant(vdir, tmp_path / "child")
    log = subprocess.run(["git", "log", "--oneline"], cwd=child, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 1
    status = subprocess.run(["git", "status", "--porcelain"], cwd=child, capture_output=True, text=True)
    assert status.stdout == ""  # everything committed
    assert variant_diff(vdir, child) == ""
    run = child / "tools" / "find_files" / "run"
    run.write_text(run.read_text().replace("limit = int(args.get(\"max_results\") or 100)",
                                           "limit = int(args.get(\"max_results\") or 50)"))
    (child / "tools" / "find_files" / "NOTES").write_text("new file\n")
    edit_yaml(child, history__keep_last=4)
    diff = variant_diff(vdir, child)
    assert "--- a/tools/find_files/run" in diff and "+++ b/tools/find_files/run" in diff
    assert "+limit = int(args.get(\"max_results\") or 50)" in diff
    assert "+++ b/tools/find_files/NOTES" in diff and "keep_last: 4" in diff
    assert "a/.git/" not in diff and "b/.git/" not in diff
    # the diff applies to a copy of the parent and gives the child
    again = copy_variant(vdir, tmp_path / "again")
    subprocess.run(["git", "apply", "-"], input=diff, text=True, cwd=again, check=True)
    assert variant_diff(child, again) == ""
    with pytest.raises(VariantError, match="not empty"):
        copy_variant(vdir, child)


def test_loading_copying_and_diffing_never_run_a_variant_script(vdir: Path, tmp_path: Path):
    marker = tmp_path / "host-was-touched"
    evil = f"#!/bin/sh\ntouch {marker}\n"
    (vdir / "tools" / "find_files" / "run").write_text(evil)
    (vdir / "tests" / "test_find_files.sh").write_text(evil)
    (vdir / "tests" / "conftest.py").write_text(f"open({str(marker)!r}, 'w')\n")
    v = AgentVariant.load(vdir)
    v.fingerprint()
    child = copy_variant(vdir, tmp_path / "child")
    variant_diff(vdir, child)
    Agent(ScriptedPolicy([]), v).prompt(_instance(), "/testbed")
    assert not marker.exists()


def test_history_compaction_keeps_the_last_observations_whole():
    steps = [Step(index=i, response=Message(role="assistant", content=f"call {i}"),
                  observation=Message(role="user", content=f"output {i} " + "x" * 500)) for i in range(5)]
    steps.append(Step(index=5, response=Message(role="assistant", content="short"),
                      observation=Message(role="user", content="ok")))
    traj = Trajectory(instance_id="t", prompt=[Message(role="system", content="s")], steps=steps)
    assert [m.content for m in compact_history(traj, History())] == [m.content for m in traj.messages()]
    seen = compact_history(traj, History(keep_last=2))
    obs = [m.content for m in seen if m.role == "user"]
    assert obs[:4] == [f"[output of step {i + 1} elided (509 characters); run it again if you need it]"
                       for i in range(4)]
    assert obs[4].startswith("output 4 ") and obs[5] == "ok"
    assert [m.content for m in seen if m.role == "assistant"] == [s.response.content for s in steps]
    assert traj.steps[0].observation.content.startswith("output 0")  # the record is untouched
    short = compact_history(traj, History(keep_last=1, elided_template="[{step}: {chars} chars gone, and this "
                                                                       "notice is longer than five hundred "
                                                                       "characters " + "!" * 500 + "]"))
    assert [m.content for m in short if m.role == "user"][:5] == [s.observation.content for s in steps[:5]]


def _instance():
    from records import TaskInstance

    return TaskInstance(instance_id="t", problem_statement="p")


def test_the_cli_reports_a_bad_variant_in_one_line(vdir: Path, tmp_path: Path):
    import os
    import sys

    edit_yaml(vdir, instance_template="Fix {problem_statement} in {repo}")
    replay = tmp_path / "replay.json"
    replay.write_text('{"instance_id": "x", "steps": []}')
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "run", "bundled", "--limit", "1", "--variant", str(vdir),
                        "--policy", f"replay:{replay}", "--sandbox", "local", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "instance_template uses unknown key(s) {repo}" in r.stderr
