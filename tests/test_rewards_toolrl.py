"""ToolRL's tool-call reward, from tables of cases worked out by hand."""

from __future__ import annotations

import json

import pytest

from rewards.toolrl import ToolRLSchedule, bounds, match_score, score


def call(name: str, **params) -> str:
    return json.dumps({"name": name, "parameters": params})


def calls_msg(*lines: str, think: str = "t") -> str:
    return f"<think>{think}</think>\n<tool_call>\n" + "\n".join(lines) + "\n</tool_call>"


A = call("a", x=1, y=2)
B = call("b", z=3)

# --- format --------------------------------------------------------------------------------------------

ANS_RESPONSE = "<think>t</think>\n<response>hello</response>"
ANS_CALL = calls_msg(A)
ANS_BOTH = calls_msg(A) + "\n<response>done</response>"
ANS_NEITHER = "<think>just thinking</think>"

FORMAT_CASES = [
    # (answer, response, expected format)
    (ANS_RESPONSE, "<think>a</think>\n<response>b</response>", 1.0),
    (ANS_RESPONSE, "  \n<think>a</think>\n<response>b</response>\n\n ", 1.0),  # surrounding whitespace stripped
    (ANS_RESPONSE, "<think>line 1\nline 2\n</think>\n<response>x\ny</response>", 1.0),  # DOTALL
    (ANS_RESPONSE, "<think>a</think><response>b</response>", 0.0),  # no newline between
    (ANS_RESPONSE, "<think>a</think>\n\n<response>b</response>", 0.0),  # two newlines
    (ANS_RESPONSE, "<think>a</think>\n<response>b</response><response>c</response>", 0.0),  # two responses
    (ANS_RESPONSE, "ok <think>a</think>\n<response>b</response>", 0.0),  # text before think
    (ANS_RESPONSE, "<think>a</think>\n<response>b</response> trailing", 0.0),
    (ANS_RESPONSE, calls_msg(A), 0.0),  # a call where a response is due
    (ANS_CALL, calls_msg(A), 1.0),
    (ANS_CALL, calls_msg("not json at all"), 1.0),  # format only looks at tags
    (ANS_CALL, calls_msg(A, B), 1.0),
    (ANS_CALL, f"<think>t</think>\n<tool_call>{A}</tool_call>", 0.0),  # block needs its own lines
    (ANS_CALL, calls_msg(A) + "\n<response>x</response>", 0.0),  # response not in the answer
    (ANS_CALL, calls_msg(A) + "\n" + "<tool_call>\n" + B + "\n</tool_call>", 0.0),  # two blocks
    (ANS_CALL, "<tool_call>\n" + A + "\n</tool_call>", 0.0),  # no think
    (ANS_BOTH, calls_msg(A) + "\n<response>r</response>", 1.0),
    (ANS_BOTH, calls_msg(A), 0.0),  # response missing
    (ANS_BOTH, "<think>t</think>\n<response>r</response>\n<tool_call>\n" + A + "\n</tool_call>", 0.0),  # order
    (ANS_BOTH, calls_msg(A) + "\n<response>r</response>\n<response>s</response>", 0.0),
    (ANS_NEITHER, "<think>a</think>", 1.0),
    (ANS_NEITHER, "\n<think>a\nb</think>\n", 1.0),
    (ANS_NEITHER, "<think>a</think>\n<response>b</response>", 0.0),
    (ANS_NEITHER, "no tags", 0.0),
]


@pytest.mark.parametrize("answer,response,expected", FORMAT_CASES)
def test_format(answer: str, response: str, expected: float) -> None:
    assert score(response, answer).format == expected


# --- correctness ---------------------------------------------------------------------------------------

