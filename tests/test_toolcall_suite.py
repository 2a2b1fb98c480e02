"""The bundled tool-calling suite: data file, gold answers, split, prompt, schema validator."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest

from records import TaskInstance
from rewards.toolrl import answer_calls, score
from tasks.toolcall.generate import CATEGORIES, generate, render
from tasks.toolcall.prompt import build_messages
from tasks.toolcall.schema import validate, validate_call
from tasks.toolcall.suite import DATA_FILE, ToolCallSuite, load
from tasks.toolcall.tools import GENERAL, TOOLS, related

SUITE = ToolCallSuite()
ALL = SUITE.instances()


def gold_calls(inst: TaskInstance) -> list[dict[str, Any]]:
    return answer_calls(inst.extra["answer"]) or []


def offered(inst: TaskInstance) -> list[str]:
    return [t["name"] for t in inst.extra["tools"]]


def test_data_file_is_what_the_generator_makes() -> None:
    assert DATA_FILE.read_text(encoding="utf-8") == render(generate())


def test_size_and_coverage() -> None:
    assert len(ALL) >= 300
    tools = {c["name"] for i in ALL for c in gold_calls(i)}
    assert len(tools) >= 25
    assert len(TOOLS) >= 25
    cats = Counter((i.extra["category"], i.extra["split"]) for i in ALL)
    for cat in CATEGORIES:
        assert cats[(cat, "train")] > 0 and cats[(cat, "test")] > 0, cat
        total = cats[(cat, "train")] + cats[(cat, "test")]
        assert abs(cats[(cat, "test")] - 0.2 * total) <= 1, cat  # stratified 80/20
    subtypes = Counter(i.extra.get("subtype") for i in ALL if i.extra["category"] == "no_call")
    assert set(subtypes) == {"chat", "no_tool", "missing_arg"}


def test_ids_and_fields() -> None:
    ids = [i.instance_id for i in ALL]
    assert len(set(ids)) == len(ids)
    assert len({i.problem_statement for i in ALL}) == len(ALL)
    for i in ALL:
        assert re.fullmatch(r"toolcall__[a-z_]+-\d+", i.instance_id), i.instance_id
        assert i.suite == "toolcall"
        assert i.extra["split"] in ("train", "test")
        assert i.extra["category"] in CATEGORIES
        assert len(offered(i)) == len(set(offered(i))) >= 2


@pytest.mark.parametrize("inst", ALL, ids=lambda i: i.instance_id)
def test_gold_answer(inst: TaskInstance) -> None:
    answer, cat = inst.extra["answer"], inst.extra["category"]
    s = score(answer, answer)
    calls = gold_calls(inst)
    assert s.format == 1.0
    if cat == "no_call":
        assert calls == [] and "<response>" in answer and "<tool_call>" not in answer
        assert s.correctness == 0.0
        return
    assert s.correctness == 3.0
    assert "<response>" not in answer
    for c in calls:
        assert validate_call(c, inst.extra["tools"]) == [], c
    nested = any(isinstance(v, (list, dict)) for v in calls[0]["parameters"].values())
    if cat == "multiple":
        assert 2 <= len(calls) <= 3
    else:
        assert len(calls) == 1 and nested == (cat == "nested")
        assert inst.instance_id.startswith(f"toolcall__{calls[0]['name']}-")


def _leaves(value: Any, schema: dict[str, Any]) -> list[Any]:
    """Non-enum strings and numbers of a value: what the user must have said literally."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return [x for k, v in value.items() for x in _leaves(v, props[k])]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v, schema["items"])]
    if isinstance(value, bool) or "enum" in schema:
        return []
    return [value]


def test_values_come_from_the_request() -> None:
    for inst in ALL:
        tools = {t["name"]: t for t in inst.extra["tools"]}
        for c in gold_calls(inst):
            for leaf in _leaves(c["parameters"], tools[c["name"]]["parameters"]):
                assert str(leaf).lower() in inst.problem_statement.lower(), (inst.instance_id, leaf)


def test_distractors_never_overlap_the_gold_tools() -> None:
    for inst in ALL:
        names = offered(inst)
        sub = inst.extra.get("subtype")
        if sub == "no_tool":
            assert not set(names) & (related(inst.extra["tool"]) | GENERAL), inst.instance_id
            continue
        gold = {c["name"] for c in gold_calls(inst)} | ({inst.extra["tool"]} if sub == "missing_arg" else set())
        assert gold <= set(names)
        for d in set(names) - gold:
            assert not any(d in related(g) for g in gold), (inst.instance_id, d)
        assert 2 <= len(set(names) - gold) <= 3


