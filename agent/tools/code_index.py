"""An in-memory, incrementally updated index of a Python repository, built on tree-sitter.

The agent's code-search tool core. The sandbox glue fetches the repository's Python files
(path -> bytes) and hands them to `CodeIndex.update`; only files whose content changed are
re-parsed (parse results are cached by content hash, so identical files — every empty
`__init__.py` — and reverted files are parsed once). Queries: `definitions`, `find_definition`,
`find_references`, `outline`, `repo_map`; `render_definitions` / `render_references` turn results
into the compact text the agent sees.

tree-sitter is error tolerant: a file with syntax errors still yields what parses. Non-UTF-8 bytes
are decoded with `errors="replace"`; files over `max_file_bytes` are skipped and reported.
References are syntactic: every identifier (names, `obj.attr` attributes, imports; not strings or
comments) spelled like the queried name, minus the definition sites themselves. No type inference.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import tree_sitter_python
from tree_sitter import Language, Node, Parser, Query, QueryCursor

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1_000_000
"""Files larger than this are skipped (generated code, vendored bundles, data dumps)."""

_LANGUAGE = Language(tree_sitter_python.language())

_REF_QUERY_SRC = """
(identifier) @id
(call function: (identifier) @call)
(call function: (attribute attribute: (identifier) @acall))
(attribute attribute: (identifier) @attr)
[(import_statement) (import_from_statement) (future_import_statement)] @imp
"""
_ref_query: Query | None = None

# Statements whose nested blocks still belong to the enclosing scope (module or class body).
_TRANSPARENT = frozenset(
    {
        "block",
        "if_statement",
        "elif_clause",
        "else_clause",
        "try_statement",
        "except_clause",
        "except_group_clause",
        "finally_clause",
        "with_statement",
        "for_statement",
        "while_statement",
        "match_statement",
        "case_clause",
        "ERROR",
    }
)
_PATTERNS = frozenset({"pattern_list", "tuple_pattern", "list_pattern", "expression_list", "tuple", "list"})
_PROPERTY_DECORATORS = frozenset(
    {"property", "cached_property", "functools.cached_property", "abc.abstractproperty", "abstractproperty"}
)
_CONSTANT_RE = re.compile(r"^_*[A-Z][A-Z0-9_]*$")
_TEST_PATH_RE = re.compile(r"(^|/)(tests?|testing)/|(^|/)test_[^/]*$|_tests?\.pyi?$|(^|/)conftest\.py$")
_STRING_PREFIX_RE = re.compile(r"^[rRbBuUfFtT]*('''|\"\"\"|'|\")")

_MEMBER_KINDS = frozenset({"method", "property", "attribute"})
_ATTRIBUTE_REFS = frozenset({"attribute", "attribute_call"})

KIND_ORDER = ("class", "function", "method", "property", "constant", "variable", "attribute")
"""Every `Definition.kind`: module-level assignments are `constant` (ALL_CAPS) or `variable`;
class-level assignments (dataclass / pydantic fields, class constants) are `attribute`."""


@dataclass(frozen=True, slots=True)
class Definition:
    """One definition site: a class, function, method, property or assignment."""

    name: str
    """The bare name: `method`."""
    qualname: str
    """Dotted name inside its file: `Class.method`, `outer.inner` for a nested function."""
    kind: str
    """One of `KIND_ORDER`."""
    path: str
    """The file, as given to `CodeIndex.update`."""
    start_line: int
    """First line (1-based), including decorators."""
    end_line: int
    """Last line (1-based), inclusive."""
    signature: str = ""
    """The header on one line, `def f(a, b=1) -> int` / `class C(Base)`, or the assignment's line."""
    docstring: str = ""
    """First line of the docstring, if any."""
    module: str = ""
    """Dotted module derived from the path: `pkg/mod.py` -> `pkg.mod` (a leading `src/` dropped)."""
    decorators: tuple[str, ...] = ()
    """Decorator expressions without `@`, e.g. `("property",)`."""
    is_async: bool = False

    @property
    def full_name(self) -> str:
        """`pkg.mod.Class.method`."""
        return f"{self.module}.{self.qualname}" if self.module else self.qualname


