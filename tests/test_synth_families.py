"""Each procedural bug family: what it does to code (exactly), and that it makes bugs the tests of a real
repository catch (the bundled `clip`, run in its own sandbox by the container runner)."""

from __future__ import annotations

import collections
import difflib

import pytest

from tasks.bundled.materialize import materialize
from tasks.synth import outcomes, plan
from tasks.synth.families import CLASS_FAMILIES, FAMILIES, candidates, entities, parse

CODE = '''\
class Base:
    pass


class Shape(Base, metaclass=type):
    """A shape."""

    def area(self, w, h):
        """Width times height."""
        total = w * h
        if total < 0:
            return 0
        for _ in range(2):
            total += 1
        if w > h:
            kind = "wide"
        else:
            kind = "tall"
        flag = True
        return total - 2 if kind else total

    def name(self):
        return "shape"
'''


def diffs(family: str) -> list[str]:
    src = CODE.encode()
    out = []
    for m in candidates("shape.py", src, [family], check=True):
        new = m.apply(src).decode().splitlines()
        out.append("\n".join(ln for ln in difflib.unified_diff(CODE.splitlines(), new, lineterm="", n=0)
                             if ln[:1] in "+-" and not ln.startswith(("+++", "---"))))
    return out


@pytest.mark.parametrize("family,expected", [
    ("flip_operator", "-        total = w * h\n+        total = w / h"),
    ("flip_operator", "-        if total < 0:\n+        if total >= 0:"),
    ("swap_operands", "-        return total - 2 if kind else total\n+        return 2 - total if kind else total"),
    ("change_constant", "-        if total < 0:\n+        if total < 1:"),
    ("change_constant", "-        flag = True\n+        flag = False"),
    ("remove_conditional", "-        if total < 0:\n-            return 0"),
    ("remove_loop", "-        for _ in range(2):\n-            total += 1"),
    ("remove_assignment", "-        total = w * h"),
    ("remove_base", "-class Shape(Base, metaclass=type):\n+class Shape(metaclass=type):"),
    ("remove_method", "-    def name(self):\n-        return \"shape\""),
])
def test_family_makes_the_exact_change(family, expected):
    assert expected in diffs(family)


def test_invert_if_swaps_the_bodies_and_keeps_the_condition():
    (m,) = candidates("shape.py", CODE.encode(), ["invert_if"], check=True)
    new = m.apply(CODE.encode()).decode()
    assert 'if w > h:\n            kind = "tall"\n        else:\n            kind = "wide"\n' in new
    assert new.replace('"tall"', '"X"').replace('"wide"', '"tall"').replace('"X"', '"wide"') == CODE


def test_shuffle_lines_swaps_neighbouring_statements_never_the_docstring():
    src = CODE.encode()
    new = [m.apply(src).decode() for m in candidates("shape.py", src, ["shuffle_lines"], check=True)]
    assert any("        return total - 2 if kind else total\n        flag = True\n" in n for n in new)
    assert all(n.index('"""Width times height."""') < n.index("total = w * h") for n in new)


def test_every_mutation_compiles_and_changes_the_code_and_keys_are_stable():
    src = CODE.encode()
    muts = candidates("shape.py", src, check=True)
    assert {m.family for m in muts} == set(FAMILIES)
    assert len({m.key for m in muts}) == len(muts)
    assert [m.key for m in candidates("shape.py", src, check=True)] == [m.key for m in muts]


def test_entities_are_qualified_with_their_docstrings():
    ents = {e.name: e for e in entities(parse(CODE.encode()).root_node, CODE.encode(), "shape.py")}
    assert set(ents) == {"Base", "Shape", "Shape.area", "Shape.name"}
    assert ents["Shape.area"].docstring == "Width times height." and ents["Shape"].kind == "class"


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown bug family"):
        candidates("x.py", b"x = 1\n", ["flip"])


def test_every_family_finds_sites_in_a_real_repository(tmp_path):
    repo = tmp_path / "clip"
    materialize("clip", repo)
    found = collections.Counter()
    for path in repo.rglob("*.py"):
        rel = path.relative_to(repo).as_posix()
        if not rel.startswith("tests/"):
            found.update(m.family for m in candidates(rel, path.read_bytes(), check=True))
    assert set(found) == set(FAMILIES), found


@pytest.mark.docker
@pytest.mark.usefixtures("docker_ready")
def test_every_family_makes_bugs_the_real_tests_catch():
    """On the bundled `clip` (its image built like any source's), the first three covered bugs of each family
    run through the container runner: each family has at least one with a FAIL_TO_PASS test."""
    from tasks.synth.env_image import ensure_source_image
    from tasks.synth.session import SourceSession
    from tasks.synth.sources import resolve

    src = resolve(["bundled:clip"])[0]
    image, commit, files = ensure_source_image(src)
    with SourceSession(image, commit, src.pytest_argv() + ["--tb=short"]) as sess:
        base, covered = sess.baseline(files)
        assert base.refusal() is None and len(base.passing) >= 20
        contents = {f: sess.read(f) for f in files}
        per: dict[str, list] = collections.defaultdict(list)
        for m in plan.order(contents, covered, list(FAMILIES)):
            if len(per[m.family]) < (3 if m.family not in CLASS_FAMILIES else 5) and m.valid(contents[m.entity.file]):
                per[m.family].append(m)
        bugs = [m for ms in per.values() for m in ms]
        res = sess.run([{"id": m.key, "file": m.entity.file, "content": m.apply(contents[m.entity.file]).decode()}
                        for m in bugs])
        assert sess.sb.exec("git status --porcelain --untracked-files=no").output.strip() == ""  # files restored
    caught = {fam: max(len(outcomes.verdict(base, [res[m.key]]).fail_to_pass) for m in ms) for fam, ms in per.items()}
    assert set(caught) == set(FAMILIES)
    assert all(n >= 1 for n in caught.values()), caught
