"""Grading in fresh sandboxes with swebench's functions: gold patches resolve every bundled instance,
empty and broken patches resolve none, and patches that game the tests (a conftest.py hook, a pytest.ini
loading a plugin, a module shadowing pytest, a git hook that the eval script's checkout runs) resolve
nothing on either backend, though each of them does
resolve the unfixed instance when grading trusts the patch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sandbox import SandboxConfig, start_sandbox
from tasks.bundled.materialize import materialize
from tasks.grading import eval_script, grade, patched_files
from tasks.registry import get_suite
from tests.conftest import bwrap_works

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


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


def test_a_patch_that_breaks_a_passing_test_is_a_regression(instances, tmp_path):
    inst = instances[0]
    name = inst.repo.split("/")[-1]
    repo = tmp_path / name
    materialize(name, repo)
    subprocess.run(["git", "apply", "-"], input=inst.patch, text=True, cwd=repo, check=True)
    init = repo / name / "__init__.py"
    init.write_text(init.read_text() + "raise RuntimeError('broken by the patch')\n")
    patch = subprocess.run(["git", "diff"], cwd=repo, capture_output=True, text=True, check=True).stdout
    r = grade(inst, patch)
    assert r.patch_applied and not r.resolved and not r.tampering
    assert set(r.pass_to_pass_failure) == set(inst.PASS_TO_PASS)


def test_eval_script_has_swebench_markers(instances):
    inst = instances[0]
    script = eval_script(inst)
    assert ">>>>> Start Test Output" in script and ">>>>> End Test Output" in script
    for f in patched_files(inst.test_patch):
        assert f in script


# -- patches that game the tests ------------------------------------------------------------------------

FORCE_PASS = """import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.outcome, report.longrepr = "passed", None
"""

SHADOW_PYTEST = """import os
import sys

here, saved = os.getcwd(), list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
import pytest  # noqa: E402  (the real one, while this directory is off the path)

sys.path[:] = saved


class Cheat:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.failed:
            report.outcome, report.longrepr = "passed", None


raise SystemExit(pytest.main(sys.argv[1:], plugins=[Cheat()]))
"""


def new_file(path: str, text: str) -> str:
    lines = text.splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


GIT_HOOK = "#!/bin/sh\ncat > /testbed/conftest.py <<'PY'\n" + FORCE_PASS + "PY\n"
"""Run by the eval script's `git checkout` (git apply refuses `.git/` paths; SWE-bench's `patch` fallback writes it)."""

ATTACKS = {
    "conftest hook": new_file("conftest.py", FORCE_PASS),
    "git hook": new_file(".git/hooks/post-checkout", GIT_HOOK).replace("new file mode 100644", "new file mode 100755"),
    "pytest.ini plugin": new_file("pytest.ini", "[pytest]\naddopts = -p evil_plugin\n")
                         + new_file("evil_plugin.py", FORCE_PASS),
    "shadowing module": new_file("pytest.py", SHADOW_PYTEST),
}


@pytest.fixture(params=["docker", "local"])
def backend(request, instances, tmp_path_factory):
    """(sandbox config, the first bundled instance) on a backend; locally its image is a workspace directory."""
    inst = instances[0]
    if request.param == "docker":
        return SandboxConfig(), inst
    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    name = inst.repo.split("/")[-1]
    workspace = tmp_path_factory.mktemp("local-image") / name
    materialize(name, workspace)
    config = SandboxConfig(backend="local")
    with start_sandbox(config, workspace=workspace) as sb:
        probe = sb.exec("python3 -c 'import pytest'", timeout=60)
    if probe.exit_code != 0:  # the bundled tests need it; the local sandbox sees only the host's /usr
        pytest.skip("the local sandbox's python3 cannot import pytest here (it sees only the host's /usr)")
    return config, inst.model_copy(update={"image": str(workspace)})


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_gamed_tests_do_not_resolve_an_unfixed_instance(backend, attack):
    config, inst = backend
    patch = ATTACKS[attack]
    trusted = grade(inst, patch, config, guard_patch=False)
    assert trusted.resolved, (attack, trusted.log_tail[-1500:])  # the attack works where grading trusts it
    r = grade(inst, patch, config)
    assert r.patch_applied and not r.resolved and r.tampering, (attack, r.log_tail[-1500:])
    assert sorted(r.fail_to_pass_failure) == sorted(inst.FAIL_TO_PASS)  # the tests ran, unpatched
    assert not r.pass_to_pass_failure and not r.infra_error


def test_gold_still_resolves_and_tests_the_agent_wrote_do_not_count(backend):
    config, inst = backend
    own_test = new_file("tests/test_mine.py", "def test_mine():\n    assert False\n")
    r = grade(inst, inst.patch + own_test, config)
    assert r.resolved and not r.tampering and r.ignored_files == ["tests/test_mine.py"], r.log_tail[-1500:]
    cheat = grade(inst, inst.patch + ATTACKS["conftest hook"], config)
    assert not cheat.resolved and cheat.tampering == [
        "conftest.py: a conftest.py, which pytest runs before the tests (its hooks can rewrite their results)"]