@dataclass(frozen=True, slots=True)
class Reference:
    """One line where an identifier spelled like the queried name is used (not defined)."""

    path: str
    line: int
    """1-based."""
    column: int
    """0-based byte column of the first use on the line."""
    kind: str
    """`call` (`f(...)`), `attribute_call` (`obj.f(...)`), `attribute` (`obj.f`), `import`, or `name`."""
    text: str
    """The stripped source line."""


@dataclass(slots=True)
class UpdateResult:
    """What one `CodeIndex.update` did."""

    parsed: int = 0
    """Files parsed with tree-sitter."""
    reused: int = 0
    """Changed files whose content was already in the parse cache."""
    unchanged: int = 0
    """Files given with the content the index already had."""
    removed: int = 0
    skipped: int = 0
    """Files too large to index."""


@dataclass(slots=True)
class _RawDef:
    name: str
    qualname: str
    kind: str
    start_line: int
    end_line: int
    signature: str
    docstring: str
    decorators: tuple[str, ...]
    is_async: bool
    depth: int


@dataclass(slots=True)
class _Parsed:
    """Everything extracted from one file's content; independent of its path."""

    lines: list[str]
    defs: list[_RawDef]
    refs: dict[str, list[tuple[int, int, str]]]
    has_error: bool
    module_doc: str


@dataclass(slots=True)
class _File:
    path: str
    digest: str
    parsed: _Parsed
    defs: list[Definition] = field(default_factory=list)


def _query() -> Query:
    global _ref_query
    if _ref_query is None:
        _ref_query = Query(_LANGUAGE, _REF_QUERY_SRC)
    return _ref_query


def module_name(path: str) -> str:
    """`src/pkg/sub/mod.py` -> `pkg.sub.mod`; `pkg/__init__.py` -> `pkg`."""
    p = path.replace("\\", "/")
    for suffix in (".pyi", ".py"):
        if p.endswith(suffix):
            p = p[: -len(suffix)]
            break
    parts = [x for x in p.split("/") if x and x != "."]
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_test_path(path: str) -> bool:
    """Whether the path looks like a test file (`tests/...`, `test_x.py`, `x_test.py`, `conftest.py`)."""
    return bool(_TEST_PATH_RE.search(path.replace("\\", "/")))


def _text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def _one_line(text: str, limit: int = 200) -> str:
    """Collapse a (possibly multi-line) header to one line, dropping trailing `# comments`."""
    parts = []
    for line in text.splitlines():
        hash_at = line.find("#")
        if hash_at >= 0 and "'" not in line[hash_at:] and '"' not in line[hash_at:]:
            line = line[:hash_at]
        parts.append(line.strip())
    out = " ".join(p for p in parts if p)
    if len(parts) > 1:  # undo the layout of a multi-line header: "f( a, b, )" -> "f(a, b)"
        out = re.sub(r"([(\[{]) +", r"\1", out)
        out = re.sub(r",? +([)\]}])", r"\1", out)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _docstring(body: Node | None) -> str:
    """First non-empty line of the docstring that opens `body` (a block or module)."""
    if body is None:
        return ""
    for child in body.named_children:
        if child.type == "comment":
            continue
        if child.type == "expression_statement" and child.named_child_count == 1:
            s = child.named_children[0]
            if s.type == "string":
                raw = _text(s)
                m = _STRING_PREFIX_RE.match(raw)
                if m:
                    q = m.group(1)
                    raw = raw[m.end() :]
                    if raw.endswith(q):
                        raw = raw[: -len(q)]
                for line in raw.splitlines():
                    if line.strip():
                        return _one_line(line, 160)
        return ""
    return ""


def _is_property_decorator(deco: str) -> bool:
    return deco in _PROPERTY_DECORATORS or deco.endswith((".setter", ".getter", ".deleter"))


def _is_main_guard(node: Node) -> bool:
    cond = _text(node.child_by_field_name("condition"))
    return "__name__" in cond and "__main__" in cond


