"""The tree-sitter code index: definitions, lookups, references, incremental updates, repo map."""

from __future__ import annotations

import textwrap

import pytest

from agent.tools.code_index import (
    CodeIndex,
    Definition,
    module_name,
    render_definitions,
    render_references,
)


def _src(text: str) -> bytes:
    return textwrap.dedent(text).lstrip("\n").encode()


SHAPES = _src(
    '''
    """Geometric shapes."""
    import math
    from dataclasses import dataclass
    from functools import cached_property

    PI = math.pi


    class Shape:
        """Base class for shapes.

        Subclasses override area().
        """

        name: str = "shape"

        def area(self) -> float:
            """Return the area."""
            raise NotImplementedError

        def describe(self) -> str:
            return f"{self.name} with area {self.area():.2f}"


    @dataclass
    class Circle(Shape):
        """A circle."""

        radius: float = 1.0

        def area(self) -> float:
            return PI * self.radius**2

        @property
        def diameter(self) -> float:
            return 2 * self.radius

        @diameter.setter
        def diameter(self, value: float) -> None:
            self.radius = value / 2

        @cached_property
        def perimeter(self) -> float:
            return 2 * PI * self.radius

        @staticmethod
        def unit() -> "Circle":
            return Circle(radius=1.0)

        @classmethod
        def from_diameter(
            cls,
            diameter: float,  # in metres
        ) -> "Circle":
            return cls(radius=diameter / 2)


    def _helper():
        return None


    if __name__ == "__main__":
        demo = Circle()
    '''
)

UTIL = _src(
    '''
    import asyncio
    from pkg.shapes import Circle, Shape


    def total_area(shapes: list[Shape]) -> float:
        # the area of each shape, summed (comment: not a reference)
        """Sum of areas."""
        return sum(s.area() for s in shapes)


    def make_counter(start: int = 0):
        count = start

        def increment(step: int = 1) -> int:
            nonlocal count
            count += step
            return count

        class Counter:
            def value(self) -> int:
                return count

        return increment, Counter


    async def fetch_all(urls):
        async def fetch(url):
            await asyncio.sleep(0)
            return url

        return [await fetch(u) for u in urls]


    try:
        import numpy as np
    except ImportError:
        np = None


    def text():
        return "Circle area in a string is not a reference"


    def biggest(circles: list[Circle]) -> Circle:
        return max(circles, key=lambda c: c.area())
    '''
)

INIT = _src(
    """
    from pkg.shapes import Circle, Shape

    __all__ = ["Circle", "Shape"]
    VERSION = "1.0"
    """
)

TEST_SHAPES = _src(
    """
    from pkg.shapes import Circle


    class FakeShape:
        def area(self):
            return 0.0


    def test_circle_area():
        assert Circle(radius=2.0).area() > 12
        assert Circle.unit().diameter == 2


    def test_bare_name():
        area = 1.0
        assert area
    """
)

BROKEN = _src(
    """
    def good_before(x):
        return x + 1

    def broken(x:
        return x

    class AfterError:
        def method(self):
            return good_before(1)
    """
)

# Latin-1 bytes that are not valid UTF-8, in a comment and a string.
LATIN1 = b'# -*- coding: latin-1 -*-\n# caf\xe9\nGREETING = "h\xe9llo"\n\n\ndef greet():\n    return GREETING\n'


def _files() -> dict[str, bytes | None]:
    return {
        "pkg/__init__.py": INIT,
        "pkg/shapes.py": SHAPES,
        "pkg/util.py": UTIL,
        "pkg/broken.py": BROKEN,
        "pkg/latin1.py": LATIN1,
        "tests/test_shapes.py": TEST_SHAPES,
    }


@pytest.fixture()
def index() -> CodeIndex:
    ix = CodeIndex()
    ix.update(_files())
    return ix


def _by_qualname(defs: list[Definition]) -> dict[str, list[Definition]]:
    out: dict[str, list[Definition]] = {}
    for d in defs:
        out.setdefault(d.qualname, []).append(d)
    return out


