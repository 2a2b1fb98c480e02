"""What the bug families share: parsing, the functions and classes of a file, and one mutation of it."""

from __future__ import annotations

import ast
import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import tree_sitter_python
from tree_sitter import Language, Node, Parser, Tree

LANGUAGE = Language(tree_sitter_python.language())
SCOPES = ("function_definition", "class_definition")
"""Nodes that open a new entity: the sites of an entity never reach into a nested one."""

Site = tuple[int, int, bytes]
"""A byte span of the file and its replacement."""


def parse(source: bytes) -> Tree:
    return Parser(LANGUAGE).parse(source)


@dataclass(frozen=True)
class Entity:
    """A function (or method) or a class of one file."""

    kind: str
    """`function` or `class`."""
    name: str
    """Qualified name within the file: `Class.method`, `outer.inner`, `function`."""
    file: str
    """Path of the file, relative to the repository root."""
    start_line: int
    """1-based first line of the definition (its decorators included)."""
    end_line: int
    docstring: str
    """The definition's docstring (empty when it has none)."""
    node: Node = field(compare=False, repr=False)
    """The `function_definition` / `class_definition` node."""


def _docstring(node: Node) -> str:
    body = node.child_by_field_name("body")
    first = body.named_children[0] if body is not None and body.named_children else None
    if first is not None and first.type == "expression_statement" and first.named_children \
            and first.named_children[0].type == "string":
        try:
            value = ast.literal_eval(first.named_children[0].text.decode())
            return value.strip() if isinstance(value, str) else ""
        except (ValueError, SyntaxError):
            return ""
    return ""


def entities(root: Node, source: bytes, path: str, prefix: str = "") -> Iterator[Entity]:
    """Every function and class under ``root``, outer ones first, with qualified names."""
    for child in root.named_children:
        node = child
        if child.type == "decorated_definition":
            node = child.child_by_field_name("definition") or child
        if node.type in SCOPES:
            name_node = node.child_by_field_name("name")
            name = prefix + (name_node.text.decode() if name_node is not None else "?")
            kind = "class" if node.type == "class_definition" else "function"
            yield Entity(kind=kind, name=name, file=path, start_line=child.start_point[0] + 1,
                         end_line=child.end_point[0] + 1, docstring=_docstring(node), node=node)
            body = node.child_by_field_name("body")
            if body is not None:
                yield from entities(body, source, path, name + ".")
        elif child.type in ("if_statement", "try_statement", "with_statement", "block", "else_clause",
                            "except_clause", "finally_clause", "elif_clause"):
            yield from entities(child, source, path, prefix)  # definitions under `if TYPE_CHECKING:` etc.


def own_nodes(entity: Node) -> Iterator[Node]:
    """Nodes of an entity's body, not descending into nested functions or classes (they are entities of
    their own), in source order."""
    body = entity.child_by_field_name("body")
    if body is None:
        return
    stack = [body]
    while stack:
        node = stack.pop()
        yield node
        kids = [c for c in node.children if c.type not in SCOPES and not
                (c.type == "decorated_definition")]
        stack.extend(reversed(kids))


def line_span(node: Node, source: bytes) -> tuple[int, int] | None:
    """Bytes of the whole lines a statement occupies (its indentation and newline included), or None when
    it shares a line with other code (`a = 1; b = 2`)."""
    start = source.rfind(b"\n", 0, node.start_byte) + 1
    end = source.find(b"\n", node.end_byte)
    end = len(source) if end < 0 else end + 1
    before, after = source[start:node.start_byte], source[node.end_byte:end]
    if before.strip() or (after.strip() and not after.strip().startswith(b"#")):
        return None
    return start, end


def remove_statement(node: Node, source: bytes) -> Site | None:
    """Delete a statement; a block it leaves empty gets `pass` instead."""
    parent = node.parent
    siblings = [c for c in parent.named_children if c.type != "comment"] if parent is not None else []
    if siblings == [node]:
        return node.start_byte, node.end_byte, b"pass"
    span = line_span(node, source)
    if span is None:
        return None
    return span[0], span[1], b""


def is_docstring(node: Node) -> bool:
    parent = node.parent
    return (node.type == "expression_statement" and parent is not None and parent.type == "block"
            and parent.named_children and parent.named_children[0] == node and bool(node.named_children)
            and node.named_children[0].type == "string")


@dataclass(frozen=True)
class Mutation:
    """One bug: a span of a file replaced, found by a family at a site of an entity."""

    family: str
    entity: Entity
    site: int
    """Index of the site among the family's sites in this entity."""
    start: int
    end: int
    replacement: bytes

    def apply(self, source: bytes) -> bytes:
        return source[:self.start] + self.replacement + source[self.end:]

    def valid(self, source: bytes) -> bool:
        """The mutated file compiles and differs from the original (beyond whitespace)."""
        new = self.apply(source)
        if new.split() == source.split():
            return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(new, self.entity.file, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return False
        return True

    @property
    def key(self) -> str:
        """A stable id of the bug (the same file, entity, family, site and replacement give the same key)."""
        h = hashlib.sha1(f"{self.entity.file}\0{self.entity.name}\0{self.family}\0{self.site}\0{self.start}\0"
                         .encode() + self.replacement)
        return h.hexdigest()[:10]