class _Extractor:
    """Walks one syntax tree for definitions; records each definition's name node."""

    def __init__(self, src: bytes, lines: list[str]) -> None:
        self.src = src
        self.lines = lines
        self.defs: list[_RawDef] = []
        self.def_name_bytes: set[int] = set()

    def scope(self, node: Node, prefix: str, scope_kind: str, depth: int) -> None:
        """Visit the statements of a module / class / function body."""
        for child in node.named_children:
            t = child.type
            if t in ("function_definition", "class_definition"):
                self.definition(child, child, (), prefix, scope_kind, depth)
            elif t == "decorated_definition":
                inner = child.child_by_field_name("definition")
                if inner is not None and inner.type in ("function_definition", "class_definition"):
                    decos = tuple(
                        _one_line(_text(d)[1:].strip(), 120) for d in child.named_children if d.type == "decorator"
                    )
                    self.definition(child, inner, decos, prefix, scope_kind, depth)
            elif scope_kind == "function":
                continue  # locals are not indexed; nested defs are found through the branch above
            elif t == "expression_statement":
                for sub in child.named_children:
                    if sub.type == "assignment":
                        self.assignment(child, sub, prefix, scope_kind, depth)
            elif t == "type_alias_statement":
                left = child.named_children[0] if child.named_child_count else None
                ident = left.named_children[0] if left is not None and left.named_child_count else left
                if ident is not None and ident.type == "identifier":
                    self.add_assignment(child, ident, prefix, scope_kind, depth)
            elif t == "if_statement" and scope_kind == "module" and _is_main_guard(child):
                continue  # script code, not the module's API
            elif t in _TRANSPARENT:
                self.scope(child, prefix, scope_kind, depth)

    def definition(
        self, outer: Node, node: Node, decos: tuple[str, ...], prefix: str, scope_kind: str, depth: int
    ) -> None:
        name_node = node.child_by_field_name("name")
        if name_node is None:
            return
        name = _text(name_node)
        qualname = f"{prefix}.{name}" if prefix else name
        body = node.child_by_field_name("body")
        header_end = body.start_byte if body is not None else node.end_byte
        header = self.src[node.start_byte : header_end].decode("utf-8", "replace").rstrip()
        if header.endswith(":"):
            header = header[:-1]
        if node.type == "class_definition":
            kind, inner_kind, is_async = "class", "class", False
        else:
            is_async = node.child_count > 0 and node.children[0].type == "async"
            inner_kind = "function"
            if scope_kind != "class":
                kind = "function"
            elif any(_is_property_decorator(d) for d in decos):
                kind = "property"
            else:
                kind = "method"
        end_row, end_col = outer.end_point
        self.defs.append(
            _RawDef(
                name=name,
                qualname=qualname,
                kind=kind,
                start_line=outer.start_point[0] + 1,
                end_line=end_row + (1 if end_col > 0 or end_row == outer.start_point[0] else 0),
                signature=_clip(_one_line(header, 10_000).removesuffix(":"), 200),
                docstring=_docstring(body),
                decorators=decos,
                is_async=is_async,
                depth=depth,
            )
        )
        self.def_name_bytes.add(name_node.start_byte)
        if body is not None:
            self.scope(body, qualname, inner_kind, depth + 1)

    def assignment(self, stmt: Node, node: Node, prefix: str, scope_kind: str, depth: int) -> None:
        targets = [node.child_by_field_name("left")]
        right = node.child_by_field_name("right")
        while right is not None and right.type == "assignment":  # a = b = 1
            targets.append(right.child_by_field_name("left"))
            right = right.child_by_field_name("right")
        stack = [t for t in targets if t is not None]
        while stack:
            target = stack.pop(0)
            if target.type == "identifier":
                self.add_assignment(stmt, target, prefix, scope_kind, depth)
            elif target.type in _PATTERNS:
                stack.extend(target.named_children)

    def add_assignment(self, stmt: Node, ident: Node, prefix: str, scope_kind: str, depth: int) -> None:
        name = _text(ident)
        if scope_kind == "class":
            kind = "attribute"
        else:
            kind = "constant" if _CONSTANT_RE.match(name) else "variable"
        row = stmt.start_point[0]
        end_row, end_col = stmt.end_point
        self.defs.append(
            _RawDef(
                name=name,
                qualname=f"{prefix}.{name}" if prefix else name,
                kind=kind,
                start_line=row + 1,
                end_line=end_row + (1 if end_col > 0 or end_row == row else 0),
                signature=_one_line(self.lines[row] if row < len(self.lines) else "", 160),
                docstring="",
                decorators=(),
                is_async=False,
                depth=depth,
            )
        )
        self.def_name_bytes.add(ident.start_byte)


