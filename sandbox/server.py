"""The in-sandbox command server. Its source is sent to `python3 -u -c` inside every sandbox.

It reads one JSON request per line on stdin and writes one JSON reply per line on stdout, so a command
costs a pipe round trip and a fork, not a `docker exec` (an HTTP round trip to the daemon and a new
process namespace entry). A `connect` request moves the conversation onto a unix socket the host listens
on, in a directory it shares read-only with the sandbox, which skips the daemon's relay of stdin/stdout
(see `sandbox/docker.py`). It keeps output bounded (head + tail), kills a timed-out command's whole
process group, keeps `cd`/`export` state per named shell session, and kills stray processes on reset.
Commands run in the environment of an interactive shell of the image (see `_capture_user_env`).

Against its own commands: the server is non-dumpable (`_guard`: no ptrace, `pidfd_getfd` or /proc/PID/fd of it by
processes without CAP_SYS_PTRACE), echoes each request's random `id` in its reply, and reads or writes only regular
files, never blocking on a FIFO, at most `max_bytes`, within `FILE_SECONDS`.

Stdlib only and Python >= 3.6 syntax: it runs on whatever python3 the task image has.
"""

import base64
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time

STATE_DIR = "/tmp/.evolve-sessions"
PROTECTED = set()  # pids alive when the server started (init, the container's main process)
USER_ENV = []  # [dict]: the environment of an interactive shell in this image, captured once
SHELL_ONLY = ("PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2", "COLUMNS", "LINES", "HISTFILE")


def _capture_user_env(timeout=60):
    """The exported environment of `bash -i` here: what a user of the image gets in a shell. SWE-bench
    images activate their environment (`conda activate testbed`) only from /root/.bashrc, behind the usual
    "not interactive: return" guard, so a plain `bash -c` would get the system python. One shell, once
    per server: commands then start with this environment at no extra cost."""
    base = dict(os.environ)
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(["/bin/bash", "-i", "-c", "env -0 >&%d" % w], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(w,),
                                start_new_session=True, env=base, cwd=base.get("HOME") or "/")
    except OSError:
        os.close(r)
        os.close(w)
        return base
    os.close(w)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            break
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        data += chunk
    os.close(r)
    try:
        ok = proc.wait(max(deadline - time.monotonic(), 0.001)) == 0
    except subprocess.TimeoutExpired:  # a .bashrc that hangs: the plain environment
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        ok = False
    if not ok or not data:
        return base
    env = {}
    for item in bytes(data).split(b"\0"):
        key, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
        if sep and key and key not in SHELL_ONLY:
            env[key] = value
    return env


