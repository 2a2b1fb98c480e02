"""Runs inside a source's sandbox (stdlib and pytest only): the test suite once per bug, many bugs per call.

    python3 container_runner.py JOB.json OUT.jsonl

JOB holds pytest's arguments, a timeout and a list of bugs (`id`, `file`, `content`, optionally its own `args`;
a bug without `file` runs the unchanged repository). For each bug the file is overwritten, the suite runs in a
child forked from this process (pytest is imported once, here, before any code of the repository: the child
imports the repository fresh, as `python3 -m pytest` would), and the file is put back. Each result is one JSON
line: the `-rA` status lines (read on the host by swebench's pytest log parser), the first failure's report,
seconds, and whether the run timed out. The first failure is reported in pytest's `short` style whatever `--tb`
says (the runs pass `--tb=no`: formatting every failure of a bug that breaks a hundred tests would cost more than
running them).
With `coverage` (a list of the code files), the child also records which functions of those files each test file
ran (calls while a test file is collected or its tests run count for that file; others, as in a session fixture,
for every file: key "") and which of their lines ran at all.
"""

import json
import os
import signal
import sys
import threading
import time

import pytest  # imported before any repository code, shared by every forked run

STATUS = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
WORKDIR = "/testbed"
FAIL_PATH = "/tmp/evolve-synth-failure.txt"


class Recorder:
    """A pytest plugin: the first failure's report in `short` style, and which test file is running."""

    def __init__(self):
        self.first_failure = None
        self.current = ""
        self.mismatch = False
        """A test's node id does not start with its file's path from /testbed (pytest's rootdir is elsewhere)."""

    def _relative(self, path):
        return os.path.relpath(str(path), WORKDIR)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        path = getattr(collector, "path", None)
        module = isinstance(collector, pytest.Module) and path is not None
        if module:
            self.current = self._relative(path)
        outcome = yield
        if module:
            self.current = ""
        rep = outcome.get_result()
        if rep.failed and self.first_failure is None:
            self.first_failure = str(rep.longrepr)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = self._relative(item.path)
        self.mismatch = self.mismatch or item.nodeid.split("::")[0] != self.current
        yield
        self.current = ""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        config = item.config
        first = call.excinfo is not None and self.first_failure is None
        style = config.option.tbstyle
        if first:
            config.option.tbstyle = "short"
        outcome = yield
        config.option.tbstyle = style
        rep = outcome.get_result()
        if first and rep.failed:
            self.first_failure = str(rep.longrepr)


def _tracer(recorder, calls, lines, code_files):
    """A `sys.settrace` function: calls of functions of ``code_files`` by the running test file, and their lines."""
    def local(frame, event, arg):
        if event == "line":
            lines.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def trace(frame, event, arg):
        code = frame.f_code
        if code.co_filename not in code_files:
            return None
        calls.setdefault(recorder.current, set()).add((code.co_filename, code.co_firstlineno))
        lines.add((code.co_filename, frame.f_lineno))
        return local
    return trace


def _coverage_json(calls, lines, mismatch):
    def rel(path):
        return path[len(WORKDIR) + 1:]
    return {"calls": {k: sorted([rel(f), n] for f, n in v) for k, v in calls.items()},
            "lines": sorted([rel(f), n] for f, n in lines), "mismatch": mismatch}


