"""Procedural bug families: each finds the places in one function or class where its kind of bug can be
injected (`sites`), and `candidates` turns them into concrete mutations of a file.

Written for Evolve on tree-sitter (byte-exact edits, so formatting and comments survive; one parse per file
enumerates every site deterministically, which makes sampling reproducible and synthesis resumable). The
families are SWE-smith's: flip an operator, swap operands, change a constant, invert if/else, remove a
conditional / loop / assignment, shuffle lines, remove a base class or a method.
"""

from __future__ import annotations

from tasks.synth.families.base import Entity, Mutation, entities, parse
from tasks.synth.families.classes import remove_base, remove_method
from tasks.synth.families.control import invert_if, remove_assignment, remove_conditional, remove_loop, shuffle_lines
from tasks.synth.families.operators import change_constant, flip_operator, swap_operands

FAMILIES = {
    "flip_operator": flip_operator,
    "swap_operands": swap_operands,
    "change_constant": change_constant,
    "invert_if": invert_if,
    "remove_conditional": remove_conditional,
    "remove_loop": remove_loop,
    "remove_assignment": remove_assignment,
    "shuffle_lines": shuffle_lines,
    "remove_base": remove_base,
    "remove_method": remove_method,
}
"""Family name -> its site finder. Class families (`remove_base`, `remove_method`) act on classes, the others
on functions."""
CLASS_FAMILIES = {"remove_base", "remove_method"}

__all__ = ["CLASS_FAMILIES", "FAMILIES", "Entity", "Mutation", "candidates", "entities", "parse"]


def candidates(path: str, source: bytes, families: list[str] | None = None, check: bool = False) -> list[Mutation]:
    """Every mutation the families find in one file, in a stable order (file order, then family, then site).
    With ``check``, mutations that do not compile or change nothing are left out (compiling is the slow part:
    samplers check only the mutations they pick, with `Mutation.valid`)."""
    wanted = families or list(FAMILIES)
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown bug family {unknown[0]!r}; the families are: {', '.join(FAMILIES)}")
    tree = parse(source)
    out: list[Mutation] = []
    for ent in entities(tree.root_node, source, path):
        for fam in wanted:
            if (fam in CLASS_FAMILIES) != (ent.kind == "class"):
                continue
            for n, (start, end, text) in enumerate(FAMILIES[fam](ent.node, source)):
                m = Mutation(family=fam, entity=ent, site=n, start=start, end=end, replacement=text)
                if not check or m.valid(source):
                    out.append(m)
    return out
