"""Agent-R's acceptance checks 1-7 (evolution-anchors §4.10) on the real code, in the number-line world with a
tabular policy and an exact oracle verifier (no LLM)."""

from __future__ import annotations

import math
import re
import random

import pytest

from evolve.agent_r.build import build_instance
from evolve.agent_r.config import AgentRConfig, parse_threshold
from evolve.agent_r.pairs import make_pairs
from evolve.agent_r.splice import THOUGHTS, plan_splice
from evolve.agent_r.toy import NumberLineWorld, TabularPolicy, oracle_ask, true_first_error
from evolve.agent_r.tree import Node, leaves, search, select, uct
from evolve.agent_r.verifier import first_error, majority, parse_judgment
from evolve.errors import ConfigError

GOALS = (3, 4, 5)


def tree(goal: int, seed: int, **kw) -> tuple[NumberLineWorld, Node, object]:
    cfg = AgentRConfig(**{"rollouts": 8, "n_gen": 4, "max_depth": 4, **kw})
    world = NumberLineWorld(goal, TabularPolicy(), random.Random(seed), cfg.max_depth)
    root, stats = search(world, cfg, random.Random(seed))
    return world, root, stats


# 1. UCT arithmetic ---------------------------------------------------------------------------------
def test_uct_value_unvisited_first_terminal_never():
    parent = Node(visits=10)
    a = Node(parent=parent, visits=4, value=3.0)
    assert uct(a, 10, 0.25) == pytest.approx(0.75 + 0.25 * math.sqrt(math.log(10) / 4), rel=1e-12)
    assert AgentRConfig().c == 0.25
    b = Node(parent=parent)  # unvisited
    t = Node(parent=parent, visits=1, value=1.0, terminal=True)
    parent.children = [a, b, t]
    rng = random.Random(0)
    assert all(select(parent, 0.25, rng) is b for _ in range(20))
    b.visits, b.value = 4, 0.0
    assert all(select(parent, 0.25, rng) is a for _ in range(20))
    t.value = 100.0  # a terminal child is never chosen, whatever its score
    assert all(select(parent, 0.25, rng) is not t for _ in range(20))
    a.terminal = b.terminal = True
    assert select(parent, 0.25, rng) is None


# 2. Backprop and pruning ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_visits_count_terminal_leaves_and_terminal_iff_all_children(seed):
    goal = GOALS[seed % 3]
    _, root, _ = tree(goal, seed, rollouts=12)
    for node in root.walk():
        below = [n for n in node.walk() if n.leaf]
        assert node.visits == len(below)
        assert node.value == pytest.approx(sum(n.reward for n in below))
        if node.children:
            assert node.terminal == all(ch.terminal for ch in node.children)
        elif node.leaf:
            assert node.terminal
        assert not node.leaf or 0.0 <= node.reward <= 1.0
    disasters = [n for n in root.walk() if n.disaster]
    assert all(n.reward == 0.0 and int(n.state) > goal for n in disasters)


# 3. Budget -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_policy_calls_bounded_and_equal_children(seed):
    world, root, stats = tree(6, seed, rollouts=4, n_gen=4, max_depth=6)
    assert stats.policy_calls == world.policy_calls == stats.children == len(root.walk()) - 1
    assert stats.policy_calls <= 4 * 6 * 4
    assert max(n.depth for n in root.walk()) <= 6


# 4. Pairing with thresholds given as strings ------------------------------------------------------
def test_pairs_with_string_thresholds_from_the_environment():
    cfg = AgentRConfig.from_env({"EVOLVE_AGENT_R_ALPHA": "0.5", "EVOLVE_AGENT_R_BETA": "0.2"})
    assert (cfg.alpha, cfg.beta) == (0.5, 0.2)
    found = 0
    for seed in range(10):
        _, root, _ = tree(GOALS[seed % 3], seed)
        ends = leaves(root)
        # fractional leaf values too: give some leaves partial credit
        for i, n in enumerate(ends):
            if i % 3 == 2:
                n.value = 0.4 * n.visits
        want = {(h.id, l.id) for h in ends for l in ends if h.mean - l.mean > 0.2 and h.mean > 0.5}
        got = make_pairs(root, "0.5", "0.2", seed=seed)
        if root.value <= 0:  # no success anywhere: the task is skipped, as upstream does
            assert got == []
            continue
        assert {(p.high.id, p.low.id) for p in got} == want
        assert len(got) == len({(p.high.id, p.low.id) for p in got})
        found += len(got)
    assert found > 0


