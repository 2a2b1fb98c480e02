"""Control-flow families: invert if/else, remove a conditional, a loop or an assignment, shuffle lines."""

from __future__ import annotations

from typing import Iterator

from tree_sitter import Node

from tasks.synth.families.base import Site, is_docstring, line_span, own_nodes, remove_statement

SIMPLE = {"expression_statement", "return_statement", "raise_statement", "assert_statement",
          "delete_statement", "pass_statement", "break_statement", "continue_statement", "global_statement",
          "nonlocal_statement", "import_statement", "import_from_statement"}
"""Statements that fit one logical line (the ones `shuffle_lines` moves)."""


def invert_if(entity: Node, source: bytes) -> Iterator[Site]:
    """`if c: A else: B` becomes `if c: B else: A` (only for an if with one else and no elif)."""
    for node in own_nodes(entity):
        if node.type != "if_statement":
            continue
        elses = [c for c in node.children if c.type in ("else_clause", "elif_clause")]
        if len(elses) != 1 or elses[0].type != "else_clause":
            continue
        body, other = node.child_by_field_name("consequence"), elses[0].child_by_field_name("body")
        if body is None or other is None or body.text == other.text:
            continue
        if body.start_point[0] == node.start_point[0] or other.start_point[0] == elses[0].start_point[0]:
            continue  # `if c: x` on one line: the bodies' indentation differs
        middle = source[body.end_byte:other.start_byte]
        yield body.start_byte, other.end_byte, other.text + middle + body.text


def _removals(entity: Node, source: bytes, types: tuple[str, ...], keep=lambda n: True) -> Iterator[Site]:
    for node in own_nodes(entity):
        if node.type in types and keep(node):
            site = remove_statement(node, source)
            if site is not None:
                yield site


def remove_conditional(entity: Node, source: bytes) -> Iterator[Site]:
    """Drop an `if` statement that has no `else`/`elif` (a guard, an early return, a special case)."""
    yield from _removals(entity, source, ("if_statement",),
                         lambda n: not any(c.type in ("else_clause", "elif_clause") for c in n.children))


def remove_loop(entity: Node, source: bytes) -> Iterator[Site]:
    yield from _removals(entity, source, ("for_statement", "while_statement"))


def remove_assignment(entity: Node, source: bytes) -> Iterator[Site]:
    """Drop an assignment statement (`x = ...`, `x += ...`); annotated declarations without a value are kept."""
    def is_assignment(node: Node) -> bool:
        kids = node.named_children
        return (len(kids) == 1 and kids[0].type in ("assignment", "augmented_assignment")
                and (kids[0].type == "augmented_assignment" or kids[0].child_by_field_name("right") is not None))
    yield from _removals(entity, source, ("expression_statement",), is_assignment)


def shuffle_lines(entity: Node, source: bytes) -> Iterator[Site]:
    """Two neighbouring one-line statements of a block trade places (the docstring stays first)."""
    for node in own_nodes(entity):
        if node.type != "block":
            continue
        stmts = [c for c in node.named_children if c.type != "comment"]
        for a, b in zip(stmts, stmts[1:]):
            if a.type not in SIMPLE or b.type not in SIMPLE or is_docstring(a) or a.text == b.text:
                continue
            if a.start_point[0] != a.end_point[0] or b.start_point[0] != b.end_point[0]:
                continue
            if line_span(a, source) is None or line_span(b, source) is None:
                continue
            middle = source[a.end_byte:b.start_byte]
            yield a.start_byte, b.end_byte, b.text + middle + a.text
