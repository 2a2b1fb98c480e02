"""Which bugs to try, in which order: only in code the tests run, balanced over families and functions."""

from __future__ import annotations

import random
from collections import defaultdict

from tasks.synth.coverage import Coverage
from tasks.synth.families import Mutation, candidates, entities, parse


def covered_entity(m: Mutation, covered: set[tuple[str, int]], methods: dict[str, set[str]]) -> bool:
    """The tests ran the mutated function (a class counts as run when one of its methods ran)."""
    ent = m.entity
    if ent.kind == "function":
        return (ent.file, ent.start_line) in covered
    return bool(methods.get(f"{ent.file}:{ent.name}"))


def _covered_methods(muts: list[Mutation], covered: set[tuple[str, int]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for m in muts:
        ent = m.entity
        if ent.kind == "function" and "." in ent.name and (ent.file, ent.start_line) in covered:
            out[f"{ent.file}:{ent.name.rsplit('.', 1)[0]}"].add(ent.name)
    return out


def order(sources: dict[str, bytes], coverage: Coverage | None, families: list[str],
          seed: int = 0, per_entity: int = 2) -> list[Mutation]:
    """Every mutation of the files (``{path: content}``) in the tests' reach (all of them when ``coverage`` is
    None): in a function or class the tests ran, changing a line that ran (a change to lines that never run
    cannot make a test fail). Ordered so that families take turns and, within a family, functions do: the first
    bugs tried spread over every family and as many functions as possible. At most ``per_entity`` bugs of one
    family per function or class (more of the same place teach little)."""
    muts: list[Mutation] = []
    for path, content in sorted(sources.items()):
        muts += candidates(path, content, families)
    if coverage is not None:
        covered = coverage.functions()
        methods = _covered_methods(_all_functions(sources), covered)
        muts = [m for m in muts if covered_entity(m, covered, methods)
                and coverage.ran(m, sources[m.entity.file])]
    rng = random.Random(seed)
    by_family: dict[str, list[Mutation]] = defaultdict(list)
    for m in muts:
        by_family[m.family].append(m)
    queues = []
    for fam in families:
        items = by_family.get(fam, [])
        rng.shuffle(items)
        seen: dict[tuple[str, str], int] = defaultdict(int)
        ranked = []
        for m in items:
            k = (m.entity.file, m.entity.name)
            if seen[k] < per_entity:
                ranked.append((seen[k], len(ranked), m))
                seen[k] += 1
        queues.append([m for _, _, m in sorted(ranked, key=lambda t: (t[0], t[1]))])
    out = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def _all_functions(sources: dict[str, bytes]) -> list[Mutation]:
    """One pseudo-mutation per function (its entity is what counts), for the class coverage map."""
    out = []
    for path, content in sources.items():
        for ent in entities(parse(content).root_node, content, path):
            if ent.kind == "function":
                out.append(Mutation(family="-", entity=ent, site=0, start=0, end=0, replacement=b""))
    return out