@pytest.mark.parametrize("bad", ["abc", "", "1.5", "-0.1", "nan", None, True])
def test_bad_thresholds_are_one_line_errors(bad):
    with pytest.raises(ConfigError, match="alpha must be a number"):
        parse_threshold(bad, "alpha")
    with pytest.raises(ConfigError, match="beta"):
        AgentRConfig.from_env({"EVOLVE_AGENT_R_BETA": "x"} if bad is None else {"EVOLVE_AGENT_R_BETA": str(bad) + "x"})


# 5. First error and strict parsing ----------------------------------------------------------------
def test_oracle_verifier_finds_the_true_first_error_on_every_bad_path():
    checked = 0
    for seed in range(30):
        goal = GOALS[seed % 3]
        world, root, _ = tree(goal, seed)
        for leaf in leaves(root):
            if leaf.reward == 1.0:
                continue
            steps = [(n.response.content, n.observation.content) for n in leaf.path()[1:]]
            flagged, verdicts = first_error(world.task, steps, oracle_ask())
            assert flagged == true_first_error(leaf.path(), goal, 4) is not None
            assert [v.verdict for v in verdicts] == ["good"] * (flagged - 1) + ["bad"]
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("text,verdict", [
    ("The step is not good: it overshoots.\nJudgment: Bad", "bad"),
    ("A good action would have been +1. This one was not.\nJudgment: Bad", "bad"),
    ("Looks fine.\nJudgment: Good", "good"),
    ("judgment:   uncertain.", "uncertain"),
    ("Judgment: Good\nActually, wait, I am not sure.", "invalid"),  # only the last line counts
    ("This step is good.", "invalid"),  # no judgment line: never read as Good
    ("Judgement: Good", "invalid"),  # upstream's spelling is not the prompt's
    ("", "invalid"),
])
def test_strict_judgment_parsing(text, verdict):
    assert parse_judgment(text) == verdict


def test_majority_of_k():
    assert majority(["bad", "bad", "good"]) == "bad"
    assert majority(["bad", "good"]) == "uncertain"
    assert majority(["invalid", "invalid"]) == "uncertain"
    assert majority(["invalid", "good", "invalid"]) == "good"
    calls = []

    def ask(messages, k):
        calls.append(k)
        return ["x\nJudgment: Bad", "y\nJudgment: Bad", "z\nJudgment: Good"][:k]
    flagged, verdicts = first_error("task", [("a", "b"), ("c", "d")], ask, k=3)
    assert flagged == 1 and calls == [3] and verdicts[0].verdict == "bad"


# 6. Replayability ---------------------------------------------------------------------------------
def test_every_kept_splice_replays_and_upstream_splicing_often_does_not():
    kept = upstream_ok = upstream_all = 0
    for seed in range(40):
        goal = GOALS[seed % 3]
        world = NumberLineWorld(goal, TabularPolicy(), random.Random(seed), 4)
        cfg = AgentRConfig(rollouts=8, n_gen=4, max_depth=4)
        res = build_instance(world, cfg, oracle_ask(), instance_id=f"line-{goal}", rng=random.Random(seed))
        for traj in res.splices:  # kept ones really reach the good state and reward (replayed again, independently)
            again = world.replay([s.response for s in traj.steps])
            assert again.state == str(goal) and again.reward == 1.0
            learned = [s.response.train for s in traj.steps]
            k = traj.branch_step
            assert learned == [False] * k + [True] * (len(learned) - k)
            assert re.search(r"\nundo \d+$", traj.steps[k].response.content)  # the revision turn: a real undo
            kept += 1
        # upstream-style splices of the same pairs, replayed with the revision as the no-op it is upstream
        for plan in res.plans:
            up, _ = plan_splice(world, plan.low, plan.good, plan.info["flagged"], cfg.alpha, "divergence")
            rep = world.replay(up.responses)
            upstream_all += 1
            upstream_ok += rep.state == plan.good.state and rep.reward == plan.good.reward
    assert kept >= 50
    print(f"kept splices replayed: {kept}/{kept}; upstream-style: {upstream_ok}/{upstream_all}")
    assert upstream_ok < 0.9 * upstream_all


def test_revision_thoughts_are_all_used():
    world = NumberLineWorld(3, TabularPolicy(), random.Random(0), 4)
    seen = {world.revision(THOUGHTS[i % len(THOUGHTS)]).content.splitlines()[0] for i in range(2 * len(THOUGHTS))}
    assert len(seen) == len(THOUGHTS) >= 10