def parse_source(data: bytes, parser: Parser | None = None) -> _Parsed:
    """Parse one file's bytes into definitions, identifier uses and lines (no path attached)."""
    text = data.decode("utf-8-sig", "replace")  # drops a byte-order mark
    src = text.encode("utf-8")  # valid UTF-8, so byte offsets and decoded text agree
    lines = text.split("\n") if text else []
    if lines and not lines[-1]:
        lines.pop()  # the file's final newline ends the last line; it does not start another
    if "\r" in text:
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    tree = (parser or Parser(_LANGUAGE)).parse(src)
    root = tree.root_node
    ex = _Extractor(src, lines)
    ex.scope(root, "", "module", 0)

    caps = QueryCursor(_query()).captures(root)
    calls = {n.start_byte for n in caps.get("call", ())}
    attr_calls = {n.start_byte for n in caps.get("acall", ())}
    attrs = {n.start_byte for n in caps.get("attr", ())}
    import_rows: set[int] = set()
    for stmt in caps.get("imp", ()):
        import_rows.update(range(stmt.start_point[0], stmt.end_point[0] + 1))
    skip = ex.def_name_bytes
    refs: dict[str, list[tuple[int, int, str]]] = {}
    for node in caps.get("id", ()):
        start = node.start_byte
        if start in skip:
            continue
        name = src[start : node.end_byte].decode("utf-8", "replace")
        row, col = node.start_point
        if start in calls:
            kind = "call"
        elif start in attr_calls:
            kind = "attribute_call"
        elif row in import_rows:
            kind = "import"
        elif start in attrs:
            kind = "attribute"
        else:
            kind = "name"
        occ = refs.get(name)
        if occ is None:
            refs[name] = [(row + 1, col, kind)]
        else:
            occ.append((row + 1, col, kind))
    for name, occ in refs.items():
        if len(occ) > 1:  # captures of several patterns need not come in source order
            occ.sort()
            refs[name] = [o for i, o in enumerate(occ) if i == 0 or o[0] != occ[i - 1][0]]  # one per line
    return _Parsed(lines=lines, defs=ex.defs, refs=refs, has_error=root.has_error, module_doc=_docstring(root))


