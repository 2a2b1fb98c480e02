"""Grading in fresh Docker sandboxes with swebench's functions: gold patches resolve every bundled
instance, empty and broken patches resolve none."""

from __future__ import annotations

import pytest

from tasks.grading import eval_script, grade, patched_files
from tasks.registry import get_suite

pytestmark = pytest.mark.usefixtures("docker_ready")


@pytest.fixture(scope="module")
def instances():
    suite = get_suite("bundled")
    suite.build_images()
    return suite.instances()


def test_gold_resolves_and_empty_does_not_for_every_instance(instances):
    assert len(instances) >= 12
    for inst in instances:
        gold = grade(inst, inst.patch)
        assert gold.patch_applied and gold.resolved, (inst.instance_id, gold.error, gold.fail_to_pass_failure,
                                                      gold.pass_to_pass_failure, gold.log_tail[-800:])
        assert sorted(gold.fail_to_pass_success) == sorted(inst.FAIL_TO_PASS)
        empty = grade(inst, "")
        assert empty.empty_patch and not empty.resolved


def test_unfixed_or_broken_patches_are_not_resolved(instances):
    inst = instances[0]
    only_tests = grade(inst, inst.test_patch)  # applies, but fixes nothing
    assert only_tests.patch_applied and not only_tests.resolved and only_tests.fail_to_pass_failure
    garbage = grade(inst, "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n")
    assert not garbage.patch_applied and not garbage.resolved and garbage.error == "patch did not apply"


def test_a_patch_that_breaks_a_passing_test_is_a_regression(instances):
    inst = instances[0]
    r = grade(inst, inst.patch + _break_everything(inst))
    assert not r.resolved


def _break_everything(inst) -> str:
    """A patch adding a conftest that fails every test at import (a regression of every PASS_TO_PASS)."""
    return ("diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
            "@@ -0,0 +1 @@\n+raise RuntimeError('broken by the patch')\n")


def test_eval_script_has_swebench_markers(instances):
    inst = instances[0]
    script = eval_script(inst)
    assert ">>>>> Start Test Output" in script and ">>>>> End Test Output" in script
    for f in patched_files(inst.test_patch):
        assert f in script
