"""`loop.yaml`: the shipped defaults load, a mistake is one line naming the setting, overrides apply by path, and
the splits are disjoint sets of instances (toolcall's by its own splits, SWE suites' by repository if asked)."""

from __future__ import annotations

import pytest

from evolve.errors import ConfigError
from evolve.loop.config import LoopConfig, SplitConfig, load_loop_config
from evolve.loop.splits import resolve_splits
from tasks.registry import get_suite


def test_the_shipped_defaults_load_and_every_field_is_documented():
    tc = load_loop_config("toolcall")
    swe = load_loop_config("swe", suite="bundled")
    assert tc.suite == "toolcall" and tc.warm_start.enabled and not tc.code.enabled and tc.kinds() == ["sft", "grpo"]
    assert swe.kinds() == ["code", "sft", "grpo"] and swe.splits.by == "repository"
    import ast
    import inspect

    import evolve.loop.config as module

    tree = ast.parse(inspect.getsource(module))
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        body = cls.body
        for k, node in enumerate(body):  # every annotated field is followed by its docstring
            if isinstance(node, ast.AnnAssign):
                nxt = body[k + 1] if k + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), \
                    f"{cls.name}.{node.target.id} has no docstring"


def test_mistakes_are_one_line_naming_the_setting(tmp_path):
    bad = tmp_path / "loop.yaml"
    bad.write_text("search: {budgte: 3}\n")
    with pytest.raises(ConfigError, match="bad loop setting search.budgte"):
        load_loop_config("toolcall", bad)
    bad.write_text("gate: {alpha: 2}\n")
    with pytest.raises(ConfigError, match="bad loop setting gate.alpha"):
        load_loop_config("toolcall", bad)
    bad.write_text("sft: {enabled: false}\ngrpo: {enabled: false}\ncode: {enabled: false}\n")
    with pytest.raises(ConfigError, match="every kind of child is off"):
        load_loop_config("toolcall", bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_loop_config("toolcall", tmp_path / "nope.yaml")
    cfg = load_loop_config("toolcall", None, **{"training.device": "cuda", "policies.meta_policy": None})
    assert cfg.training.device == "cuda" and cfg.policies.meta_policy is None


def test_toolcall_splits_are_disjoint_and_follow_the_suite():
    suite = get_suite("toolcall")
    s = resolve_splits(suite, SplitConfig(train=4, search=2, held_out=0.1))
    train_split = {i.instance_id for i in suite.instances("train")}
    assert [i.instance_id for i in s.train] == [i.instance_id for i in suite.instances("train")[:4]]
    assert [i.instance_id for i in s.search] == [i.instance_id for i in suite.instances("train")[4:6]]
    assert not {i.instance_id for i in s.held_out} & train_split and len(s.held_out) == 7  # 10% of 67
    # the warm start's pool: the training instances first, then the rest of the train split the search skips
    demos = [i.instance_id for i in s.demonstrations]
    assert demos[:4] == [i.instance_id for i in s.train] and len(demos) == len(train_split) - 2
    assert not set(demos) & {i.instance_id for i in s.search + s.held_out}
    assert resolve_splits(suite, SplitConfig(train=3)).search == resolve_splits(suite, SplitConfig(train=3)).train
    with pytest.raises(ConfigError, match="not in its pool"):
        resolve_splits(suite, SplitConfig(held_out=["toolcall__book_hotel-1"]))  # a training-split id


def test_swe_splits_hold_out_whole_repositories():
    suite = get_suite("bundled")
    s = resolve_splits(suite, SplitConfig(by="repository", held_out=0.25, seed=3))
    held_repos = {i.repo for i in s.held_out}
    assert held_repos and not held_repos & {i.repo for i in s.train + s.search}
    assert len(s.train) + len(s.held_out) == len(suite.instances())
    assert resolve_splits(suite, SplitConfig(by="repository", held_out=0.25, seed=3)).ids() == s.ids()
    with pytest.raises(ConfigError, match="splits.search is empty"):
        resolve_splits(suite, SplitConfig(held_out=2, search=3))  # train takes every other instance
    assert LoopConfig().splits.by == "instance"
