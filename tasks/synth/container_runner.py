"""Runs inside a source's sandbox (stdlib and pytest only): the test suite once per bug, many bugs per call.

    python3 container_runner.py JOB.json OUT.jsonl

JOB holds pytest's arguments, a timeout and a list of bugs (`id`, `file`, `content`, optionally its own `args`;
a bug without `file` runs the unchanged repository). For each bug the file is overwritten, the suite runs in a child forked from this
process (pytest is imported once, here, before any code of the repository: the child imports the repository
fresh, as `python3 -m pytest` would), and the file is put back. Each result is one JSON line: the `-rA`
status lines (read on the host by swebench's pytest log parser), the first failure's report, seconds, and
whether the run timed out. With `coverage`, the child also records which functions of `/testbed` ran.
"""

import json
import os
import signal
import sys
import threading
import time

import pytest  # noqa: F401  (imported before any repository code, shared by every forked run)

STATUS = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
WORKDIR = "/testbed"


def _tracer(seen):
    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code.co_filename.startswith(WORKDIR + "/"):
                seen.add((code.co_filename[len(WORKDIR) + 1:], code.co_firstlineno))
    return profile


def _child(args, log_path, cov_path, bugged):
    os.setpgid(0, 0)
    sys.dont_write_bytecode = bugged  # a bugged module's bytecode is never cached (see `write_bug`)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.path.insert(0, os.getcwd())  # what `python3 -m pytest` does
    seen = set()
    code = 3
    try:
        if cov_path:
            sys.setprofile(_tracer(seen))
            threading.setprofile(_tracer(seen))
        code = int(pytest.main(list(args)))
    except BaseException as e:  # noqa: BLE001 - reported in the log
        print(f"evolve runner: pytest raised {type(e).__name__}: {e}")
    finally:
        sys.setprofile(None)
        if cov_path:
            with open(cov_path, "w") as f:
                json.dump(sorted(seen), f)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_suite(args, timeout, log_path, cov_path=None, bugged=False):
    """Fork, run pytest in the child, wait at most ``timeout`` seconds. Returns (exit code, timed out, seconds)."""
    start = time.time()
    pid = os.fork()
    if pid == 0:
        _child(args, log_path, cov_path, bugged)
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


def summarise(log):
    """The status lines of `-rA`, the first failure's report (for the issue text) and the last line."""
    lines = log.splitlines()
    status = [ln for ln in lines if ln.startswith(STATUS)]
    failure = []
    if "= FAILURES =" in log or "= ERRORS =" in log:
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
            cov = "/tmp/evolve-synth-cov.json" if bug.get("coverage") else None
            try:
                code, timed_out, seconds = run_suite(bug.get("args") or job["args"], job["timeout"], log_path, cov,
                                                     bool(path))
            finally:
                if path:
                    restore(path, *original)
            with open(log_path, errors="replace") as f:
                log = f.read()
            status, failure, last = summarise(log)
            result = {"id": bug["id"], "exit": code, "timed_out": timed_out, "seconds": round(seconds, 3),
                      "status": status, "failure": failure, "last": last}
            if cov:
                with open(cov) as f:
                    result["covered"] = json.load(f)
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
