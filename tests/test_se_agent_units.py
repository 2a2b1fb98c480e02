"""SE-Agent's parts on their own: isolation of operator inputs, compression contract, summariser schema and
fallback, selection from visible signals with a position-swapped judge (anchors §3.9 checks 1, 3, 4, 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.policy.base import Generation, Policy, SamplingParams
from evolve.se_agent.compress import clip, compress
from evolve.se_agent.loop import pool
from evolve.se_agent.operators import apply_operator, choose_sources
from evolve.se_agent.prompts import WiringError, build_prompt, check_wiring
from evolve.se_agent.records import DOC_SUMMARY, Attempt, PoolEntry, VisibleOutcome, slot_key
from evolve.se_agent.select import parse_verdict, select
from evolve.se_agent.summarise import summarise
from evolve.store import RunStore
from records import Message, Step, TaskInstance, ToolCall, Trajectory, TrajectoryStatus


class EchoPolicy(Policy):
    """Fake LLM: answers each call with `reply(system, user)` and records the prompts it got."""

    spec = "fake"

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    @property
    def context_length(self) -> int:
        return 100_000

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4

    def generate(self, conversations: list[list[Message]], params: SamplingParams,
                 tools: list[dict[str, Any]] | None = None) -> list[Generation]:
        out = []
        for conv in conversations:
            self.prompts.append(conv)
            out.append(Generation(text=self.reply(conv[0].content, conv[-1].content)))
        return out


def entry(iid: str, n: int, marker: str, outcome: VisibleOutcome, iteration: int = 1) -> PoolEntry:
    return PoolEntry(instance_id=iid, trajectory_id=f"{iid}-t{n}", iteration=iteration, slot=n, origin="se-agent:pilot",
                     approach=f"approach {marker}", files_touched=[f"{marker}.py"], key_changes=[f"change {marker}"],
                     tools_used=["bash"], reasoning_pattern="read -> edit", assumptions=[f"assume {marker}"],
                     outcome=outcome)


FAILED = VisibleOutcome(patch_produced=True, applies=True, tests="fail", regressions=["t1"], final_status="submitted")
GOOD = VisibleOutcome(patch_produced=True, applies=True, tests="pass", tests_passed=5, final_status="submitted")
EMPTY = VisibleOutcome(patch_produced=False, final_status="budget_exhausted")


@pytest.mark.parametrize("operator", ["revision", "recombination", "refinement"])
def test_operator_prompt_holds_only_its_instance(tmp_path, operator):
    """Check 1: pools of A and B in one store; B's strategy prompt has only B's markers and B's real problem."""
    a = TaskInstance(instance_id="inst-a", problem_statement="PROBLEM-ALPHA: the parser drops comments")
    b = TaskInstance(instance_id="inst-b", problem_statement="PROBLEM-BETA: the cache evicts live keys")
    with RunStore(tmp_path / "run") as store:
        for iid, mk in (("inst-a", "MARKA"), ("inst-b", "MARKB")):
            for n, oc in enumerate([FAILED, GOOD, EMPTY]):
                e = entry(iid, n, f"{mk}{n}", oc)
                store.put_document(DOC_SUMMARY, slot_key(iid, 1, n), e, run_id="r")
        entries = pool(store, "r", "inst-b")
    assert {e.instance_id for e in entries} == {"inst-b"} and len(entries) == 3
    llm = EchoPolicy(lambda s, u: "Try the other module.")
    out = apply_operator(operator, b, entries, 2, llm)
    sent = llm.prompts[0][-1].content
    assert "PROBLEM-BETA" in sent and "PROBLEM-ALPHA" not in sent and "MARKA" not in sent
    assert "Instance" not in sent.split("</issue>")[0].split("<issue>")[0]  # no placeholder before the issue
    assert out.instance_id == "inst-b" and all(s.startswith("inst-b") for s in out.sources)
    assert out.text == "Try the other module." and not out.fallback
    with pytest.raises(ValueError, match="holds entries of"):
        apply_operator(operator, b, entries + [entry("inst-a", 9, "MARKA9", FAILED)], 2, llm)


