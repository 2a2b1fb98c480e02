"""Issue texts never give the fix away; LLM bugs come from a policy's rewrite of one function."""

from __future__ import annotations

from tasks.synth import issue
from tasks.synth.llm_bugs import FAMILY, propose, rewrite

GOLD = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,3 @@
 def clamp(x, lo, hi):
-    if x >= lo:
+    if x < lo:
         return lo
"""
BUGGED = "def clamp(x, lo, hi):\n    if x >= lo:\n        return lo\n    return x\n"
INPUT = issue.IssueInput(source="calc", file="calc.py", function="clamp", docstring="x limited to [lo, hi].",
                         failing_tests=["tests/test_calc.py::test_clamp"],
                         failure="tests/test_calc.py:4: in test_clamp\n    assert clamp(5, 0, 3) == 3\nE   assert 0 == 3")


def test_template_names_the_function_the_tests_and_the_docstring_not_the_fix():
    text, how = issue.write(INPUT, GOLD, BUGGED)
    assert how == "template"
    for part in ("`clamp`", "calc.py", "tests/test_calc.py::test_clamp", "assert 0 == 3", "x limited to [lo, hi]."):
        assert part in text
    assert issue.leaks(text, GOLD, BUGGED) == [] and "x < lo" not in text


def test_a_policy_text_that_leaks_the_fix_is_replaced_by_the_template():
    text, how = issue.write(INPUT, GOLD, BUGGED, complete=lambda prompt: "Fix: change it to `if x < lo:`")
    assert how == "template" and "if x < lo:" not in text
    text, how = issue.write(INPUT, GOLD, BUGGED, complete=lambda prompt: "clamp returns lo for values above hi")
    assert how == "policy" and text.startswith("clamp returns lo")


def test_a_failure_excerpt_that_shows_the_fix_is_dropped():
    leaky = issue.IssueInput(**{**INPUT.__dict__, "failure": "hint:     if x < lo:"})
    text, how = issue.write(leaky, GOLD, BUGGED)
    assert how == "template-short" and "if x < lo" not in text


def test_prompts_never_hold_the_diff():
    seen = []
    issue.write(INPUT, GOLD, BUGGED, complete=lambda prompt: seen.append(prompt) or "")
    assert seen and "diff --git" not in seen[0] and "x < lo" not in seen[0]


CODE = b'''class A:
    def area(self, w, h):
        """Area."""
        return w * h
'''


def test_llm_rewrite_becomes_a_mutation_of_the_function_only():
    prompts = []

    def complete(prompt: str) -> str:
        prompts.append(prompt)
        return "Here:\n```python\ndef area(self, w, h):\n    \"\"\"Area.\"\"\"\n    return w + h\n```\n"

    (m,) = list(propose("demo", {"a.py": CODE}, [("a.py", "A.area")], complete))
    assert m.family == FAMILY and m.entity.name == "A.area"
    assert m.apply(CODE).decode() == CODE.decode().replace("w * h", "w + h")
    assert "def area(self, w, h):" in prompts[0] and "class A" not in prompts[0]
    assert list(propose("demo", {"a.py": CODE}, [("a.py", "A.area")], lambda p: "no code here")) == []
    assert rewrite("```\nx = 1\n```", "    y = 2") == "    x = 1"