def test_splits() -> None:
    train, test = SUITE.instances("train"), SUITE.instances("test")
    tr, te = {i.instance_id for i in train}, {i.instance_id for i in test}
    assert not tr & te
    assert tr | te == {i.instance_id for i in ALL}
    assert all(i.extra["split"] == "train" for i in train) and all(i.extra["split"] == "test" for i in test)
    with pytest.raises(ValueError, match="valid splits: train, test"):
        SUITE.instances("dev")
    assert SUITE.name == "toolcall" and SUITE.kind == "toolcall"
    assert [i.instance_id for i in SUITE.select(limit=3, split="test")] == [i.instance_id for i in test[:3]]


def test_loaded_once_and_copies_returned() -> None:
    load.cache_clear()
    a = SUITE.instances()
    a[0].extra["answer"] = "mutated"
    b = SUITE.instances("test")
    assert load.cache_info().misses == 1 and load.cache_info().hits >= 1
    assert SUITE.instances()[0].extra["answer"] != "mutated"
    assert len(b) < len(a)


def test_prompt() -> None:
    lengths = []
    for inst in ALL:
        system, user = build_messages(inst)
        assert (system.role, user.role) == ("system", "user")
        assert user.content == inst.problem_statement
        for t in inst.extra["tools"]:
            assert json.dumps(t, ensure_ascii=False) in system.content
        lengths.append(len(system.content))
    system = build_messages(ALL[0])[0].content
    for marker in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<response>", "</response>",
                   '{"name": "tool name", "parameters": {"argument": value}}'):
        assert marker in system
    assert max(lengths) < 5000  # compact enough for tiny models


def test_tool_schemas_are_well_formed() -> None:
    types: set[str] = set()

    def walk(schema: dict[str, Any]) -> None:
        types.add(schema["type"] + ("+enum" if "enum" in schema else ""))
        assert schema.get("description"), schema
        if schema["type"] == "object":
            assert set(schema["required"]) <= set(schema["properties"])
            for sub in schema["properties"].values():
                walk(sub)
        if schema["type"] == "array":
            walk(schema["items"])

    assert len({t["name"] for t in TOOLS}) == len(TOOLS)
    for t in TOOLS:
        assert set(t) == {"name", "description", "parameters"}
        p = t["parameters"]
        assert p["type"] == "object" and set(p["required"]) <= set(p["properties"])
        for sub in p["properties"].values():
            walk(sub)
    assert {"string", "string+enum", "integer", "number", "boolean", "array", "object"} <= types


OBJ = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5},
                                        "x": {"type": "number"},
                                        "e": {"type": "string", "enum": ["a", "b"]},
                                        "d": {"type": "string", "pattern": r"^\d{4}$"},
                                        "l": {"type": "array", "minItems": 1,
                                              "items": {"type": "object", "properties": {"k": {"type": "boolean"}},
                                                        "required": ["k"], "additionalProperties": False}}},
       "required": ["n"], "additionalProperties": False}


@pytest.mark.parametrize("value,problems", [
    ({"n": 3}, 0),
    ({"n": 3, "x": 1, "e": "a", "d": "2025", "l": [{"k": True}]}, 0),
    ({"n": 3, "x": 1.5}, 0),
    ({}, 1),                        # missing required
    ({"n": 3.0}, 1),                # float is not an integer
    ({"n": True}, 1),               # bool is not an integer
    ({"n": 3, "x": False}, 1),      # bool is not a number
    ({"n": 0}, 1),                  # below minimum
    ({"n": 6}, 1),                  # above maximum
    ({"n": 3, "e": "c"}, 1),        # not in enum
    ({"n": 3, "d": "25"}, 1),       # pattern
    ({"n": 3, "z": 1}, 1),          # additional property
    ({"n": 3, "l": []}, 1),         # minItems
    ({"n": 3, "l": [{"k": 1}]}, 1),  # nested type
    ({"n": 3, "l": [{}, {"k": True, "j": 1}]}, 2),  # nested required and additional
    ([1], 1),                       # not an object
])
def test_validator(value: Any, problems: int) -> None:
    assert len(validate(value, OBJ)) == problems


def test_validator_agrees_with_jsonschema_on_gold_calls() -> None:
    import jsonschema  # a test dependency: the reference validator
    checkers = {t["name"]: jsonschema.Draft202012Validator(t["parameters"]) for t in TOOLS}
    for inst in ALL:
        for c in gold_calls(inst):
            checkers[c["name"]].validate(c["parameters"])
    assert not checkers["set_timer"].is_valid({"minutes": True})  # the checker is not vacuous
    assert validate_call({"name": "nope", "parameters": {}}, TOOLS) == ["no tool named 'nope'"]