def test_recombination_takes_the_best_two_not_the_last_two():
    pool_ = [entry("i", 0, "best", GOOD), entry("i", 1, "second", VisibleOutcome(
        patch_produced=True, applies=True, tests="pass", final_status="budget_exhausted")),
        entry("i", 2, "bad", FAILED, 2), entry("i", 3, "worse", EMPTY, 3)]
    assert [e.trajectory_id for e in choose_sources("recombination", pool_)] == ["i-t0", "i-t1"]
    assert [e.trajectory_id for e in choose_sources("revision", pool_)] == ["i-t3"]  # the latest failed one
    assert len(choose_sources("refinement", pool_)) == 4


def test_operator_failure_falls_back_to_a_grounded_strategy():
    inst = TaskInstance(instance_id="i", problem_statement="p")
    def boom(s, u):
        raise RuntimeError("server down")
    out = apply_operator("revision", inst, [entry("i", 0, "X", FAILED)], 2, EchoPolicy(boom))
    assert out.fallback and "server down" in out.fallback_reason
    assert "approach X" in out.text and "broke visible tests (t1)" in out.text


def test_an_operator_answer_that_repeats_its_prompt_falls_back():
    inst = TaskInstance(instance_id="i", problem_statement="The parser drops every comment line after a blank line.")
    llm = EchoPolicy(lambda s, u: s + " and more")  # what a 270M model did in the measured run
    out = apply_operator("refinement", inst, [entry("i", 0, "X", FAILED)], 2, llm)
    assert out.fallback and "repeated its prompt" in out.fallback_reason
    llm = EchoPolicy(lambda s, u: "Read " + u[8:200])  # quotes the issue mid-answer: an answer, kept
    assert not apply_operator("refinement", inst, [entry("i", 0, "X", FAILED)], 2, llm).fallback


def test_compression_contract():
    """Check 4: every step keeps role/thought/action; long outputs clipped head 20% (30-150) + tail 10%
    (30-100) with a marker; outputs under 300 characters untouched; the cut is reported."""
    long_out = "".join(chr(97 + i % 26) for i in range(1000))
    mid_out = "x" * 299
    steps = [Step(index=0, response=Message(role="assistant", content="<think>look first</think>"),
                  tool_calls=[ToolCall(name="bash", arguments={"command": "ls"})],
                  observation=Message(role="user", content=long_out)),
             Step(index=1, response=Message(role="assistant", content="<think>edit now</think>"),
                  tool_calls=[ToolCall(name="create", arguments={"path": "a.py", "content": "y" * 2000})],
                  observation=Message(role="user", content=mid_out))]
    c = compress(Trajectory(instance_id="i", steps=steps))
    assert "thought: look first" in c.text and "thought: edit now" in c.text
    assert "action: bash" in c.text and "action: create" in c.text
    assert mid_out in c.text  # under 300: untouched
    clipped, cut = clip(long_out)
    assert clipped.startswith(long_out[:150]) and clipped.endswith(long_out[-100:]) and cut == 1000 - 250
    assert f"[... {cut} chars cut ...]" in c.text
    short, cut_s = clip("z" * 300)  # 20% = 60, 10% = 30
    assert short.startswith("z" * 60 + " [...") and short.endswith("] " + "z" * 30) and cut_s == 210
    assert c.clipped == 2 and c.chars_cut > 1000 + 750  # the long editor action and the long output
    assert c.stats()["chars_out"] == len(c.text)


def _traj() -> Trajectory:
    return Trajectory(instance_id="i", status=TrajectoryStatus.submitted,
                      patch="diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
                      steps=[Step(index=0, response=Message(role="assistant", content="<think>fix a</think>"),
                                  tool_calls=[ToolCall(name="str_replace", arguments={})])])


@pytest.mark.parametrize("reply", ["not json at all", '{"approach": "x"}',
                                   json.dumps({"approach": "a", "files_touched": "m.py", "key_changes": "one",
                                               "tools_used": [], "reasoning_pattern": "r", "assumptions": []})])
def test_summary_fallback_keeps_list_fields_lists(reply):
    """Check 3 (types): invalid JSON, missing keys or strings where lists belong -> the fallback, lists intact."""
    inst = TaskInstance(instance_id="i", problem_statement="p")
    e = summarise(inst, _traj(), Attempt(instance_id="i", iteration=1), GOOD, EchoPolicy(lambda s, u: reply))
    assert e.summariser == "fallback" and e.fallback_reason
    for f in ("files_touched", "key_changes", "tools_used", "assumptions"):
        assert isinstance(getattr(e, f), list)
    assert e.files_touched == ["m.py"] and e.key_changes == ["+ a = 2"] and e.tools_used == ["str_replace"]
    assert e.outcome == GOOD  # the outcome is the measured one, never the LLM's