CORRECTNESS_CASES = [
    # (id, gt lines, predicted response, expected correctness)
    ("exact", [A], calls_msg(A), 3.0),
    ("key order irrelevant", [A], calls_msg('{"parameters": {"y": 2, "x": 1}, "name": "a"}'), 3.0),
    ("int equals float", [call("a", n=1)], calls_msg(call("a", n=1.0)), 3.0),
    # names ['a','b'] vs ['b','a']: not equal, |∩|=2 -> 2/(2+2-2)=1; max=1+(1+2)+(1+1)=6;
    # a: keys 1 + values 2 = 3; b: 1 + 1 = 2; score=1+3+2=6 -> 6*6/6-3 = 3
    ("calls reordered", [A, B], calls_msg(B, A), 3.0),
    # names 1; max=1+3=4; keys 1 + values 1 (x) = 2 -> score 3 -> 6*3/4-3 = 1.5
    ("one wrong value", [A], calls_msg(call("a", x=1, y=5)), 1.5),
    # keys ['x','y'] vs ['x']: 1/(2+1-1)=0.5, values 1 -> 1.5; score 2.5; 6*2.5/4-3 = 0.75
    ("missing param", [A], calls_msg(call("a", x=1)), 0.75),
    # keys ['x','y'] vs ['x','y','z']: 2/(2+3-2)=2/3, values 2; score 1+8/3=11/3; 6*(11/3)/4-3 = 2.5
    ("extra param", [A], calls_msg(call("a", x=1, y=2, z=9)), 2.5),
    # names ['a'] vs ['c']: 0; no same-name call -> score 0 -> -3
    ("wrong name", [A], calls_msg(call("c", x=1, y=2)), -3.0),
    # names ['a'] vs ['a','b']: 1/(1+2-1)=0.5; a: 3; score 3.5; max 4 -> 6*3.5/4-3 = 2.25
    ("extra predicted call", [A], calls_msg(A, B), 2.25),
    # names ['a','b'] vs ['a']: 0.5; a: 3; b: none; score 3.5; max 6 -> 6*3.5/6-3 = 0.5
    ("missing call", [A, B], calls_msg(A), 0.5),
    # names ['a','a'] vs ['a']: 1/(2+1-1)=0.5; max=1+3+3=7; gt a(1,2) greedily takes the only pred a(3,4):
    # keys 1 + values 0 = 1; gt a(3,4) gets nothing; score 1.5 -> 6*1.5/7-3 = -12/7
    ("duplicate names greedy", [A, call("a", x=3, y=4)], calls_msg(call("a", x=3, y=4)), 9 / 7 - 3),
    # names ['a','a'] vs ['a','a','a']: 2/(2+3-2)=2/3; each gt gets 3; score 6+2/3; max 7 -> 40/7-3
    ("multiset names", [A, A], calls_msg(A, A, A), 40 / 7 - 3),
    # names equal -> 1; gt a(1,2): pred0 a(1,9)=2, pred1 a(1,2)=3 -> pred1; gt a(1,9): pred0 = 3; 7/7 -> 3
    ("best match not first", [A, call("a", x=1, y=9)], calls_msg(call("a", x=1, y=9), A), 3.0),
    # tie: gt a(1,2): pred0 a(1,5)=2, pred1 a(1,6)=2 -> first (pred0); gt a(1,6): pred1 = 3;
    # score 1+2+3=6, max 7 -> 36/7-3 = 15/7  (taking pred1 first would give 1+2+2 -> 9/7)
    ("first of equal best", [A, call("a", x=1, y=6)],
     calls_msg(call("a", x=1, y=5), call("a", x=1, y=6)), 36 / 7 - 3),
    # nested values: items equal, opts differ (true vs 1: a boolean is not a number);
    # names 1; keys 1; values 1; max 1+1+2=4 -> 6*3/4-3 = 1.5
    ("nested bool vs int", [call("o", items=[{"sku": "a", "qty": 2}], opts={"gift": True})],
     calls_msg(call("o", items=[{"qty": 2, "sku": "a"}], opts={"gift": 1})), 1.5),
    ("nested dict key order", [call("o", items=[{"sku": "a", "qty": 2}], opts={"gift": True, "n": [1, 2]})],
     calls_msg(call("o", opts={"n": [1, 2], "gift": True}, items=[{"qty": 2, "sku": "a"}])), 3.0),
    # list order matters: values 0 of 1; names 1, keys 1 -> 2/3 -> 6*2/3-3 = 1
    ("list order", [call("o", tags=["x", "y"])], calls_msg(call("o", tags=["y", "x"])), 1.0),
    # bool vs int at top level: names 1, keys 1, values 0 -> 2/3 -> 1
    ("bool is not int", [call("s", on=True)], calls_msg(call("s", on=1)), 1.0),
    ("no-parameter call", [call("n")], calls_msg(call("n")), 3.0),
    # names 1; max 1+1+0=2; keys match([], ['e'])=0 and values 0 -> not counted; 6*1/2-3 = 0
    ("no-parameter call, extra param", [call("n")], calls_msg(call("n", e=1)), 0.0),
    ("whitespace around lines", [A, B], calls_msg("  " + A + " ", "\t" + B), 3.0),
    # unparseable -> -3
    ("no tool_call tag", [A], "<think>t</think>\n<response>a(1,2)</response>", -3.0),
    ("no closing tag", [A], "<think>t</think>\n<tool_call>\n" + A, -3.0),
    ("invalid json", [A], calls_msg('{"name": "a", "parameters": {"x": 1,}}'), -3.0),
    ("blank line inside block", [A, B], calls_msg(A, "", B), -3.0),
    ("empty block", [A], "<think>t</think>\n<tool_call>\n\n</tool_call>", -3.0),
    ("parameters missing", [A], calls_msg('{"name": "a"}'), -3.0),
    ("parameters not an object", [A], calls_msg('{"name": "a", "parameters": [1, 2]}'), -3.0),
    ("name not a string", [A], calls_msg('{"name": 5, "parameters": {}}'), -3.0),
    ("line is an array", [A], calls_msg(f"[{A}]"), -3.0),
    ("two calls on one line", [A, B], calls_msg(A + " " + B), -3.0),
    # only the first <tool_call> block counts: it holds b; names ['a'] vs ['b'] -> 0, no same-name call -> -3
    ("first block only", [A], calls_msg(B) + "\n<tool_call>\n" + A + "\n</tool_call>", -3.0),
]


