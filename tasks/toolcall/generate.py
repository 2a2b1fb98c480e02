"""Deterministic generator of the bundled tool-calling suite (`data/instances.jsonl`).

Run `python -m tasks.toolcall.generate` to rewrite the data file, `--check` to verify it is current.
The suite is written for this project (no dataset copied): every request comes from the templates in
`templates.py`, drawn with a fixed seed, so the same code always produces the same file.

Categories (stored in `extra["category"]`):
- `single`: one call whose parameters are scalars (strings, ints, floats, booleans, enums).
- `nested`: one call with an array or object parameter.
- `multiple`: two or three calls in one turn (the same tool twice or different tools), in request order.
- `no_call`: the answer is a `<response>`: small talk (`subtype` chat), no offered tool fits (`no_tool`),
  or a required argument is missing and the assistant asks for it (`missing_arg`); for the last two
  `extra["tool"]` names the tool the request is about (withheld for `no_tool`, offered for `missing_arg`).

Each instance offers the tools it needs plus 2-3 distractors that never overlap in job with the gold
tools (see `tools.GROUPS`), shuffled. The split is 80/20 train/test, stratified by category, fixed by the seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from random import Random
from typing import Any

from records import TaskInstance
from tasks.toolcall.suite import DATA_FILE
from tasks.toolcall.templates import CHAT, MISSING, PURPOSE, SINGLE, Params
from tasks.toolcall.tools import BY_NAME, GENERAL, TOOLS, related

log = logging.getLogger(__name__)

SEED = 20250417
PER_TOOL = 6
N_MULTIPLE = 70
N_NO_TOOL = 27
N_MISSING = 27
TEST_FRACTION = 0.2
CATEGORIES = ("single", "nested", "multiple", "no_call")


def call_answer(think: str, calls: list[tuple[str, Params]]) -> str:
    """Ground truth in ToolRL's tagged form: think, then one JSON call per line."""
    lines = "\n".join(json.dumps({"name": n, "parameters": p}, ensure_ascii=False) for n, p in calls)
    return f"<think>{think}</think>\n<tool_call>\n{lines}\n</tool_call>"


def response_answer(think: str, text: str) -> str:
    """Ground truth in ToolRL's tagged form: think, then a plain response."""
    return f"<think>{think}</think>\n<response>{text}</response>"


def _lc(q: str) -> str:
    """Lower-case a request's first letter to continue a sentence (not for `I ...`)."""
    return q if q.startswith(("I ", "I'")) else q[:1].lower() + q[1:]


def _end(q: str) -> str:
    return q if q.endswith((".", "?", "!")) else q + "."


def _join(queries: list[str], r: Random) -> str:
    qs = [_end(q) for q in queries]
    if len(qs) == 2:
        a, b = qs
        return r.choice([f"{a} Also, {_lc(b)}", f"{a} And {_lc(b)}", f"{a} After that, {_lc(b)}",
                         f"First, {_lc(a)} Then {_lc(b)}", f"{a} Then {_lc(b)}"])
    a, b, c = qs
    return r.choice([f"{a} Also, {_lc(b)} And {_lc(c)}", f"First, {_lc(a)} Then {_lc(b)} Finally, {_lc(c)}"])


def _tools(gold: list[str], r: Random, exclude: set[str]) -> list[dict[str, Any]]:
    """Gold tools plus 2-3 distractors from outside `exclude`, shuffled."""
    candidates = sorted(t["name"] for t in TOOLS if t["name"] not in exclude)
    names = list(dict.fromkeys(gold)) + r.sample(candidates, r.randint(2, 3))
    r.shuffle(names)
    return [BY_NAME[n] for n in names]


def _excluded(gold: list[str]) -> set[str]:
    out: set[str] = set()
    for g in gold:
        out |= related(g)
    return out


def _distinct(name: str, params: list[Params]) -> bool:
    """Calls of the same tool differ in the values of its required parameters."""
    required = BY_NAME[name]["parameters"]["required"]
    keys = {json.dumps([p.get(k) for k in required], sort_keys=True) for p in params}
    return len(keys) == len(params)


def _think_single(name: str, r: Random) -> str:
    return r.choice([f"The user wants to {PURPOSE[name]}; {name} does that, using the values from the request.",
                     f"{name} matches this request, so I call it with the parameters the user gave.",
                     f"I need to {PURPOSE[name]}; the {name} tool fits."])


