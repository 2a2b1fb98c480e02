"""LLM-as-judge reward: reply parsing, caching, bounded prompts (the model is a fake `generate`)."""

from __future__ import annotations

import pytest

from records import Message, Step, TaskInstance, Trajectory, TrajectoryStatus
from rewards.judge import Criterion, Judge, JudgeConfig, cache_key, clip, parse_judgement, trajectory_prompt

CFG = JudgeConfig()  # criteria: correctness 0.5, approach 0.3, efficiency 0.2; max 10

PARSE_CASES = [
    # (id, reply, expected total or None for an error)
    ("plain", "Looks fine.\nSCORE: 7/10", 0.7),
    ("no denominator", "SCORE: 7", 0.7),
    ("other scale", "Score: 4/5", 0.8),
    ("out of", "Final score: 3 out of 10", 0.3),
    ("markdown bold", "**SCORE:** 8 / 10", 0.8),
    ("decimal", "SCORE: 6.5/10", 0.65),
    ("last score line wins", "SCORE: 2/10\nOn reflection...\nSCORE: 9/10", 0.9),
    ("clamped high", "SCORE: 12/10", 1.0),
    ("clamped low", "SCORE: -3/10", 0.0),
    # criteria all present: (0.5*8 + 0.3*6 + 0.2*10)/1.0 /10 = (4+1.8+2)/10 = 0.78, SCORE line ignored
    ("criteria weighted", "correctness: 8/10\napproach: 6/10\nefficiency: 10/10\nRATIONALE: ok\nSCORE: 1/10", 0.78),
    ("criteria without score line", "Correctness: 8/10\n- Approach: 6/10\n**Efficiency**: 10/10", 0.78),
    # only one criterion: not all present -> the overall SCORE is used
    ("partial criteria", "correctness: 2/10\nSCORE: 5/10", 0.5),
    ("json", 'Here: {"score": 6, "rationale": "fine"}', 0.6),
    ("json fenced string score", '```json\n{"score": "9/10", "reasoning": "good"}\n```', 0.9),
    # (0.5*10 + 0.3*0 + 0.2*5)/10 = 0.6
    ("json criteria", '{"criteria": {"Correctness": 10, "approach": 0, "efficiency": 5}}', 0.6),
    ("json last object wins", '{"score": 1} then {"score": 8}', 0.8),
    ("partial criteria then json", 'correctness: 2/10\n{"score": 4}', 0.4),
    ("no score", "The patch is good.", None),
    ("empty", "", None),
    ("placeholder copied", "SCORE: <overall score>/10", None),
    ("zero scale", "SCORE: 5/0", None),
    ("words", "SCORE: seven", None),
    ("json bool score", '{"score": true}', None),
    ("json non-numeric", '{"score": "great"}', None),
    ("broken json", '{"score": 7', None),
    ("partial criteria only", "correctness: 9/10", None),
]