@pytest.mark.parametrize("gt,response,expected", [c[1:] for c in CORRECTNESS_CASES],
                         ids=[c[0] for c in CORRECTNESS_CASES])
def test_correctness(gt: list[str], response: str, expected: float) -> None:
    assert score(response, calls_msg(*gt)).correctness == pytest.approx(expected)


@pytest.mark.parametrize("answer", [ANS_RESPONSE, ANS_NEITHER, "<think>t</think>\n<response>x</response>"])
@pytest.mark.parametrize("response", [calls_msg(A), "garbage", ""])
def test_no_call_answer_has_zero_correctness(answer: str, response: str) -> None:
    assert score(response, answer).correctness == 0.0


def test_both_answer_scores_the_calls() -> None:
    # names 1, keys 1, values 1 (x) of max 4 -> 6*3/4-3 = 1.5; format 1
    s = score(calls_msg(call("a", x=1, y=0)) + "\n<response>r</response>", ANS_BOTH)
    assert (s.format, s.correctness, s.total) == (1.0, 1.5, 2.5)


def test_total_and_reward() -> None:
    s = score(calls_msg(call("a", x=1)), ANS_CALL)
    assert s.total == pytest.approx(1.0 + 0.75)
    r = s.to_reward()
    assert r.name == "toolrl"
    assert r.total == pytest.approx(1.75)
    assert r.parts == {"format": 1.0, "correctness": 0.75}


def test_malformed_ground_truth_raises() -> None:
    with pytest.raises(ValueError, match="ground-truth"):
        score(calls_msg(A), calls_msg("oops"))


@pytest.mark.parametrize("a,b,expected", [
    ([], [], 1.0),
    (["x"], [], 0.0),
    ([], ["x"], 0.0),
    (["x", "y"], ["y", "x"], 1.0),  # |∩|=2 / (2+2-2)
    (["x", "x"], ["x"], 0.5),       # 1 / (2+1-1)
    (["x", "y"], ["y", "z"], 1 / 3),  # 1 / (2+2-1)
    (["x"], ["z"], 0.0),
])
def test_match_score(a: list[str], b: list[str], expected: float) -> None:
    assert match_score(a, b) == pytest.approx(expected)


# --- schedules -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule,step,expected", [
    (None, 0, ((0.0, 1.0), (-3.0, 3.0))),
    (None, 10_000, ((0.0, 1.0), (-3.0, 3.0))),
    # dynamic, t = step/150: fmax = max(1, 2-t), fmin = min(-1, -2+2t), cmax = min(3, 2+t), cmin = max(-3, -2-t)
    (ToolRLSchedule(kind="dynamic"), 0, ((-2.0, 2.0), (-2.0, 2.0))),
    (ToolRLSchedule(kind="dynamic"), 30, ((-1.6, 1.8), (-2.2, 2.2))),
    (ToolRLSchedule(kind="dynamic"), 75, ((-1.0, 1.5), (-2.5, 2.5))),
    (ToolRLSchedule(kind="dynamic"), 150, ((-1.0, 1.0), (-3.0, 3.0))),
    (ToolRLSchedule(kind="dynamic"), 600, ((-1.0, 1.0), (-3.0, 3.0))),
    (ToolRLSchedule(kind="dynamic", horizon=10), 5, ((-1.0, 1.5), (-2.5, 2.5))),
    (ToolRLSchedule(kind="two_stage"), 29, ((0.0, 1.0), (-1.0, 1.0))),
    (ToolRLSchedule(kind="two_stage"), 30, ((0.0, 0.5), (-3.0, 3.0))),
    (ToolRLSchedule(kind="equal_max"), 500, ((0.0, 1.0), (-1.0, 1.0))),
])
def test_bounds(schedule: ToolRLSchedule | None, step: int, expected) -> None:
    (fmin, fmax), (cmin, cmax) = bounds(step, schedule)
    (efmin, efmax), (ecmin, ecmax) = expected
    assert (fmin, fmax, cmin, cmax) == pytest.approx((efmin, efmax, ecmin, ecmax))


def test_schedule_applies_to_score() -> None:
    sched = ToolRLSchedule(kind="dynamic")
    exact = score(calls_msg(A), ANS_CALL, step=0, schedule=sched)
    assert (exact.format, exact.correctness, exact.total) == (2.0, 2.0, 4.0)
    # one wrong value: score 3 of 4 -> (2-(-2))*3/4 + (-2) = 1; bad format -> -2
    partial = score(f"<tool_call>\n{call('a', x=1, y=5)}\n</tool_call>", ANS_CALL, step=0, schedule=sched)
    assert (partial.format, partial.correctness) == pytest.approx((-2.0, 1.0))
    bad = score("nothing", ANS_CALL, step=150, schedule=sched)
    assert (bad.format, bad.correctness) == (-1.0, -3.0)
