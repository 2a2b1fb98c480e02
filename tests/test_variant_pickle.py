"""A loaded variant crosses to a Ray worker by pickling: its own tools/ and tests/ (private state, read at load)
must survive, or a self-modified child evaluated on a worker would act with no tools or the wrong ones.
Also HGM's shipping of a variant directory as bytes (`evolve.hgm.remote`). No Ray, no sandbox."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import yaml

from agent.variant import DEFAULT_VARIANT, AgentVariant
from agent.variant_dir import copy_variant
from evolve.hgm.remote import EditJob, pack_dir, unpack_dir
from records import TaskInstance, Trajectory
from sandbox import SandboxConfig

RUN = "#!/bin/bash\necho 'shout: ' \"$(cat)\"\n"
TEST = "#!/bin/bash\necho '{}' | \"$EVOLVE_TOOLS/shout/run\" | grep -q shout\n"


def custom_variant(path: Path) -> Path:
    """The default variant plus a sandbox tool `shout` and its test."""
    data = yaml.safe_load((DEFAULT_VARIANT / "variant.yaml").read_text())
    data.update(name="custom", tools=["bash", "shout", "submit"])
    (path / "tools" / "shout").mkdir(parents=True)
    (path / "tests").mkdir()
    (path / "variant.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (path / "tools" / "shout" / "tool.yaml").write_text(yaml.safe_dump({"description": "Shout the arguments."}))
    (path / "tools" / "shout" / "run").write_text(RUN)
    (path / "tests" / "test_shout.sh").write_text(TEST)
    for f in (path / "tools" / "shout" / "run", path / "tests" / "test_shout.sh"):
        f.chmod(0o755)
    return path


def test_a_variant_with_its_own_tools_survives_pickling(tmp_path):
    v = AgentVariant.load(custom_variant(tmp_path / "v"))
    # as the evaluations and the smoke episode ship it, and as the edit does (a deep copy, budget cut)
    edited = copy.deepcopy(v)
    edited.budget.max_steps = 3
    hotter = v.model_copy(update={"temperature": 0.7})  # as SE-Agent's attempts ship it
    for original in (v, edited, hotter):
        back = pickle.loads(pickle.dumps(original))
        assert back == original and back.fingerprint() == original.fingerprint()
        assert list(back.sandbox_tools) == ["shout"] and list(back.resolve_tools()) == ["bash", "shout", "submit"]
        assert dict(back.files.files)["tools/shout/run"] == RUN.encode()
        assert dict(back.files.files)["tests/test_shout.sh"] == TEST.encode()
        assert back.directory == original.directory
    assert pickle.loads(pickle.dumps(edited)).budget.max_steps == 3
    # and inside the job HGM sends to a worker for an edit
    job = EditJob(b"", edited, TaskInstance(instance_id="x", problem_statement="p"), SandboxConfig(), "openai:u",
                  Trajectory(run_id="r", instance_id="x"))
    assert pickle.loads(pickle.dumps(job)).variant.fingerprint() == edited.fingerprint()
    # a variant without its files is a different agent: the check above can fail
    assert AgentVariant.model_validate(v.model_dump()).fingerprint() != v.fingerprint()


def test_a_variant_directory_travels_as_bytes(tmp_path):
    src = copy_variant(custom_variant(tmp_path / "v"), tmp_path / "ws")  # a git repository, as the edit's workspace
    (src / "tools" / "__pycache__").mkdir()
    (src / "tools" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    with_git = unpack_dir(pack_dir(src, with_git=True), tmp_path / "a")
    without = unpack_dir(pack_dir(src), tmp_path / "b")
    assert sorted(p.name for p in with_git.iterdir()) == [".git", "tests", "tools", "variant.yaml"]
    assert sorted(p.name for p in without.iterdir()) == ["tests", "tools", "variant.yaml"]
    for d in (with_git, without):
        assert not (d / "tools" / "__pycache__").exists()
        assert os.access(d / "tools" / "shout" / "run", os.X_OK)
        assert AgentVariant.load(d) == AgentVariant.load(src)