class _Builder:
    """Collects instances, numbering ids per tool or category and keeping requests unique."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.counts: dict[str, int] = {}

    def fresh(self, query: str) -> bool:
        return query not in self.seen

    def add(self, key: str, query: str, tools: list[dict[str, Any]], answer: str, category: str,
            **extra: Any) -> None:
        self.seen.add(query)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.rows.append({"instance_id": f"toolcall__{key}-{self.counts[key]}", "problem_statement": query,
                          "extra": {"tools": tools, "answer": answer, "category": category, **extra}})


def _unique(gen: Any, r: Random, b: _Builder, tries: int = 50) -> Any:
    """Draw from `gen` until its request is new (the draws stay deterministic)."""
    for _ in range(tries):
        out = gen(r)
        if b.fresh(out[0]):
            return out
    raise RuntimeError("templates too narrow: could not draw a new request")


def _single_instances(r: Random, b: _Builder) -> None:
    for name in sorted(SINGLE):
        for _ in range(PER_TOOL):
            query, params = _unique(SINGLE[name], r, b)
            nested = any(isinstance(v, (list, dict)) for v in params.values())
            b.add(name, query, _tools([name], r, related(name)), call_answer(_think_single(name, r), [(name, params)]),
                  "nested" if nested else "single")


def _multiple_instances(r: Random, b: _Builder) -> None:
    names = sorted(SINGLE)
    made = 0
    while made < N_MULTIPLE:
        if r.random() < 0.3:
            name = r.choice(names)
            gold = [name, name]
        else:
            gold = r.sample(names, r.choice([2, 2, 3]))
        drawn = [SINGLE[n](r) for n in gold]
        if len(set(gold)) < len(gold) and not _distinct(gold[0], [p for _, p in drawn]):
            continue
        query = _join([q for q, _ in drawn], r)
        if not b.fresh(query):
            continue
        purposes = "; ".join(PURPOSE[n] for n in gold)
        think = f"The user asks for {len(gold)} things: {purposes}. I make one call for each, in order."
        calls = [(n, p) for n, (_, p) in zip(gold, drawn)]
        b.add("multiple", query, _tools(gold, r, _excluded(gold)), call_answer(think, calls), "multiple")
        made += 1


def _no_call_instances(r: Random, b: _Builder) -> None:
    for query, reply in CHAT:
        think = r.choice(["This is small talk; no tool is needed.", "No tool is needed here, I just reply.",
                          "The user is chatting, so I answer directly."])
        b.add("no_call", query, _tools([], r, set()), response_answer(think, reply), "no_call", subtype="chat")
    names = sorted(SINGLE)
    for _ in range(N_NO_TOOL):
        name = r.choice(names)
        query, _ = _unique(SINGLE[name], r, b)
        think = f"None of the available tools can {PURPOSE[name]}, so I tell the user."
        reply = r.choice([f"Sorry, I can't {PURPOSE[name]} with the tools I have.",
                          f"I'm afraid I don't have a tool to {PURPOSE[name]} right now."])
        b.add("no_call", query, _tools([], r, related(name) | GENERAL), response_answer(think, reply), "no_call",
              subtype="no_tool", tool=name)
    missing = sorted(MISSING)
    made = 0
    while made < N_MISSING:
        name = r.choice(missing)
        query, question = MISSING[name](r)
        if not b.fresh(query):
            continue
        made += 1
        think = f"{name} fits, but the user has not given everything it requires, so I ask for it."
        b.add("no_call", query, _tools([name], r, related(name)), response_answer(think, question), "no_call",
              subtype="missing_arg", tool=name)


def _split(rows: list[dict[str, Any]], r: Random) -> None:
    """Mark 20% of each category `test` and the rest `train` (stratified, fixed by the seed)."""
    for cat in CATEGORIES:
        idx = [k for k, row in enumerate(rows) if row["extra"]["category"] == cat]
        r.shuffle(idx)
        n_test = round(len(idx) * TEST_FRACTION)
        for pos, k in enumerate(idx):
            rows[k]["extra"]["split"] = "test" if pos < n_test else "train"


def generate(seed: int = SEED) -> list[TaskInstance]:
    """Every instance of the suite, in a fixed order."""
    r = Random(seed)
    b = _Builder()
    _single_instances(r, b)
    _multiple_instances(r, b)
    _no_call_instances(r, b)
    _split(b.rows, Random(seed + 1))
    return [TaskInstance(suite="toolcall", **row) for row in b.rows]


def render(instances: list[TaskInstance]) -> str:
    """The JSONL text of the data file."""
    return "".join(json.dumps(i.model_dump(mode="json", exclude_defaults=True), ensure_ascii=False) + "\n"
                   for i in instances)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the data file is not what the generator makes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    text = render(generate())
    if args.check:
        ok = DATA_FILE.exists() and DATA_FILE.read_text(encoding="utf-8") == text
        log.info("%s is %s", DATA_FILE, "current" if ok else "stale: run python -m tasks.toolcall.generate")
        return 0 if ok else 1
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(text, encoding="utf-8")
    log.info("wrote %d instances to %s", text.count("\n"), DATA_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
