"""HGM on the real path: Docker sandboxes, bundled instances, hidden-test grading, the Evolve agent as its own
meta-agent. The root variant's `apply_patch` tool is broken (it reports success and changes nothing); a
scripted meta policy diagnoses it and repairs it with the parent's own bash tool inside a sandbox that holds
only a copy of the variant; validation runs the child's own tests in a sandbox and a smoke episode. The child
resolves the instances the root fails, and the search's final pick is that child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.policy.base import Generation, Policy, SamplingParams
from agent.variant import DEFAULT_VARIANT, AgentVariant
from evolve.hgm import diagnosis
from evolve.hgm.config import HGMConfig
from evolve.hgm.real import DockerWorld, RealWorldConfig
from evolve.hgm.search import open_search, run_search
from evolve.store import RunStore
from records import Message
from sandbox import SandboxConfig
from tasks.bundled.materialize import materialize
from tasks.images import ensure_images
from tasks.registry import get_suite

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TASKS = ["bundled__unitconv-1", "bundled__cachebox-1"]

BROKEN_RUN = "#!/bin/bash\n# apply_patch: apply a unified diff to the repository\ncat > /dev/null\necho 'patch applied'\n"
WEAK_TEST = "#!/bin/bash\necho '{\"patch\": \"\"}' | \"$EVOLVE_TOOLS/apply_patch/run\" >/dev/null; echo ok\n"
FIXED_RUN = '''#!/usr/bin/env python3
"""apply_patch: apply a unified diff (JSON {"patch": ...} on stdin) to the repository with git apply."""
import json, subprocess, sys
patch = json.load(sys.stdin)["patch"]
r = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], input=patch, text=True, capture_output=True)
print((r.stdout + r.stderr).strip() or ("patch applied" if r.returncode == 0 else "git apply failed"))
sys.exit(r.returncode)
'''
REAL_TEST = '''#!/bin/bash
set -eu
git init -q repo && cd repo && printf 'a\\n' > f.txt && git add f.txt
git -c user.name=t -c user.email=t@t commit -qm base
printf '%s' '{"patch": "--- a/f.txt\\n+++ b/f.txt\\n@@ -1 +1 @@\\n-a\\n+b\\n"}' | "$EVOLVE_TOOLS/apply_patch/run"
[ "$(cat f.txt)" = b ] || { echo "FAIL: the patch was not applied"; exit 1; }
echo ok
'''


def call(name: str, **parameters: Any) -> str:
    return f"<think>{name}</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': parameters})}\n</tool_call>"


def make_root(path: Path) -> Path:
    data = yaml.safe_load((DEFAULT_VARIANT / "variant.yaml").read_text())
    data.update(name="broken-apply", tools=["bash", "apply_patch", "submit"])
    data["budget"]["max_steps"] = 4
    (path / "tools" / "apply_patch").mkdir(parents=True)
    (path / "tests").mkdir()
    (path / "variant.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (path / "tools" / "apply_patch" / "tool.yaml").write_text(yaml.safe_dump({
        "description": "Apply a unified diff to the repository.",
        "parameters": {"type": "object", "properties": {"patch": {"type": "string"}}, "required": ["patch"]}}))
    (path / "tools" / "apply_patch" / "run").write_text(BROKEN_RUN)
    (path / "tests" / "test_apply_patch.sh").write_text(WEAK_TEST)
    for f in (path / "tools" / "apply_patch" / "run", path / "tests" / "test_apply_patch.sh"):
        f.chmod(0o755)
    AgentVariant.load(path)
    return path


class TaskPolicy(Policy):
    """Applies the instance's fix with `apply_patch`, then submits (it knows each issue's fix)."""

    spec = "scripted-task"
    context_length = 1_000_000

    def __init__(self, instances):
        self.fixes = {i.problem_statement.strip()[:200]: i.patch for i in instances}

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        out = []
        for conv in conversations:
            turn = sum(m.role == "assistant" for m in conv)
            fix = next((p for k, p in self.fixes.items() if k in conv[1].content), None)
            text = call("apply_patch", patch=fix) if turn == 0 and fix else call("submit")
            out.append(Generation(text=text, prompt_tokens=10, completion_tokens=10))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


class MetaPolicy(Policy):
    """Diagnoses the broken tool from the trajectory, then repairs it (and its test) with bash."""

    spec = "scripted-meta"
    context_length = 1_000_000

    def __init__(self) -> None:
        self.diagnosis_prompts: list[str] = []

    def generate(self, conversations, params, tools=None):
        out = []
        for conv in conversations:
            if conv[0].content == diagnosis.SYSTEM:
                self.diagnosis_prompts.append(conv[1].content)
                out.append(Generation(text="The tool said it applied the patch, yet the patch is empty.\n"
                                           "<problem_statement>apply_patch reports success but changes nothing: "
                                           "tools/apply_patch/run must apply the diff with git apply and fail when "
                                           "it does not apply; its test must check a file really changes."
                                           "</problem_statement>"))
                continue
            turn = sum(m.role == "assistant" for m in conv)
            if turn == 0:
                text = call("bash", command="ls -A")
            elif turn == 1:
                text = call("bash", command="cat > tools/apply_patch/run <<'EOF'\n" + FIXED_RUN + "EOF\n"
                            "cat > tests/test_apply_patch.sh <<'EOF'\n" + REAL_TEST + "EOF\n"
                            "chmod +x tools/apply_patch/run tests/test_apply_patch.sh && echo written")
            else:
                text = call("submit")
            out.append(Generation(text=text, prompt_tokens=10, completion_tokens=10))
        return out

    def count_tokens(self, messages):
        return sum(len(m.content) for m in messages) // 4


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_hgm_repairs_a_broken_tool_and_picks_the_child(tmp_path, docker_ready, executor):
    """With `ray`, all sandbox work runs as Ray tasks and its records come back to the driver's store: the
    evaluations and the smoke episode (the scripted task policy served by the driver), the edit (the scripted
    meta policy served too, the parent's variant directory shipped as bytes) and the child's own tests. The
    same tree and the same pick; the child evaluated on a worker uses its repaired tool."""
    if executor == "ray":
        pytest.importorskip("ray", reason="Ray is the optional extra `evolve[ray]`")
    instances = get_suite("bundled").select(TASKS)
    ensure_images(instances, materialize)
    root_dir = make_root(tmp_path / "root-variant")
    meta = MetaPolicy()
    run_id = "hgm-docker"
    cfg = HGMConfig(budget=2, initial_expansions=1, seed=0)
    with RunStore(tmp_path / "run") as store:
        store.put_run(run_id, "hgm", {"suite": "bundled", "privileged_diagnosis": False})
        world = DockerWorld(instances, root_dir, TaskPolicy(instances), meta, SandboxConfig(run_id=run_id), store,
                            run_id, tmp_path / "run", RealWorldConfig(smoke=True, topic_probs={}))
        if executor == "ray":
            from evolve.run.executor import ExecutorConfig
            from evolve.run.remote_episode import RayEpisodes

            world.episodes = RayEpisodes(ExecutorConfig(backend="ray", num_cpus=2), world.task_policy, "scripted-task")
        sched = open_search(cfg, world, store, run_id)
        try:
            run_search(sched, world, workers=1)
        finally:
            world.close()
        rows = store.outcomes(run_id=run_id)
        tasks = [e for e in store.events() if e["kind"] == "ray_task"]
        if executor == "ray":  # every evaluation and the smoke episode ran as Ray episodes, the rest as tasks
            assert world.episodes.submitted == len(rows) + 1 and rows
            assert sorted(e["job"] for e in tasks) == ["hgm:edit", "hgm:variant_tests"]
        else:
            assert tasks == []
        root_id, child_id = f"{run_id}:root", f"{run_id}:n0001"
        root_rows = [r for r in rows if r["node_id"] == root_id]
        child_rows = [r for r in rows if r["node_id"] == child_id]
        assert sorted(r["task_id"] for r in root_rows) == sorted(TASKS)
        assert all(r["status"] == "fail" for r in root_rows)  # the broken tool leaves every patch empty
        assert child_rows and all(r["status"] == "pass" for r in child_rows)  # graded by the hidden tests
        child_variant = AgentVariant.load(next(n for n in store.tree(tree_id=run_id) if n.id == child_id).variant_dir)
        for r in child_rows:
            assert store.test_report(r["trajectory_id"]).resolved
            # the episode (on a worker with `ray`) acted with the child's own files: the repaired tool
            assert store.get_trajectory(r["trajectory_id"]).agent_variant == child_variant.fingerprint()
        assert child_variant.fingerprint() != AgentVariant.load(root_dir).fingerprint()
        assert sched.final_pick() == child_id
        child = next(n for n in store.tree(tree_id=run_id) if n.id == child_id)
        assert child.status == "accepted" and child.info["topic"] == "task" and not child.info["privileged"]
        assert "git apply" in child.info["diff"] and "tools/apply_patch/run" in child.info["diff"]
        assert child.info["validation"]["tests"]["passed"] and child.info["validation"]["smoke"]["infra_error"] is None
        assert (Path(child.variant_dir) / "tools" / "apply_patch" / "run").read_text() == FIXED_RUN
        # the diagnosis saw the trajectory and the empty patch, and no hidden test
        assert "patch applied" in meta.diagnosis_prompts[0] and "Hidden tests" not in meta.diagnosis_prompts[0]
        doc = store.document("hgm:diagnosis", child_id)
        assert doc["privileged"] is False and doc["problem_statement"].startswith("apply_patch reports success")
        # the meta-agent ran with the parent's variant, in a sandbox holding only the variant
        meta_traj = store.get_trajectory(child.info["meta_trajectory_id"])
        assert meta_traj.origin == "hgm:meta" and meta_traj.agent_variant.startswith("broken-apply@")
        listing = meta_traj.steps[0].observation.content
        assert set(listing.split("<tool_response>")[-1].split("</tool_response>")[0].split()) == \
            {".git", "tests", "tools", "variant.yaml"}
    # the CLI exports the pick as a variant directory `evolve run --variant` accepts
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "tree", "best", str(tmp_path / "run"), "--export",
                        str(tmp_path / "best")], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0 and child_id in r.stdout, r.stderr
    assert AgentVariant.load(tmp_path / "best").name == "broken-apply"
    assert (tmp_path / "best" / "tools" / "apply_patch" / "run").read_text() == FIXED_RUN
