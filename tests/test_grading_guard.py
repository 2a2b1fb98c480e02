"""What grading refuses to run, decided from a patch's files alone (the Docker attacks are in
test_grading_bundled.py); the install-step instrumentation; swebench's names for rows and images."""

from __future__ import annotations

import subprocess

import pytest

from records import TaskInstance
from tasks.guard import dirs_of_tests, patch_paths, review
from tasks.install_check import MARK, install_exit_codes, instrument


def new_file(path: str, text: str) -> str:
    lines = text.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}")


def modify(path: str, old: str, new: str) -> str:
    return (f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -1 +1 @@\n-{old}\n+{new}\n")


def test_patch_paths_sees_every_side():
    patch = (new_file("conftest.py", "x = 1") + modify("pkg/mod.py", "a", "b")
             + "diff --git a/old.py b/pytest.py\nsimilarity index 100%\nrename from old.py\nrename to pytest.py\n"
             + "--- orig/plain.py\n+++ new/plain.py\n@@ -1,2 +1 @@\n-a\n--- conftest.sql comment\n+b\n"
             + "*** a/ctx.py\n--- b/ctx.py\n***************\n*** 1 ****\n! a\n--- 1 ----\n! b\n")
    assert patch_paths(patch) == ["conftest.py", "pkg/mod.py", "old.py", "pytest.py", "plain.py", "ctx.py"]
    assert patch_paths("") == []


BASE = {  # the repository at its base commit
    "setup.cfg": "[metadata]\nname = pkg\n[tool:pytest]\naddopts = -q\n",
    "pyproject.toml": '[project]\nname = "pkg"\n',
    "tox.ini": "[tox]\nenvlist = py3\n",
    "pkg/__init__.py": "",
    "tests/test_a.py": "def test_a(): pass\n",
    "tests/helpers.py": "X = 1\n",
}


def decide(after: dict[str, str | None], test_patch_files=("tests/test_a.py",), roots=("",)):
    def read(path, before):
        return BASE.get(path) if before else after.get(path, BASE.get(path))

    def existed(path):
        return any(p == path or p.startswith(path + "/") for p in BASE)

    return review(list(after), test_patch_files=list(test_patch_files), existed=existed, read=read,
                  importable={"pytest", "_pytest", "os", "json", "numpy"}, path_roots=list(roots))


@pytest.mark.parametrize("after", [
    {"conftest.py": "import pytest"},
    {"pkg/conftest.py": "import pytest"},
    {"pytest.ini": "[pytest]\naddopts = -p evil\n"},
    {"sub/pytest.ini": ""},
    {"setup.cfg": "[metadata]\nname = pkg\n[tool:pytest]\naddopts = -p evil\n"},
    {"tox.ini": "[tox]\nenvlist = py3\n[pytest]\naddopts = -p evil\n"},
    {"pyproject.toml": '[project]\nname = "pkg"\n[tool.pytest.ini_options]\naddopts = "-p evil"\n'},
    {"pyproject.toml": '[project]\nname = "pkg"\n[project.entry-points.pytest11]\nevil = "evil"\n'},
    {"setup.py": "setup(entry_points={'pytest11': ['evil = evil']})"},
    {"sitecustomize.py": "import evil"},
    {"evil.pth": "import evil"},
    {"pytest.py": "print('PASSED')"},
    {"_pytest/__init__.py": ""},
    {"json.py": ""},
    {"src/pytest.py": ""},
    {".git/hooks/post-checkout": "#!/bin/sh"},
    {".git/config": "[core]\n\tfsmonitor = ./evil"},
])
def test_what_changes_how_tests_run_is_tampering(after):
    roots = ("", "src")
    r = decide(after, roots=roots)
    assert len(r.tampering) == 1 and r.restore == list(after), r
    assert not r.ignored


@pytest.mark.parametrize("after", [
    {"pkg/core.py": "fixed"},
    {"setup.cfg": "[metadata]\nname = pkg2\n[tool:pytest]\naddopts = -q\n"},  # another section changed
    {"pyproject.toml": '[project]\nname = "pkg"\nversion = "2"\n'},
    {"tox.ini": "[tox]\nenvlist = py3,py4\n"},
    {"sub/setup.cfg": "[flake8]\nmax-line-length = 100\n"},  # a new config file without pytest settings
    {"pkg/utils.py": ""},  # a new module that shadows nothing
    {"pkg/json.py": ""},  # inside the package: `pkg.json`, not `json`
    {"docs/os.py": ""},  # not on sys.path
])
def test_ordinary_changes_pass(after):
    r = decide(after)
    assert not r.tampering and not r.ignored and not r.restore, r


@pytest.mark.parametrize("after", [
    {"tests/test_a.py": "changed"},  # the test patch's own file (the eval script resets it anyway)
    {"tests/helpers.py": "X = 2"},  # test support next to the graded tests
    {"tests/test_new.py": "def test_new(): pass"},  # the agent's own tests
    {"pkg/test_extra.py": "def test_x(): pass"},  # a new test module elsewhere
])
def test_test_files_are_restored_without_blame(after):
    r = decide(after)
    assert not r.tampering and r.ignored == list(after) and r.restore == list(after), r


def test_the_test_commands_runner_is_tampering_but_its_test_files_are_not():
    from tasks.guard import runner_files

    script = ("#!/bin/bash\ncd /testbed\npip install -e .\n: '>>>>> Start Test Output'\n"
              "PYTHONWARNINGS=ignore bin/test -C --verbose sympy/core/tests/test_a.py\n"
              "./tests/runtests.py --settings=test_sqlite model_fields.tests\n: '>>>>> End Test Output'\n")
    runners = runner_files(script)
    assert {"bin/test", "sympy/core/tests/test_a.py", "tests/runtests.py"} <= runners
    assert "setup.py" not in runners
    after = {"bin/test": "print('PASSED')", "sympy/core/tests/test_a.py": "changed"}
    r = review(list(after), test_patch_files=["sympy/core/tests/test_a.py"], existed=lambda p: True,
               read=lambda p, before: "", importable=set(), path_roots=[""], runners=runners)
    assert r.tampering == ["bin/test: the eval script's test command runs it"]
    assert r.ignored == ["sympy/core/tests/test_a.py"]


def test_test_dirs():
    assert dirs_of_tests(["tests/model_fields/test_x.py", "sympy/core/tests/test_b.py", "test_root.py"]) == \
        ["", "sympy/core/tests", "tests"]


def test_install_steps_report_their_exit_status(tmp_path):
    script = "\n".join([
        "#!/bin/bash", "set -uxo pipefail", "cd " + str(tmp_path),
        "python -m pip install -e . --no-index --definitely-not-an-option",  # fails, like pip offline
        "git apply -v - <<'EOF_1'", "+pip install -e .", "EOF_1",  # inside a heredoc: not a command
        "pip install \\", "  --version",  # a continued command that works
        ": '>>>>> Start Test Output'", "pip install nothing-after-the-marker", ": '>>>>> End Test Output'", "",
    ])
    out = instrument(script)
    assert out.count(f'echo "{MARK}') == 2
    assert out.split("\n")[out.split("\n").index("EOF_1") - 1] == "+pip install -e ."
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip").write_text('#!/bin/sh\n[ "$2" = "--version" ] && exit 0; exit 3\n')
    (shim / "python").write_text('#!/bin/sh\nexit 1\n')
    for f in shim.iterdir():
        f.chmod(0o755)
    run = subprocess.run(["bash", "-c", out], capture_output=True, text=True,
                         env={"PATH": f"{shim}:/usr/bin:/bin"})
    assert install_exit_codes(run.stdout + run.stderr) == [1, 0]


def test_classic_rows_get_swebench_names_and_parsers():
    from tasks.spec import completed, instance_image_key, problems

    row = TaskInstance(instance_id="django__django-11099", repo="django/django", base_commit="abc",
                       FAIL_TO_PASS='["test_a (x.Y)"]', PASS_TO_PASS="[]", version="3.0")
    data = completed(row)
    assert data["log_parser"] == "parse_log_django" and data["eval_type"] == "pass_and_fail"
    assert data["image"] == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert instance_image_key("django__django-11099", None) == "sweb.eval.x86_64.django__django-11099:latest"
    found = problems(row)
    assert len(found) == 1 and found[0].startswith("no `eval_script`")
    fail_only = completed(row.model_copy(update={"repo": "eslint/eslint"}))
    assert fail_only["eval_type"] == "fail_only"
    unknown = problems(row.model_copy(update={"repo": "someone/else", "eval_script": "x"}))
    assert any("no `log_parser`" in p for p in unknown)


@pytest.mark.docker
def test_pull_from_an_unreachable_registry_fails_fast_and_clearly():
    import time

    from sandbox.base import SandboxError
    from sandbox.docker import docker_client
    from tasks.images import pull_image

    try:
        docker_client()
    except SandboxError as e:
        pytest.skip(f"Docker is not available here: {e}")

    t0 = time.time()
    # an image no registry has: fails fast whether or not a registry answers (here none does)
    why = pull_image("swebench/sweb.eval.x86_64.evolve_1776_no-such-instance-0:latest", timeout=10)
    assert why and "\n" not in why
    assert time.time() - t0 < 25
