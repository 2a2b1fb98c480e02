"""The CLI's output of text that is not its own, and mistakes a careless user makes (issue 18, items 9, 13 and
15): rich markup in policy text, node labels and paths is printed literally, never parsed (a `[/x]` used to
crash `evolve tree show` and the error printer itself); a binary `replay:` file, an unknown `--split` and a
file given to `evolve tui` are one line on stderr with exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.store import RunStore
from records import TreeNode

ROOT = Path(__file__).resolve().parents[1]
MARKUP = "[/x] drop [bold]this[/bold] and [/]"


def evolve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"})


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and "MarkupError" not in r.stderr, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    return lines[0]


@pytest.fixture
def hgm_run(tmp_path: Path) -> Path:
    """An HGM run whose nodes carry policy text with markup: a diagnosis label, a rejection reason, a suite."""
    run = tmp_path / "hgm"
    with RunStore(run) as store:
        store.put_run("h", "hgm", {"suite": "[red]suite[/]", "privileged_diagnosis": False})
        store.put_tree_node(TreeNode(id="h:root", parent_id=None, tree_id="h", kind="hgm", label="root",
                                     status="accepted", variant_dir=str(tmp_path / "root[/v]")))
        store.put_tree_node(TreeNode(id="h:n0001", parent_id="h:root", tree_id="h", kind="hgm", label=MARKUP,
                                     status="accepted"))
        store.put_tree_node(TreeNode(id="h:n0002[/y]", parent_id="h:root", tree_id="h", kind="hgm", label="x",
                                     status="rejected", info={"reason": "does not load: [/z] " + MARKUP}))
        store.put_outcome("h", "h:n0001", "t1", "pass", True, None, 0.0, 1.0)
    return run


def test_tree_show_prints_policy_text_with_markup_literally(hgm_run: Path):
    r = evolve("tree", "show", str(hgm_run))
    assert r.returncode == 0, r.stderr[-3000:]
    assert MARKUP in r.stdout and "[/z]" in r.stdout and "n0002[/y]" in r.stdout, r.stdout
    assert "[red]suite[/]" in r.stdout
    r = evolve("tree", "best", str(hgm_run))
    assert r.returncode == 0 and "h:n0001" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("bad", ["/tmp/[/bad]", "/tmp/[bold]x[/bold]"])
def test_the_error_printer_prints_a_path_with_markup_literally(tmp_path: Path, bad: str):
    replay = tmp_path / "none.json"
    replay.write_text('{"instance_id": "x", "steps": []}')
    line = one_line_error(evolve("run", "bundled", "--limit", "1", "--variant", bad, "--policy", f"replay:{replay}",
                                 "--sandbox", "local", "--out", str(tmp_path / "run")))
    assert bad in line and "is not an agent variant" in line, line
    line = one_line_error(evolve("trajectories", bad))
    assert bad in line and "not a run directory" in line, line


def test_trajectories_list_prints_ids_with_markup_literally(tmp_path: Path):
    from records import Trajectory

    run = tmp_path / "run[/r]"
    with RunStore(run) as store:
        store.put_trajectory(Trajectory(run_id="r", instance_id="inst[/i]"))
    r = evolve("trajectories", str(run))
    assert r.returncode == 0 and "inst[/i]" in r.stdout, r.stderr[-3000:]


def test_a_binary_replay_file_is_one_line(tmp_path: Path):
    replay = tmp_path / "replay.jsonl"
    replay.write_bytes(bytes(range(256)) * 8)
    line = one_line_error(evolve("run", "bundled", "--limit", "1", "--policy", f"replay:{replay}", "--sandbox",
                                 "local", "--out", str(tmp_path / "run")))
    assert "not a trajectory file" in line and "UTF-8" in line, line


def test_an_unknown_split_is_one_line(tmp_path: Path):
    line = one_line_error(evolve("run", "toolcall", "--split", "nope", "--out", str(tmp_path / "run")))
    assert "--split" in line and "train or test" in line, line
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_tui_on_a_file_is_the_one_line_a_missing_path_gets(tmp_path: Path):
    f = tmp_path / "notes.txt"
    f.write_text("not a run\n")
    assert "is a file, not a run directory" in one_line_error(evolve("tui", str(f)))
    assert "does not exist" in one_line_error(evolve("tui", str(tmp_path / "missing")))