def test_definitions_of_classes_methods_and_decorators(index: CodeIndex) -> None:
    defs = _by_qualname(index.definitions("pkg/shapes.py"))
    assert set(defs) == {
        "PI",
        "Shape",
        "Shape.name",
        "Shape.area",
        "Shape.describe",
        "Circle",
        "Circle.radius",
        "Circle.area",
        "Circle.diameter",
        "Circle.perimeter",
        "Circle.unit",
        "Circle.from_diameter",
        "_helper",
    }
    kinds = {q: ds[0].kind for q, ds in defs.items()}
    assert kinds["PI"] == "constant"
    assert kinds["Shape"] == kinds["Circle"] == "class"
    assert kinds["Shape.name"] == kinds["Circle.radius"] == "attribute"
    assert kinds["Shape.area"] == kinds["Circle.unit"] == kinds["Circle.from_diameter"] == "method"
    assert kinds["Circle.perimeter"] == "property"  # @cached_property
    assert [d.kind for d in defs["Circle.diameter"]] == ["property", "property"]  # getter and setter
    assert kinds["_helper"] == "function"

    shape = defs["Shape"][0]
    assert (shape.start_line, shape.end_line) == (9, 22)
    assert shape.signature == "class Shape"
    assert shape.docstring == "Base class for shapes."
    assert shape.full_name == "pkg.shapes.Shape"

    circle = defs["Circle"][0]
    assert circle.start_line == 25  # the decorator's line
    assert circle.decorators == ("dataclass",)
    assert circle.signature == "class Circle(Shape)"
    assert defs["Shape.area"][0].docstring == "Return the area."
    assert defs["Shape.area"][0].signature == "def area(self) -> float"

    unit = defs["Circle.unit"][0]
    assert unit.decorators == ("staticmethod",)
    assert (unit.start_line, unit.end_line) == (46, 48)
    # A multi-line header comes back on one line, without its comment.
    fd = defs["Circle.from_diameter"][0]
    assert fd.signature == 'def from_diameter(cls, diameter: float) -> "Circle"'
    assert (fd.start_line, fd.end_line) == (50, 55)


def test_nested_async_and_module_level_definitions(index: CodeIndex) -> None:
    defs = _by_qualname(index.definitions("pkg/util.py"))
    assert defs["make_counter.increment"][0].kind == "function"
    assert defs["make_counter.Counter"][0].kind == "class"
    assert defs["make_counter.Counter.value"][0].kind == "method"
    assert "count" not in defs and "make_counter.count" not in defs  # locals are not indexed
    fetch_all = defs["fetch_all"][0]
    assert fetch_all.is_async and fetch_all.signature == "async def fetch_all(urls)"
    assert defs["fetch_all.fetch"][0].is_async
    assert defs["np"][0].kind == "variable"  # assigned inside try/except at module level
    assert defs["total_area"][0].docstring == "Sum of areas."  # a comment may precede it
    init = _by_qualname(index.definitions("pkg/__init__.py"))
    assert set(init) == {"__all__", "VERSION"}
    assert init["VERSION"][0].module == "pkg" and init["VERSION"][0].full_name == "pkg.VERSION"


def test_syntax_errors_and_non_utf8_still_index(index: CodeIndex) -> None:
    broken = {d.qualname for d in index.definitions("pkg/broken.py")}
    assert {"good_before", "AfterError", "AfterError.method"} <= broken
    assert index.has_errors("pkg/broken.py")
    assert "syntax errors" in index.outline("pkg/broken.py")
    assert [r.line for r in index.find_references("good_before")] == [9]

    latin = _by_qualname(index.definitions("pkg/latin1.py"))
    assert latin["GREETING"][0].start_line == 3
    assert "\ufffd" in latin["GREETING"][0].signature
    assert latin["greet"][0].start_line == 6
    refs = index.find_references("GREETING")
    assert [(r.path, r.line, r.text) for r in refs] == [("pkg/latin1.py", 7, "return GREETING")]


def test_byte_order_mark_and_crlf_line_endings() -> None:
    ix = CodeIndex()
    ix.update({"win.py": b"\xef\xbb\xbfdef f():\r\n    return g()\r\n", "empty.py": b""})
    assert not ix.has_errors("win.py")
    assert [(d.name, d.start_line, d.end_line) for d in ix.definitions("win.py")] == [("f", 1, 2)]
    assert [(r.line, r.text) for r in ix.find_references("g")] == [(2, "return g()")]
    assert ix.outline("empty.py") == "empty.py (0 lines, 0 definitions)"