def _child(args, log_path, cov_path, cov_files, bugged, fail_path):
    os.setpgid(0, 0)
    sys.dont_write_bytecode = bugged  # a bugged module's bytecode is never cached (see `write_bug`)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.path.insert(0, os.getcwd())  # what `python3 -m pytest` does
    calls, lines = {}, set()
    recorder = Recorder()
    code = 3
    try:
        if cov_path:
            tracer = _tracer(recorder, calls, lines, {os.path.join(WORKDIR, f) for f in cov_files})
            sys.settrace(tracer)
            threading.settrace(tracer)
        code = int(pytest.main(list(args), plugins=[recorder]))
    except BaseException as e:  # noqa: BLE001 - reported in the log
        print(f"evolve runner: pytest raised {type(e).__name__}: {e}")
    finally:
        sys.settrace(None)
        if cov_path:
            with open(cov_path, "w") as f:
                json.dump(_coverage_json(calls, lines, recorder.mismatch), f)
        with open(fail_path, "w") as f:
            f.write(recorder.first_failure or "")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_suite(args, timeout, log_path, cov_path=None, cov_files=(), bugged=False, fail_path=FAIL_PATH):
    """Fork, run pytest in the child, wait at most ``timeout`` seconds. Returns (exit code, timed out, seconds)."""
    start = time.time()
    pid = os.fork()
    if pid == 0:
        _child(args, log_path, cov_path, cov_files, bugged, fail_path)
    deadline = start + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False, time.time() - start
        if time.time() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return -9, True, time.time() - start
        time.sleep(0.005)


def write_bug(path, content):
    """Overwrite ``path``; returns what `restore` needs. The bugged file's mtime is set 1000 s before the
    original's: Python checks cached bytecode by mtime and size, bugged bytecode is never written, and every
    bytecode cached for this file (by runs of the original) has an mtime at or after the original's, so a
    stale `.pyc` can never stand in for the bug, nor the bug's for the original."""
    st = os.stat(path)
    with open(path, "rb") as f:
        original = f.read()
    with open(path, "wb") as f:
        f.write(content)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 1000 * 10**9))
    return original, st.st_atime_ns, st.st_mtime_ns


def restore(path, content, atime_ns, mtime_ns):
    with open(path, "wb") as f:
        f.write(content)
    os.utime(path, ns=(atime_ns, mtime_ns))


def summarise(log, first_failure=""):
    """The status lines of `-rA`, the first failure's report (for the issue text; from the log when the recorder
    has none) and the last line."""
    lines = log.splitlines()
    status = [ln for ln in lines if ln.startswith(STATUS)]
    failure = first_failure.splitlines()
    if not failure and ("= FAILURES =" in log or "= ERRORS =" in log):
        start = next(i for i, ln in enumerate(lines) if "= FAILURES =" in ln or "= ERRORS =" in ln)
        for ln in lines[start + 1:]:
            if ln.startswith("_") and failure and ln.strip("_ ") and failure[0] != ln:
                break
            if ln.startswith("=") and failure:
                break
            failure.append(ln)
    tail = [ln for ln in lines[-3:] if ln.strip()]
    return status, "\n".join(failure[:80])[:6000], tail[-1] if tail else ""


def main():
    job_path, out_path = sys.argv[1], sys.argv[2]
    with open(job_path) as f:
        job = json.load(f)
    os.chdir(WORKDIR)
    log_path = "/tmp/evolve-synth-run.log"
    with open(out_path, "w") as out:
        for bug in job["bugs"]:
            path = bug.get("file")
            original = write_bug(path, bug["content"].encode()) if path else None
            cov = "/tmp/evolve-synth-cov.json" if bug.get("coverage") is not None else None
            if os.path.exists(FAIL_PATH):
                os.remove(FAIL_PATH)
            try:
                code, timed_out, seconds = run_suite(bug.get("args") or job["args"], job["timeout"], log_path, cov,
                                                     bug.get("coverage") or (), bool(path))
            finally:
                if path:
                    restore(path, *original)
            with open(log_path, errors="replace") as f:
                log = f.read()
            first = ""
            if os.path.exists(FAIL_PATH):
                with open(FAIL_PATH, errors="replace") as f:
                    first = f.read()
            status, failure, last = summarise(log, first)
            result = {"id": bug["id"], "exit": code, "timed_out": timed_out, "seconds": round(seconds, 3),
                      "status": status, "failure": failure, "last": last}
            if cov:
                with open(cov) as f:
                    result["covered"] = json.load(f)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