class CodeIndex:
    """Definitions and references of a set of Python files held in memory, updated incrementally.

    Thread-safe: one lock serialises updates and queries.
    """

    def __init__(self, max_file_bytes: int = MAX_FILE_BYTES, cache_size: int = 2048) -> None:
        self.max_file_bytes = max_file_bytes
        self.cache_size = cache_size
        """How many parse results of content no longer in the index to keep (reverts, re-adds)."""
        self.parse_count = 0
        """Total tree-sitter parses so far (tests and benchmarks read it)."""
        self.skipped: dict[str, str] = {}
        """Path -> why it is not indexed."""
        self._parser = Parser(_LANGUAGE)
        self._files: dict[str, _File] = {}
        self._cache: OrderedDict[str, _Parsed] = OrderedDict()
        self._defs_by_name: dict[str, list[Definition]] = defaultdict(list)
        self._refs: dict[str, dict[str, list[tuple[int, int, str]]]] = defaultdict(dict)
        self._rank_cache: dict[str, float] | None = None
        self._map_cache: dict[str, list[_MapEntry]] = {}
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- updates

    def update(self, files: Mapping[str, bytes | None]) -> UpdateResult:
        """Add, change (`bytes`) or delete (`None`) files; unchanged content is not re-parsed."""
        result = UpdateResult()
        with self._lock:
            for path, data in files.items():
                if data is None:
                    if self._remove(path) or self.skipped.pop(path, None) is not None:
                        result.removed += 1
                    continue
                if len(data) > self.max_file_bytes:
                    self._remove(path)
                    self.skipped[path] = f"{len(data) / 1e6:.1f} MB, over the {self.max_file_bytes / 1e6:g} MB limit"
                    log.info("code index: skipping %s (%d bytes)", path, len(data))
                    result.skipped += 1
                    continue
                self.skipped.pop(path, None)
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                old = self._files.get(path)
                if old is not None and old.digest == digest:
                    result.unchanged += 1
                    continue
                parsed = self._cache.get(digest)
                if parsed is None:
                    parsed = parse_source(data, self._parser)
                    self.parse_count += 1
                    result.parsed += 1
                    self._cache[digest] = parsed
                    if parsed.has_error:
                        log.debug("code index: %s has syntax errors; indexed what parses", path)
                else:
                    self._cache.move_to_end(digest)
                    result.reused += 1
                self._remove(path)
                self._add(path, digest, parsed)
            self._prune_cache()
        if result.parsed or result.removed:
            log.debug("code index update: %s", result)
        return result

    def sync(self, files: Mapping[str, bytes]) -> UpdateResult:
        """Make the index hold exactly `files`: update them and delete every other path."""
        with self._lock:
            gone = {p: None for p in (set(self._files) | set(self.skipped)) - set(files)}
            return self.update({**gone, **files})

    def _add(self, path: str, digest: str, parsed: _Parsed) -> None:
        module = module_name(path)
        defs = [
            Definition(
                name=d.name,
                qualname=d.qualname,
                kind=d.kind,
                path=path,
                start_line=d.start_line,
                end_line=d.end_line,
                signature=d.signature,
                docstring=d.docstring,
                module=module,
                decorators=d.decorators,
                is_async=d.is_async,
            )
            for d in parsed.defs
        ]
        self._files[path] = _File(path=path, digest=digest, parsed=parsed, defs=defs)
        for d in defs:
            self._defs_by_name[d.name].append(d)
        for name, occ in parsed.refs.items():
            self._refs[name][path] = occ
        self._rank_cache = None
        self._map_cache.clear()

    def _remove(self, path: str) -> bool:
        f = self._files.pop(path, None)
        if f is None:
            return False
        for name in {d.name for d in f.defs}:
            kept = [d for d in self._defs_by_name[name] if d.path != path]
            if kept:
                self._defs_by_name[name] = kept
            else:
                del self._defs_by_name[name]
        for name in f.parsed.refs:
            by_path = self._refs.get(name)
            if by_path is not None:
                by_path.pop(path, None)
                if not by_path:
                    del self._refs[name]
        self._rank_cache = None
        self._map_cache.clear()
        return True

    def _prune_cache(self) -> None:
        live = {f.digest for f in self._files.values()}
        dead = len(self._cache) - len(live)
        if dead <= self.cache_size:
            return
        for digest in list(self._cache):
            if dead <= self.cache_size:
                break
            if digest not in live:
                del self._cache[digest]
                dead -= 1

    # ----------------------------------------------------------------- queries

    @property
    def paths(self) -> list[str]:
        """Indexed paths, sorted."""
        with self._lock:
            return sorted(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def has_errors(self, path: str) -> bool:
        """Whether the file had syntax errors (its index is then partial)."""
        with self._lock:
            f = self._files.get(path)
            return f is not None and f.parsed.has_error

    def definitions(self, path: str | None = None, kinds: Iterable[str] | None = None) -> list[Definition]:
        """All definitions, or one file's, in file then line order; optionally only some kinds."""
        wanted = set(kinds) if kinds is not None else None
        with self._lock:
            if path is not None:
                f = self._files.get(path)
                files = [f] if f is not None else []
            else:
                files = [self._files[p] for p in sorted(self._files)]
            return [d for f in files for d in f.defs if wanted is None or d.kind in wanted]

    def find_definition(self, name: str) -> list[Definition]:
        """Definitions named `name`, or whose dotted name ends with it (`Class.method`, `pkg.mod.func`).

        Exact qualified matches come first, test files last.
        """
        query = name.strip().removesuffix("()").strip(".")
        if not query:
            return []
        bare = query.rsplit(".", 1)[-1]
        with self._lock:
            candidates = list(self._defs_by_name.get(bare, ()))
        if "." in query:
            suffix = "." + query
            candidates = [
                d for d in candidates if d.qualname == query or d.full_name == query or d.full_name.endswith(suffix)
            ]
        candidates.sort(
            key=lambda d: (
                d.qualname != query and d.full_name != query,
                is_test_path(d.path),
                d.path,
                d.start_line,
            )
        )
        return candidates

    def find_references(self, name: str, path: str | None = None) -> list[Reference]:
        """Lines using an identifier spelled like `name` (its last dotted part), minus definition sites.

        `obj.method` counts for `method`; matching is by spelling (no type inference). For a
        qualified class member (`Class.method`, a property or class attribute) only attribute uses
        (`x.method`, of any object) and bare uses inside the class count. `path` keeps only that
        file or directory prefix.
        """
        query = name.strip().removesuffix("()").strip(".")
        bare = query.rsplit(".", 1)[-1]
        kinds: frozenset[str] | None = None
        class_spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
        with self._lock:
            if "." in query:
                defs = self.find_definition(query)
                if defs and all(d.kind in _MEMBER_KINDS for d in defs):
                    # `Class.member` is reached as `x.member`, or by its bare name in the class body
                    # (`@member.setter`).
                    kinds = _ATTRIBUTE_REFS
                    for d in defs:
                        owner = d.qualname.rpartition(".")[0]
                        class_spans[d.path].extend(
                            (c.start_line, c.end_line)
                            for c in self._files[d.path].defs
                            if c.kind == "class" and c.qualname == owner
                        )
            out: list[Reference] = []
            by_path = self._refs.get(bare, {})
            for p in sorted(by_path):
                if path is not None and not _under(p, path):
                    continue
                lines = self._files[p].parsed.lines
                for line, col, kind in by_path[p]:
                    if (
                        kinds is not None
                        and kind not in kinds
                        and not any(a <= line <= b for a, b in class_spans.get(p, ()))
                    ):
                        continue
                    text = lines[line - 1].strip() if line <= len(lines) else ""
                    out.append(Reference(path=p, line=line, column=col, kind=kind, text=_clip(text, 200)))
        return out

    def outline(self, path: str) -> str:
        """Every definition of one file, indented by nesting, with line ranges and docstring lines."""
        with self._lock:
            f = self._files.get(path)
            if f is None:
                if path in self.skipped:
                    return f"{path}: not indexed ({self.skipped[path]})"
                close = difflib.get_close_matches(path, list(self._files), n=3, cutoff=0.5)
                if not close:
                    base = path.rsplit("/", 1)[-1]
                    close = sorted(p for p in self._files if p.rsplit("/", 1)[-1] == base)[:3]
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                return f"{path}: no such file in the index.{hint}"
            parsed = f.parsed
            defs = f.defs
        n = len(defs)
        head = f"{path} ({len(parsed.lines)} lines, {n} definition{'s' if n != 1 else ''})"
        if parsed.has_error:
            head += " [syntax errors: outline may be partial]"
        out = [head]
        if parsed.module_doc:
            out.append(f'"""{parsed.module_doc}"""')
        width = len(str(max((d.end_line for d in defs), default=1)))
        for d, raw in zip(defs, parsed.defs, strict=True):
            depth = raw.depth
            rng = f"L{d.start_line}-{d.end_line}".ljust(2 * width + 3)
            sig = _label(d)
            if d.decorators and d.kind != "property":
                sig = " ".join("@" + x for x in d.decorators[:2]) + " " + sig
            doc = f"  # {d.docstring}" if d.docstring else ""
            out.append(f"{rng} {'  ' * depth}{sig}{doc}")
        return "\n".join(out)

    def file_scores(self, mentioned: Iterable[str] = ()) -> dict[str, float]:
        """Importance of each file: how much its definitions are used from other files.

        A definition's score sums sqrt(uses) over each other file using its name, divided among
        the files defining that name; `_private` names weigh 0.1, dunders and locals nothing.
        `mentioned` (paths, modules or identifiers, e.g. from the issue text) boosts the files
        they name or that define them.
        """
        with self._lock:
            if self._rank_cache is None:
                self._rank_cache = self._base_scores()
            scores = dict(self._rank_cache)
            words = {m.strip() for m in mentioned if m and m.strip()}
            if words:
                top = max(scores.values(), default=0.0) + 1.0
                for p, f in self._files.items():
                    mod = module_name(p)
                    if any(p == w or p.endswith("/" + w) or mod == w or mod.endswith("." + w) for w in words):
                        scores[p] += 2 * top  # above every file not named
                    elif any(d.name in words or d.qualname in words for d in f.defs):
                        scores[p] += top
            return scores

    def _base_scores(self) -> dict[str, float]:
        scores: dict[str, float] = {}
        for p, f in self._files.items():
            total = 0.0
            for d, raw in zip(f.defs, f.parsed.defs, strict=True):
                name = d.name
                if not _is_api(d, raw):
                    continue
                if name.startswith("__") and name.endswith("__"):
                    continue
                users = self._refs.get(name)
                if not users:
                    continue
                uses = sum(math.sqrt(len(occ)) for q, occ in users.items() if q != p)
                if not uses:
                    continue
                n_def = len({x.path for x in self._defs_by_name.get(name, ())}) or 1
                total += (0.1 if name.startswith("_") else 1.0) * uses / n_def
            scores[p] = total
        return scores

    def repo_map(self, max_chars: int = 4000, mentioned: Iterable[str] = ()) -> str:
        """A compact map of the repository: per file, its public classes, functions and methods
        with signatures, most important files first (see `file_scores`). Each file gets at most a
        third of the room, so a huge module cannot crowd out the rest; a file cut short keeps its
        most used classes, functions and methods. The text is cut to
        `max_chars` with a note of what was left out."""
        scores = self.file_scores(mentioned)
        with self._lock:
            order = sorted(self._files, key=lambda p: (-scores.get(p, 0.0), is_test_path(p), p))
            for p in order:
                if p not in self._map_cache:
                    self._map_cache[p] = self._map_entries(self._files[p])
            blocks = [(p, entries) for p in order if (entries := self._map_cache[p])]
            skipped = dict(self.skipped)
        if not blocks:
            return "(no definitions indexed)" + (f"\n[not indexed: {', '.join(sorted(skipped))}]" if skipped else "")
        note_room = min(200, max_chars // 4)
        budget = max_chars - note_room
        per_file = max(300, budget // 3)
        parts: list[str] = []
        used = shown = cut = 0
        for path, entries in blocks:
            room = min(per_file, budget - used)
            block = _fit_block(path, entries, room)
            if block is None:
                break  # not even one entry fits
            text, partial = block
            parts.append(text)
            used += len(text) + 1
            shown += 1
            cut += partial
        notes: list[str] = []
        left = [p for p, _ in blocks[shown:]]
        if left or cut:
            msg = f"[{cut} file{'s' if cut != 1 else ''} shown in part; " if cut else "["
            msg += f"{len(left)} more file{'s' if len(left) != 1 else ''} not shown"
            listed = ""
            for n in left:
                cand = f"{listed}, {n}" if listed else n
                if len(msg) + len(cand) + 8 > note_room:
                    listed += ", ..." if listed else "..."
                    break
                listed = cand
            notes.append(msg + (f": {listed}" if listed else "") + "]")
        if skipped:
            notes.append(_clip(f"[not indexed: {', '.join(sorted(skipped))}]", note_room))
        text = "\n".join(parts + notes)
        return text if len(text) <= max_chars else text[: max_chars - 4] + "\n..."

    def _map_entries(self, f: _File) -> list[_MapEntry]:
        """The map's entries for one file: public classes, functions and methods (no constants)."""
        out: list[_MapEntry] = []
        owner = -1
        for d, raw in zip(f.defs, f.parsed.defs, strict=True):
            if not _is_api(d, raw) or d.kind == "constant":
                continue
            if d.name.startswith("_") and d.name not in ("__init__", "__call__"):
                if raw.depth == 0:
                    owner = -1
                continue
            if raw.depth == 0:
                owner = len(out) if d.kind == "class" else -1
            elif owner < 0 or not d.qualname.startswith(out[owner].qualname + "."):
                continue  # a member of a private class
            if any(x.endswith((".setter", ".deleter")) for x in d.decorators):
                continue  # the getter stands for the property
            users = self._refs.get(d.name, {})
            uses = sum(len(occ) for q, occ in users.items() if q != f.path)
            out.append(
                _MapEntry(
                    "  " * (raw.depth + 1) + _label(d, 110), d.qualname, raw.depth, uses, owner if raw.depth else -1
                )
            )
        return out


@dataclass(slots=True)
class _MapEntry:
    line: str
    qualname: str
    depth: int
    uses: int
    """References from other files to the name."""
    owner: int
    """Index of the class entry a method belongs to, else -1."""


def _fit_block(path: str, entries: list[_MapEntry], room: int) -> tuple[str, bool] | None:
    """One file's map block within `room` chars: all of it, or its most used entries (a method with
    its class; top-level names count double), in source order, with a "... N more" line. None when
    no entry fits."""
    head = f"{path}:"
    full = "\n".join([head] + [e.line for e in entries])
    if len(full) <= room:
        return full, False
    size = len(head) + 60  # the header and the "... N more" line
    chosen: set[int] = set()
    for i in sorted(range(len(entries)), key=lambda i: (-entries[i].uses * (2 if entries[i].depth == 0 else 1), i)):
        need = [i] if entries[i].owner < 0 or entries[i].owner in chosen else [entries[i].owner, i]
        extra = sum(len(entries[j].line) + 1 for j in need)
        if size + extra <= room:
            chosen.update(need)
            size += extra
    if not chosen:
        return None
    lines = [head] + [entries[i].line for i in sorted(chosen)]
    lines.append(f"  ... {len(entries) - len(chosen)} more (see the file's outline)")
    return "\n".join(lines), True


def _is_api(d: Definition, raw: _RawDef) -> bool:
    """Top-level classes, functions and constants, and the methods of top-level classes."""
    if raw.depth == 0:
        return d.kind in ("class", "function", "constant")
    return raw.depth == 1 and d.kind in ("method", "property")


def _label(d: Definition, limit: int = 160) -> str:
    """The signature as shown: `@property` marked, an assignment's own name put first when the
    line starts with another (`b (in: a, b = 1, 2)`)."""
    sig = _clip(d.signature, limit)
    if d.kind == "property":
        deco = next((x for x in d.decorators if _is_property_decorator(x)), "property")
        return f"@{deco} {sig}"
    if d.kind in ("constant", "variable", "attribute") and not sig.startswith(d.name):
        return f"{d.name} (in: {sig})"
    return sig


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or not prefix


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_definitions(defs: Sequence[Definition], limit: int = 50, query: str | None = None) -> str:
    """Definitions as one line each: `path:start-end  qualname  signature  # docstring`."""
    if not defs:
        return f"No definition found for {query!r}." if query else "No definitions."
    head = f"{len(defs)} definition{'s' if len(defs) != 1 else ''}" + (f" of {query!r}" if query else "") + ":"
    out = [head]
    for d in defs[:limit]:
        sig = _label(d)
        doc = f"  # {_clip(d.docstring, 100)}" if d.docstring else ""
        qual = f"{d.qualname}  " if d.qualname != d.name else ""
        out.append(f"{d.path}:{d.start_line}-{d.end_line}  {qual}{sig}{doc}")
    if len(defs) > limit:
        out.append(f"... {len(defs) - limit} more not shown")
    return "\n".join(out)


def render_references(refs: Sequence[Reference], limit: int = 50, query: str | None = None) -> str:
    """References grep-style, `path:line: text`, with a count header and a "N more" notice."""
    if not refs:
        return f"No references found for {query!r}." if query else "No references."
    n_files = len({r.path for r in refs})
    head = f"{len(refs)} reference{'s' if len(refs) != 1 else ''}" + (f" to {query!r}" if query else "")
    out = [f"{head} in {n_files} file{'s' if n_files != 1 else ''}:"]
    out.extend(f"{r.path}:{r.line}: {r.text}" for r in refs[:limit])
    if len(refs) > limit:
        more_files = len({r.path for r in refs[limit:]} - {r.path for r in refs[:limit]})
        extra = f" (in {more_files} more file{'s' if more_files != 1 else ''})" if more_files else ""
        out.append(f"... {len(refs) - limit} more not shown{extra}; narrow the search with a path")
    return "\n".join(out)