def test_find_definition_by_bare_and_qualified_name(index: CodeIndex) -> None:
    area = index.find_definition("area")
    assert [(d.path, d.qualname) for d in area] == [
        ("pkg/shapes.py", "Shape.area"),
        ("pkg/shapes.py", "Circle.area"),
        ("tests/test_shapes.py", "FakeShape.area"),  # test files last
    ]
    assert [d.qualname for d in index.find_definition("Circle.area")] == ["Circle.area"]
    assert [d.qualname for d in index.find_definition("shapes.Circle.area")] == ["Circle.area"]
    assert [d.path for d in index.find_definition("pkg.shapes.Circle")] == ["pkg/shapes.py"]
    assert [d.qualname for d in index.find_definition("Counter.value")] == ["make_counter.Counter.value"]
    assert [d.qualname for d in index.find_definition("total_area()")] == ["total_area"]
    assert index.find_definition("ircle.area") == []  # suffixes match at dots only
    assert index.find_definition("Nope") == []


def test_find_references_counts_attribute_calls_and_excludes_definitions(index: CodeIndex) -> None:
    refs = index.find_references("area")
    where = {(r.path, r.line) for r in refs}
    assert ("pkg/shapes.py", 22) in where  # self.area() in describe
    assert ("pkg/util.py", 8) in where  # s.area() in total_area
    assert ("pkg/util.py", 45) in where  # c.area() in a lambda
    assert ("tests/test_shapes.py", 10) in where
    # Definition sites, comments and strings are not references.
    assert not {("pkg/shapes.py", 17), ("pkg/shapes.py", 31), ("tests/test_shapes.py", 5)} & where
    assert ("pkg/util.py", 6) not in where and ("pkg/util.py", 41) not in where
    assert {r.kind for r in refs} == {"attribute_call", "name"}  # obj.area(); a local `area` in a test
    # A qualified member counts only attribute uses: not the test's local `area`.
    member = {(r.path, r.line) for r in index.find_references("Circle.area")}
    assert member == {(r.path, r.line) for r in refs if r.kind == "attribute_call"}
    assert ("tests/test_shapes.py", 16) in where and ("tests/test_shapes.py", 16) not in member
    util_ref = next(r for r in refs if r.path == "pkg/util.py" and r.line == 8)
    assert util_ref.text == "return sum(s.area() for s in shapes)"

    circle = index.find_references("Circle")
    kinds = {(r.path, r.line): r.kind for r in circle}
    assert kinds[("pkg/__init__.py", 1)] == "import"
    assert kinds[("pkg/shapes.py", 48)] == "call"  # Circle(radius=1.0) inside Circle.unit
    assert kinds[("pkg/util.py", 44)] == "name"  # annotations
    assert ("pkg/shapes.py", 25) not in kinds and ("pkg/shapes.py", 26) not in kinds  # the class itself
    assert ("pkg/__init__.py", 3) not in kinds  # "Circle" in __all__ is a string
    assert all(r.path.startswith("pkg/") for r in index.find_references("Circle", path="pkg"))
    assert [r.line for r in index.find_references("Circle", path="pkg/util.py")] == [2, 44]

    diameter = {(r.path, r.line, r.kind) for r in index.find_references("Circle.diameter")}
    assert ("pkg/shapes.py", 38, "name") in diameter  # @diameter.setter
    assert ("tests/test_shapes.py", 11, "attribute") in diameter


def test_incremental_update_reparses_only_changed_files() -> None:
    ix = CodeIndex()
    first = ix.update(_files())
    assert first.parsed == ix.parse_count == 6
    again = ix.update(_files())
    assert (again.parsed, again.unchanged) == (0, 6) and ix.parse_count == 6

    changed = UTIL.replace(b"def total_area(", b"def sum_of_areas(")
    result = ix.update({"pkg/util.py": changed})
    assert result.parsed == 1 and ix.parse_count == 7
    assert ix.find_definition("total_area") == []
    assert [d.path for d in ix.find_definition("sum_of_areas")] == ["pkg/util.py"]
    assert len(ix.find_definition("area")) == 3  # other files' definitions untouched

    # Reverting to content seen before reuses the cached parse.
    result = ix.update({"pkg/util.py": UTIL})
    assert (result.parsed, result.reused) == (0, 1) and ix.parse_count == 7
    assert ix.find_definition("total_area")

    # Deleting a file removes its definitions and references.
    result = ix.update({"pkg/util.py": None})
    assert result.removed == 1 and "pkg/util.py" not in ix
    assert ix.definitions("pkg/util.py") == [] and ix.find_definition("make_counter") == []
    assert all(r.path != "pkg/util.py" for r in ix.find_references("area"))
    assert ix.parse_count == 7

    # Identical content at two paths is parsed once; sync drops paths it is not given.
    result = ix.update({"a/__init__.py": b"", "b/__init__.py": b""})
    assert result.parsed == 1 and result.reused == 1
    result = ix.sync({"pkg/shapes.py": SHAPES})
    assert ix.paths == ["pkg/shapes.py"] and result.removed == 6 and result.parsed == 0


