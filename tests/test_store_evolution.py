"""The store's evolution-layer tables: outcome rows, documents, trees, stop requests."""

from __future__ import annotations

import time
from pathlib import Path

from evolve.store import RunStore
from records import TreeNode


def test_outcomes_are_appended_in_order_and_filtered(tmp_path: Path):
    with RunStore(tmp_path) as store:
        a = store.put_outcome("r", "n1", "t1", "pass", True, "traj1", 1.0, 2.0, seconds=1.0)
        b = store.put_outcome("r", "n2", "t1", "infra_error", None, None, 1.5, 2.5, error="sandbox died")
        store.put_outcome("other", "n1", "t2", "fail", False, None, 3.0, 4.0)
        assert b == a + 1
        rows = store.outcomes("r")
        assert [(r["node_id"], r["status"], r["resolved"]) for r in rows] == [("n1", "pass", True),
                                                                             ("n2", "infra_error", None)]
        assert rows[1]["error"] == "sandbox died" and rows[0]["seconds"] == 1.0
        assert [r["task_id"] for r in store.outcomes(node_id="n1")] == ["t1", "t2"]


def test_documents_by_kind_run_and_key_prefix(tmp_path: Path):
    with RunStore(tmp_path) as store:
        store.put_document("summary", "inst_a/1", {"x": 1}, run_id="r")
        store.put_document("summary", "inst_a/2", {"x": 2}, run_id="r")
        store.put_document("summary", "inst%b/1", {"x": 3}, run_id="r")
        store.put_document("pair", "inst_a/1", {"y": 1}, run_id="r2")
        store.put_document("summary", "inst_a/1", {"x": 10}, run_id="r")  # replaced
        assert store.document("summary", "inst_a/1") == {"x": 10}
        assert store.document("summary", "missing") is None
        assert [k for k, _ in store.documents("summary", key_prefix="inst_a/")] == ["inst_a/2", "inst_a/1"]
        assert [k for k, _ in store.documents("summary", key_prefix="inst%")] == ["inst%b/1"]
        assert store.documents("pair", run_id="r") == [] and len(store.documents("pair", run_id="r2")) == 1


def test_trees_by_id_and_kind(tmp_path: Path):
    with RunStore(tmp_path) as store:
        root = TreeNode(tree_id="hgm1", kind="hgm", variant_dir="/v0", status="accepted")
        store.put_tree_node(root)
        store.put_tree_node(TreeNode(tree_id="hgm1", parent_id=root.id, label="fix edit tool", status="rejected"))
        store.put_tree_node(TreeNode(tree_id="task-1", kind="mcts", label="bash ls", successes=1, trials=2))
        assert [n.status for n in store.tree("hgm1")] == ["accepted", "rejected"]
        assert [n.label for n in store.tree(kind="mcts")] == ["bash ls"]


def test_stop_request_seen_by_a_reader_process_and_only_after_since(tmp_path: Path):
    with RunStore(tmp_path) as store:
        store.put_run("r", "run", {})
        started = time.time()
        assert not store.stop_requested("r", since=started)
        with RunStore(tmp_path) as other:  # the TUI, another connection
            other.request_stop("r")
        assert store.stop_requested("r", since=started)
        assert not store.stop_requested("r", since=time.time() + 10)
        assert not store.stop_requested("another-run")
