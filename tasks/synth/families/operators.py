"""Operator and constant families: flip an operator, swap the operands, change a constant."""

from __future__ import annotations

from typing import Iterator

from tree_sitter import Node

from tasks.synth.families.base import Site, own_nodes

FLIP = {
    "+": "-", "-": "+", "*": "/", "/": "*", "//": "/", "%": "//", "**": "*", "<<": ">>", ">>": "<<",
    "&": "|", "|": "&", "^": "&",
    "<": ">=", ">=": "<", ">": "<=", "<=": ">", "==": "!=", "!=": "==",
    "in": "not in", "not in": "in", "is": "is not", "is not": "is", "and": "or", "or": "and",
    "+=": "-=", "-=": "+=", "*=": "/=", "/=": "*=", "|=": "&=", "&=": "|=",
}
"""Each operator and the one it is flipped to (comparisons to their negation, arithmetic to its inverse)."""
OPERATOR_NODES = ("binary_operator", "comparison_operator", "boolean_operator", "augmented_assignment")
NON_COMMUTATIVE = {"-", "/", "//", "%", "**", "<<", ">>", "+", "<", "<=", ">", ">=", "in", "not in"}
"""Operators whose operands, swapped, usually change the result (`+` joins strings and lists)."""


def _operators(node: Node) -> list[Node]:
    """The operator tokens of an operator node (a comparison chain has several)."""
    if node.type == "augmented_assignment":
        op = node.child_by_field_name("operator")
        return [op] if op is not None else []
    return [c for c in node.children if not c.is_named or c.type in ("not in", "is not")]


def flip_operator(entity: Node, source: bytes) -> Iterator[Site]:
    for node in own_nodes(entity):
        if node.type in OPERATOR_NODES:
            for op in _operators(node):
                text = op.text.decode()
                if " ".join(text.split()) in FLIP:
                    yield op.start_byte, op.end_byte, FLIP[" ".join(text.split())].encode()


def swap_operands(entity: Node, source: bytes) -> Iterator[Site]:
    for node in own_nodes(entity):
        if node.type not in ("binary_operator", "comparison_operator"):
            continue
        ops = _operators(node)
        if len(ops) != 1 or " ".join(ops[0].text.decode().split()) not in NON_COMMUTATIVE:
            continue
        left, right = node.named_children[0], node.named_children[-1]
        if left.text == right.text:
            continue
        middle = source[left.end_byte:right.start_byte]
        yield node.start_byte, node.end_byte, right.text + middle + left.text


def change_constant(entity: Node, source: bytes) -> Iterator[Site]:
    """An integer literal n becomes n + 1; True and False trade places."""
    for node in own_nodes(entity):
        if node.type == "integer":
            try:
                value = int(node.text.decode().replace("_", ""), 0)
            except ValueError:
                continue
            yield node.start_byte, node.end_byte, str(value + 1).encode()
        elif node.type in ("true", "false"):
            yield node.start_byte, node.end_byte, b"False" if node.type == "true" else b"True"