def test_summary_from_the_llm_when_it_follows_the_schema():
    inst = TaskInstance(instance_id="i", problem_statement="p")
    good = {"approach": "changed a", "files_touched": ["m.py"], "key_changes": ["a=2"], "tools_used": ["edit"],
            "reasoning_pattern": "read -> edit", "assumptions": ["a is the constant"]}
    llm = EchoPolicy(lambda s, u: "```json\n" + json.dumps(good) + "\n```")
    e = summarise(inst, _traj(), Attempt(instance_id="i", iteration=1), GOOD, llm)
    assert e.summariser == "llm" and e.approach == "changed a" and e.assumptions == ["a is the constant"]
    assert "<issue>\np\n</issue>" in llm.prompts[0][-1].content and e.compression["chars_out"] > 0


def _candidates(n: int, outcome=GOOD):
    es = [entry("i", k, f"c{k}", outcome) for k in range(n)]
    es[1].approach += " hit an error first, then fixed it"  # 'error' must not filter anything
    return es, {e.trajectory_id: f"diff --git a/x b/x\n+patch {k}\n" for k, e in enumerate(es)}


def _prefers(target: str):
    def judge(problem, a, b):
        return "A" if target in a.split("\n")[0] else "B" if target in b.split("\n")[0] else "tie"
    return judge


def test_selection_follows_the_judge_with_positions_swapped():
    """Check 6: a fake judge preferring candidate 2 among 3 -> 2 (not filtered for 'error')."""
    es, patches = _candidates(3)
    v = select("problem", es, patches, _prefers("i-t1"))
    assert v.method == "judge" and v.selected == "i-t1" and len(v.comparisons) == 3
    assert all(c["a_first"] is not None and c["b_first"] is not None for c in v.comparisons)


def test_judge_failure_is_undecided_not_index_zero():
    es, patches = _candidates(3)
    patches["i-t0"] += "+a much larger first candidate\n" * 5
    v = select("problem", es, patches, lambda p, a, b: None)
    assert v.method == "undecided" and v.selected != "i-t0" and v.tie_break
    position_biased = select("problem", es, patches, lambda p, a, b: "A")  # always the first shown
    assert position_biased.method == "undecided" and position_biased.selected != "i-t0"


def test_visible_signals_decide_before_the_judge():
    es, patches = _candidates(3, FAILED)
    es[2].outcome = GOOD
    v = select("problem", es, patches, lambda p, a, b: (_ for _ in ()).throw(AssertionError("judge not needed")))
    assert v.method == "visible" and v.selected == "i-t2"
    nothing = select("problem", [entry("i", 0, "e", EMPTY)], {"i-t0": ""}, None)
    assert nothing.selected is None and nothing.method == "none"


def test_verdict_parsed_from_the_last_line_only():
    assert parse_verdict("A is shorter.\nWinner: B") == "B"
    assert parse_verdict("**Winner:** tie") == "tie"
    assert parse_verdict("Winner: A\nbut maybe not") is None
    assert parse_verdict("") is None


def test_prompt_additions_are_appended_and_checked():
    base = [Message(role="system", content="SYS with TOOLS"), Message(role="user", content="ISSUE")]
    att = Attempt(instance_id="i", iteration=2, origin="se-agent:revision", strategy="Go via module Q.",
                  planning="")
    p = build_prompt(base, att)
    assert p[0].content.startswith("SYS with TOOLS") and "Go via module Q." in p[0].content and p[1].content == "ISSUE"
    check_wiring(Trajectory(instance_id="i", prompt=p), base, att)
    with pytest.raises(WiringError, match="did not reach"):
        check_wiring(Trajectory(instance_id="i", prompt=base), base, att)
    with pytest.raises(WiringError, match="replaced"):
        check_wiring(Trajectory(instance_id="i", prompt=[Message(role="system", content="Go via module Q."),
                                                         base[1]]), base, att)