def user_env():
    if not USER_ENV:
        USER_ENV.append(_capture_user_env())
    return USER_ENV[0]


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _kill_strays():
    """Kill every process that was not there at start, except this server."""
    me = os.getpid()
    killed = 0
    for _ in range(3):
        victims = [p for p in _pids() if p not in PROTECTED and p != me]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        _reap()
        time.sleep(0.005)
    return killed


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run(cmd, timeout, cwd, env, max_output):
    """Run `cmd` in bash; return (exit_code, output bytes, truncated, timed_out, total_bytes)."""
    proc = subprocess.Popen(["/bin/bash", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
    fd = proc.stdout.fileno()
    half = max(max_output // 2, 1)
    head, tail = bytearray(), bytearray()
    total = 0
    timed_out = False
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            timed_out = True
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        total += len(chunk)
        if len(head) < half:
            take = half - len(head)
            head += chunk[:take]
            chunk = chunk[take:]
        if chunk:
            tail += chunk
            if len(tail) > half:
                del tail[: len(tail) - half]
    if not timed_out:
        try:
            code = proc.wait(max(deadline - time.monotonic(), 0.001))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        code = -9
        proc.wait()
    proc.stdout.close()
    truncated = total > len(head) + len(tail)
    if truncated:
        out = bytes(head) + ("\n[... %d bytes omitted ...]\n" % (total - len(head) - len(tail))).encode() + bytes(tail)
    else:
        out = bytes(head) + bytes(tail)
    return code, out, truncated, timed_out, total


def _session_wrap(cmd, name):
    """A named shell session: the command starts by sourcing the session's saved state (its `cd` and its
    exported variables) and saves it again on exit, with bash builtins only (no extra process)."""
    state = os.path.join(STATE_DIR, name.replace("/", "_"))
    save = '__evolve_rc=$?; { printf "cd %%q\\n" "$PWD"; export -p; } > %s 2>/dev/null; exit $__evolve_rc' % state
    return "source %s 2>/dev/null\ntrap '%s' EXIT\n%s" % (state, save, cmd)


def handle_exec(req):
    cmd = req["cmd"]
    timeout = float(req.get("timeout") or 60)
    max_output = int(req.get("max_output") or 100000)
    cwd = req.get("cwd")
    env = dict(user_env())
    env.update(req.get("env") or {})
    if req.get("session"):  # cwd is where a new session starts; later it keeps its own
        cmd = _session_wrap(cmd, req["session"])
    start = time.monotonic()
    code, out, truncated, timed_out, total = _run(cmd, timeout, cwd, env, max_output)
    return {"exit_code": code, "output": out.decode("utf-8", "replace"), "truncated": truncated,
            "timed_out": timed_out, "total_bytes": total, "seconds": time.monotonic() - start}


FILE_SECONDS = 30.0
"""A file read or write that takes longer is cut (SIGALRM) and reported as an error."""
MAX_READ = 64 << 20
"""Bytes a read returns when the request names no bound."""


ARMED = []  # non-empty while a timed file operation runs


class _Deadline(Exception):
    pass


def _alarm(signum, frame):
    if ARMED:  # a SIGALRM a command sends at another time changes nothing
        raise _Deadline()


def _within(seconds, fn, *args):
    """`fn(*args)` cut off by SIGALRM after `seconds` (a blocked read of a file that never ends or answers)."""
    ARMED.append(True)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    except _Deadline:
        raise TimeoutError("gave up after %.0f s" % seconds)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        del ARMED[:]


def _kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path, flags):
    """A descriptor of `path` only when it is a regular file. Checked before opening (opening a device can act) and
    again on the open descriptor (the path may be swapped meanwhile); O_NONBLOCK keeps a FIFO from blocking."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            raise
    else:
        if not stat.S_ISREG(mode):
            raise ValueError("%s is %s, not a regular file" % (path, _kind(mode)))
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0), 0o644)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ValueError("%s is %s, not a regular file" % (path, _kind(mode)))
    return fd


def _read_bounded(path, limit):
    fd = _open_regular(path, os.O_RDONLY)
    try:
        data = bytearray()
        while len(data) <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
        size = os.fstat(fd).st_size
        raise ValueError("%s is %s bytes, over the limit of %d bytes for one read"
                         % (path, size if size > limit else "more than %d" % limit, limit))
    finally:
        os.close(fd)


def handle_read(req):
    limit = int(req.get("max_bytes") or MAX_READ)
    return {"data": base64.b64encode(_within(FILE_SECONDS, _read_bounded, req["path"], limit)).decode()}


def _write(path, data):
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def handle_write(req):
    _within(FILE_SECONDS, _write, req["path"], base64.b64decode(req["data"]))
    return {}


def handle_reset(req):
    killed = _kill_strays()
    for name in os.listdir(STATE_DIR) if os.path.isdir(STATE_DIR) else []:  # forget every shell session
        os.unlink(os.path.join(STATE_DIR, name))
    reply = handle_exec({"cmd": req["cmd"], "timeout": req.get("timeout", 120), "cwd": req.get("cwd")})
    reply["killed"] = killed
    return reply


HANDLERS = {"exec": handle_exec, "read": handle_read, "write": handle_write, "reset": handle_reset,
            "ping": lambda req: {"pid": os.getpid()}, "env": lambda req: {"env": user_env()}}


def _send(out, reply):
    out.write(json.dumps(reply).encode() + b"\n")
    out.flush()


def _connect(path, token, out, timeout=10.0):
    """Connect to the unix socket the host listens on at `path` (a read-only directory the host shares with
    the sandbox) and introduce this server with `token`; the connection, or None (after saying why on the
    current channel) where the host's socket cannot be reached (e.g. a Docker daemon on another machine)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
        conn.sendall(token.encode() + b"\n")
    except OSError as e:
        conn.close()
        _send(out, {"connected": False, "error": "connect: %s" % e})
        return None
    conn.settimeout(None)
    _send(out, {"connected": True})
    return conn


def _guard():
    """Make this process non-dumpable (prctl PR_SET_DUMPABLE 0): the kernel then refuses ptrace, pidfd_getfd,
    process_vm_readv/writev and /proc/PID/{mem,fd,environ,...} on it to every process without CAP_SYS_PTRACE,
    which no sandbox grants, so a command of the same uid can neither read the server's requests nor write into
    its channel. Children get their dumpable flag back when they exec. True when it took effect."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0 and libc.prctl(3, 0, 0, 0, 0) == 0  # PR_SET/GET_DUMPABLE
    except Exception:  # no ctypes in this image's python: the request ids still tie replies to requests
        return False


def main():
    guarded = _guard()
    # As the local sandbox's pid 1 the kernel drops every signal a command sends unless a handler exists: no
    # KeyboardInterrupt handler, and the SIGALRM one acts only while armed.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, _alarm)
    PROTECTED.update(_pids())
    try:
        os.makedirs(STATE_DIR, exist_ok=True)
    except OSError:
        pass
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    _send(out, {"ready": True, "guarded": guarded})
    while True:
        line = inp.readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            if req.get("op") == "connect":
                conn = _connect(req["path"], req["token"], out)
                if conn is not None:  # from here on the socket carries the conversation
                    inp, out = conn.makefile("rb"), conn.makefile("wb")
                continue
            reply = HANDLERS[req["op"]](req)
        except Exception as e:  # reported to the host as an error reply, the server keeps going
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        _reap()
        if isinstance(req, dict) and "id" in req:  # the reply names the request it answers
            reply["id"] = req["id"]
        _send(out, reply)


if __name__ == "__main__":
    main()