# Storage: trees, pairs, verdicts, splices; a killed search's nodes are moved aside on resume ----------------
def test_everything_is_stored_and_a_partial_tree_is_moved_aside(tmp_path):
    from evolve.agent_r.loop import _abandon
    from evolve.store import RunStore

    with RunStore(tmp_path / "run") as store:
        world = NumberLineWorld(4, TabularPolicy(), random.Random(1), 4)
        res = build_instance(world, AgentRConfig(rollouts=8, n_gen=4, max_depth=4), oracle_ask(),
                             instance_id="line-4", store=store, run_id="r", rng=random.Random(1))
        nodes = store.tree(tree_id="r/line-4", kind="mcts")
        assert len(nodes) == len(res.root.walk())
        by_id = {n.id: n for n in res.root.walk()}
        for rec in nodes:
            n = by_id[rec.id]
            assert rec.trials == n.visits and rec.successes == round(n.value) and rec.info["value"] == n.value
            assert rec.parent_id == (n.parent.id if n.parent else None)
        assert len(store.documents("agent-r:pair", run_id="r")) >= len(res.plans)
        verdicts = store.documents("agent-r:verdict", run_id="r")
        assert verdicts and {d["verdict"] for _, d in verdicts} <= {"good", "bad", "uncertain", "invalid"}
        splices = store.documents("agent-r:splice", run_id="r")
        assert sum(d["kept"] for _, d in splices) == len(res.splices) > 0
        for traj in res.splices:
            stored = store.get_trajectory(traj.id)
            assert stored.origin == "agent-r:splice" and [s.response.train for s in stored.steps] == \
                [s.response.train for s in traj.steps]
        summary = store.document("agent-r:instance", "r/line-4")
        assert summary["splice_ids"] == [t.id for t in res.splices]
        _abandon(store, "r/line-4")
        assert store.tree(tree_id="r/line-4") == []
        assert len(store.tree(tree_id="r/line-4#abandoned")) == len(nodes)


# 6b. Splices whose good path starts with its own undo (issue 18, item 17) --------------------------------------
def _node(parent: Node, action: str, world: NumberLineWorld) -> Node:
    from records import Message

    n = Node(parent=parent, depth=parent.depth + 1, response=Message(role="assistant", content=action))
    actions = [p.response.content for p in n.path()[1:]]
    line = world._run(actions)
    n.state, n.reward = str(line.pos), (line.reward if line.pos >= world.goal or n.depth == 4 else None)
    n.observation = Message(role="user", content=f"position {line.pos}")
    n.visits, n.value = 1, max(n.reward or 0.0, 0.0)
    parent.children.append(n)
    return n


@pytest.mark.parametrize("good_actions,revision,rest", [
    (["undo", "+1", "+2"], "undo 2", ["+1", "+2"]),  # the good path's own undo joins the revision's: to the root
    (["undo", "undo", "+1"], "undo 1", ["+1"]),  # an undo taking back the undo before it: net, to the parent
    (["+1"], "undo 1", ["+1"]),  # no leading undo: the plan is unchanged
])
def test_a_good_path_starting_with_undo_is_folded_into_the_revision_and_replays(good_actions, revision, rest):
    world = NumberLineWorld(3, TabularPolicy(), random.Random(0), 4)
    root = Node()
    parent = _node(root, "+2", world)  # position 2
    low = _node(parent, "+2", world)  # position 4: overshoot, the flagged step
    good = parent
    for a in good_actions:
        good = _node(good, a, world)
    assert good.reward == 1.0 and good.state == "3"
    plan, why = plan_splice(world, low, good, 2, 0.5)
    assert plan is not None, why
    texts = [m.content.splitlines()[-1] for m in plan.responses]
    assert texts[:2] == ["+2", "+2"] and texts[2] == revision, texts
    assert texts[3:] == rest, texts  # the continuation after its folded undos
    assert [m.train for m in plan.responses] == [False, False] + [True] * (len(texts) - 2)
    replayed = world.replay(plan.responses)
    assert replayed.state == good.state and replayed.reward == good.reward


def test_no_planned_splice_fails_its_replay_over_200_toy_searches():
    """The search of the replayability check, 200 seeds: every planned splice replays, those whose good
    continuation starts with an undo included (34 of 738 did not before they were folded)."""
    planned = leading = failed = 0
    for seed in range(200):
        goal = GOALS[seed % 3]
        world = NumberLineWorld(goal, TabularPolicy(), random.Random(seed), 4)
        res = build_instance(world, AgentRConfig(rollouts=8, n_gen=4, max_depth=4), oracle_ask(),
                             instance_id=f"line-{goal}", rng=random.Random(seed))
        for plan in res.plans:
            planned += 1
            cont = plan.good.path()[plan.parent.depth + 1:]
            leading += bool(cont) and cont[0].response.content.startswith("undo")
            rep = world.replay(plan.responses)
            failed += not (rep.state == plan.good.state and rep.reward == max(plan.good.reward or 0.0, 0.0))
        assert not res.dropped.get("replay did not reach the good path's state and reward"), res.dropped
    assert planned > 500 and leading >= 20 and failed == 0, (planned, leading, failed)
