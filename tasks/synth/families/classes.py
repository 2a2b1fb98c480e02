"""Class families: remove a base class, remove a method."""

from __future__ import annotations

from typing import Iterator

from tree_sitter import Node

from tasks.synth.families.base import Site, remove_statement


def remove_base(entity: Node, source: bytes) -> Iterator[Site]:
    """One base class leaves the class's bases (keywords such as `metaclass=` stay); with no base left the
    parentheses go too."""
    args = entity.child_by_field_name("superclasses")
    if args is None:
        return
    items = [c for c in args.named_children if c.type != "comment"]
    bases = [c for c in items if c.type not in ("keyword_argument", "dictionary_splat", "list_splat")]
    for base in bases:
        rest = [c.text for c in items if c != base]
        if base.text in (b"object",) and len(bases) == 1 and not rest:
            continue  # `class A(object)` and `class A` are the same class
        text = b"(" + b", ".join(rest) + b")" if rest else b""
        yield args.start_byte, args.end_byte, text


def remove_method(entity: Node, source: bytes) -> Iterator[Site]:
    """A method (with its decorators) disappears from the class body."""
    body = entity.child_by_field_name("body")
    if body is None:
        return
    for child in body.named_children:
        node = child.child_by_field_name("definition") if child.type == "decorated_definition" else child
        if node is not None and node.type == "function_definition":
            site = remove_statement(child, source)
            if site is not None:
                yield site