@pytest.mark.parametrize("reply,expected", [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse(reply: str, expected: float | None) -> None:
    j = parse_judgement(reply, CFG)
    if expected is None:
        assert j.score is None and j.error
    else:
        assert j.error is None
        assert j.score == pytest.approx(expected)


def test_parse_parts_and_rationale() -> None:
    j = parse_judgement("correctness: 8/10\napproach: 6/10\nefficiency: 10/10\n"
                        "RATIONALE: Fixes the bug\nbut loops twice.\nSCORE: 8/10", CFG)
    assert j.parts == pytest.approx({"correctness": 0.8, "approach": 0.6, "efficiency": 1.0})
    assert j.rationale == "Fixes the bug\nbut loops twice."
    j = parse_judgement("It works well.\nSCORE: 9/10", CFG)
    assert j.rationale == "It works well."


def test_criterion_names_with_underscores() -> None:
    cfg = JudgeConfig(criteria=[Criterion(name="test_coverage", description="tests", weight=1.0)])
    assert parse_judgement("Test coverage: 4/10", cfg).parts == {"test_coverage": pytest.approx(0.4)}
    assert parse_judgement("test-coverage score: 4/10", cfg).score == pytest.approx(0.4)


def test_criteria_total_can_be_turned_off() -> None:
    cfg = JudgeConfig(use_criteria_total=False)
    j = parse_judgement("correctness: 8/10\napproach: 6/10\nefficiency: 10/10\nSCORE: 1/10", cfg)
    assert j.score == pytest.approx(0.1)


# --- the judge -----------------------------------------------------------------------------------------

class FakeModel:
    """Counts calls and returns a fixed reply."""

    def __init__(self, reply: str = "correctness: 8/10\napproach: 6/10\nefficiency: 10/10\n"
                                    "RATIONALE: solid\nSCORE: 8/10") -> None:
        self.reply = reply
        self.calls: list[list[Message]] = []

    def __call__(self, messages: list[Message]) -> str:
        self.calls.append(messages)
        return self.reply


def traj(n_steps: int = 2, obs: str = "ok", patch: str = "diff --git a/x b/x") -> Trajectory:
    steps = [Step(index=i, response=Message(role="assistant", content=f"action {i}"),
                  observation=Message(role="tool", content=f"{obs} {i}")) for i in range(n_steps)]
    return Trajectory(instance_id="t-1", steps=steps, patch=patch, status=TrajectoryStatus.submitted)


def test_judge_trajectory_reward() -> None:
    model = FakeModel()
    r = Judge(model).judge_trajectory("Fix the bug in x.", traj())
    assert r.name == "judge"
    assert r.total == pytest.approx(0.78)
    assert r.parts == pytest.approx({"correctness": 0.8, "approach": 0.6, "efficiency": 1.0})
    assert r.info["rationale"] == "solid"
    assert r.info["cached"] is False
    prompt = model.calls[0]
    assert [m.role for m in prompt] == ["system", "user"]
    assert "correctness (weight 0.5)" in prompt[0].content and "SCORE: <overall score>/10" in prompt[0].content
    assert "Fix the bug in x." in prompt[1].content and "action 1" in prompt[1].content
    assert "diff --git a/x b/x" in prompt[1].content


def test_same_trajectory_judged_once() -> None:
    model = FakeModel()
    judge = Judge(model)
    t = traj()
    first = judge.judge_trajectory("task", t)
    second = judge.judge_trajectory("task", t.model_copy(deep=True))
    assert len(model.calls) == 1
    assert second.info["cached"] is True and second.total == first.total
    judge.judge_trajectory("another task", t)
    judge.judge_trajectory("task", traj(n_steps=3))
    assert len(model.calls) == 3


def test_task_instance_accepted() -> None:
    model = FakeModel()
    judge = Judge(model)
    inst = TaskInstance(instance_id="a__b-1", problem_statement="Fix it.")
    judge.judge_patch(inst, "diff")
    judge.judge_patch("Fix it.", "diff")
    assert len(model.calls) == 1  # same prompt content


def test_persistent_cache_and_config_in_key() -> None:
    shared: dict[str, str] = {}
    Judge(FakeModel(), cache=shared).judge_patch("task", "diff")
    assert len(shared) == 1
    model = FakeModel()
    r = Judge(model, cache=shared).judge_patch("task", "diff")
    assert model.calls == [] and r.info["cached"] is True and r.total == pytest.approx(0.78)
    Judge(model, config=JudgeConfig(max_score=5), cache=shared).judge_patch("task", "diff")
    assert len(model.calls) == 1 and len(shared) == 2
    msgs = [Message(role="user", content="x")]
    assert cache_key(msgs, CFG) != cache_key(msgs, JudgeConfig(head_steps=1))


@pytest.mark.parametrize("reply", ["I refuse.", "", "SCORE: NaN/10", '{"score": [1]}'])
def test_unreadable_reply_gives_zero_not_exception(reply: str) -> None:
    r = Judge(FakeModel(reply)).judge_patch("task", "diff")
    assert r.total == 0.0 and r.parts == {}
    assert r.info["error"]


def test_generate_failure_propagates_and_is_not_cached() -> None:
    cache: dict[str, str] = {}

    def broken(messages: list[Message]) -> str:
        raise ConnectionError("server down")

    with pytest.raises(ConnectionError):
        Judge(broken, cache=cache).judge_patch("task", "diff")
    assert cache == {}


def test_prompt_is_bounded() -> None:
    cfg = JudgeConfig(max_message_chars=500, head_steps=2, tail_steps=3, max_patch_chars=1000, max_task_chars=800)
    huge = traj(n_steps=200, obs="x" * 100_000, patch="+" * 50_000)
    msgs = trajectory_prompt("T" * 20_000, huge, cfg)
    user = msgs[1].content
    # 5 steps shown, each a cut response and a cut observation (~500 + marker each), plus task and patch
    assert len(user) < 800 + 1000 + 5 * 2 * 600 + 1000
    assert "[... 195 steps omitted ...]" in user
    assert "### Step 1\n" in user and "### Step 2\n" in user and "### Step 3\n" not in user
    assert "### Step 198\n" in user and "### Step 200\n" in user and "### Step 197\n" not in user
    short = trajectory_prompt("task", traj(n_steps=5), cfg)[1].content
    assert "omitted" not in short and "### Step 5\n" in short


@pytest.mark.parametrize("text,limit", [("abc", 10), ("a" * 100, 10), ("ab" * 1000, 101)])
def test_clip(text: str, limit: int) -> None:
    out = clip(text, limit)
    if len(text) <= limit:
        assert out == text
    else:
        assert out.startswith(text[:limit // 2]) and out.endswith(text[-(limit - limit // 2):])
        assert f"{len(text) - limit} characters cut" in out
        assert len(out) < limit + 50


def test_empty_patch_rendered() -> None:
    model = FakeModel()
    Judge(model).judge_patch("task", "  \n")
    assert "(empty patch)" in model.calls[0][1].content