def test_huge_files_are_skipped_with_a_note() -> None:
    ix = CodeIndex(max_file_bytes=2_000)
    big = b"X = 1\n" * 1_000
    result = ix.update({"pkg/shapes.py": SHAPES, "pkg/generated.py": big})
    assert result.skipped == 1 and "pkg/generated.py" not in ix
    assert "pkg/generated.py" in ix.skipped
    assert "not indexed" in ix.outline("pkg/generated.py")
    assert "pkg/generated.py" in ix.repo_map()
    ix.update({"pkg/generated.py": None})
    assert ix.skipped == {}


def test_repo_map_ranks_referenced_files_first_and_truncates(index: CodeIndex) -> None:
    scores = index.file_scores()
    assert scores["pkg/shapes.py"] > scores["pkg/util.py"]
    full = index.repo_map(max_chars=10_000)
    assert full.index("pkg/shapes.py:") < full.index("pkg/util.py:")
    assert "  class Circle(Shape)\n" in full
    assert "    @property def diameter(self) -> float" in full
    assert '    def from_diameter(cls, diameter: float) -> "Circle"' in full
    assert "def diameter(self, value" not in full  # the setter: the getter stands for it
    assert "_helper" not in full  # private helpers stay out of the map
    assert "increment" not in full  # so do nested functions
    assert "more file" not in full

    short = index.repo_map(max_chars=400)
    assert len(short) <= 400
    assert short.startswith("pkg/shapes.py:\n  class Shape\n")
    assert "  ... 2 more (see the file's outline)" in short  # no file takes over a third of the room
    assert "[1 file shown in part; 4 more files not shown: " in short

    # Files the issue mentions come first.
    focused = index.repo_map(max_chars=10_000, mentioned=["pkg/util.py"])
    assert focused.startswith("pkg/util.py:")
    assert index.repo_map(max_chars=10_000, mentioned=["make_counter"]).startswith("pkg/util.py:")


def test_outline_and_renderers(index: CodeIndex) -> None:
    outline = index.outline("pkg/shapes.py")
    lines = outline.splitlines()
    assert lines[0] == "pkg/shapes.py (63 lines, 14 definitions)"
    assert lines[1] == '"""Geometric shapes."""'
    assert any(ln.startswith("L25-55") and "@dataclass class Circle(Shape)  # A circle." in ln for ln in lines)
    assert any("    def area(self) -> float  # Return the area." in ln for ln in lines)
    assert "Did you mean: pkg/shapes.py" in index.outline("pkg/shape.py")

    text = render_definitions(index.find_definition("Circle.area"), query="Circle.area")
    assert text.splitlines() == [
        "1 definition of 'Circle.area':",
        "pkg/shapes.py:31-32  Circle.area  def area(self) -> float",
    ]
    assert render_definitions([], query="nope") == "No definition found for 'nope'."

    refs = index.find_references("area")
    text = render_references(refs, limit=2, query="area")
    out = text.splitlines()
    assert out[0] == f"{len(refs)} references to 'area' in 3 files:"
    assert out[1] == 'pkg/shapes.py:22: return f"{self.name} with area {self.area():.2f}"'
    assert out[-1].startswith(f"... {len(refs) - 2} more not shown")
    assert len(out) == 4
    assert render_references([], query="x") == "No references found for 'x'."


def test_module_name() -> None:
    assert module_name("src/pkg/sub/mod.py") == "pkg.sub.mod"
    assert module_name("pkg/__init__.py") == "pkg"
    assert module_name("setup.py") == "setup"
    assert module_name("stubs/x.pyi") == "stubs.x"
