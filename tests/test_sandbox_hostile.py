"""The sandbox against its own commands (issue 18, items 5, 6 and 7), on every backend that runs here.

A command may try to write replies into the command server's channel (pidfd_getfd, /proc/PID/fd), kill or stop the
server, kill the container's first process, or hand the server a FIFO, a device or a huge file to read. The host
must never take a forged reply, never wait without a deadline or buffer without a bound, and must be able to tell a
sandbox ended from inside (the agent's doing) from one ended from outside (the infrastructure's).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sandbox.channel
from sandbox import SandboxConfig, start_sandbox
from sandbox.base import Sandbox, SandboxDied, SandboxError
from sandbox.channel import PipeChannel, ServerClient
from tests.conftest import bwrap_works

FORGE = textwrap.dedent('''
    import ctypes, errno, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    server = next(int(p) for p in os.listdir("/proc") if p.isdigit() and
                  b"exec(json.loads(sys.stdin.readline()))" in open("/proc/%s/cmdline" % p, "rb").read())
    forged = json.dumps({"exit_code": 0, "output": "FORGED-BY-AGENT", "truncated": False, "timed_out": False,
                         "total_bytes": 15, "seconds": 0.0}).encode() + b"\\n"
    pidfd = libc.syscall(434, server, 0)  # pidfd_open
    for target in range(16):
        fd = libc.syscall(438, pidfd, target, 0)  # pidfd_getfd
        if fd >= 0:
            try:
                os.write(fd, forged)
                print("GOT", target)
            except OSError:
                pass
        else:
            print("getfd", target, errno.errorcode.get(ctypes.get_errno()))
    for target in range(16):
        try:
            os.write(os.open("/proc/%d/fd/%d" % (server, target), os.O_WRONLY | os.O_NONBLOCK), forged)
            print("GOT /proc", target)
        except OSError as e:
            print("proc", target, errno.errorcode.get(e.errno))
''')


@pytest.fixture(params=["docker", "local"])
def backend(request) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_ready")
    elif not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    return request.param


@pytest.fixture
def sb(backend: str, repo: Path):
    box = start_sandbox(SandboxConfig(backend=backend, pids_limit=128), workspace=repo)
    yield box
    box.stop()


# --- item 6: forged replies -------------------------------------------------------------------------

def test_a_command_cannot_write_into_the_servers_channel(sb: Sandbox):
    assert sb._client.guarded
    sb.write_file("/tmp/forge.py", FORGE)
    r = sb.exec("python3 /tmp/forge.py", timeout=60)
    assert "FORGED" not in r.output and "GOT" not in r.output, r.output
    assert "getfd 1 EPERM" in r.output, r.output  # the kernel refuses: the server is not dumpable
    for i in range(3):  # every later reply answers its own request
        assert sb.exec(f"echo real-{i}").output == f"real-{i}\n"
    assert "FORGED" not in sb.diff()


def test_a_reply_that_answers_another_request_ends_the_sandbox_as_from_inside(tmp_path: Path):
    """A server that answers with a line not tied to the request (as a forger without the request's id would)."""
    fake = tmp_path / "fake_server.py"
    fake.write_text(textwrap.dedent('''
        import json, sys
        sys.stdin.readline()  # the server source
        print(json.dumps({"ready": True, "guarded": True}), flush=True)
        for line in sys.stdin:
            req = json.loads(line)
            print(json.dumps({"id": "0" * 32, "exit_code": 0, "output": "FORGED-BY-AGENT", "truncated": False,
                              "timed_out": False, "total_bytes": 1, "seconds": 0.0}), flush=True)
    '''))
    proc = subprocess.Popen([sys.executable, str(fake)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    client = ServerClient(PipeChannel(proc))
    with pytest.raises(SandboxDied, match="does not answer the exec request") as e:
        client.exec("echo hi", 10, None, 1000, None)
    assert e.value.inside and client.dead
    with pytest.raises(SandboxDied):
        client.exec("echo again", 10, None, 1000, None)  # a closed channel is never read again


# --- item 5 (sandbox half): who ended the sandbox ---------------------------------------------------

def test_killing_the_command_server_is_a_death_from_inside(sb: Sandbox, backend: str):
    if backend == "local":  # the server is the sandbox's pid 1: the kernel drops the signal, the sandbox goes on
        assert sb.exec("kill -9 $PPID; kill -STOP 1; echo $PPID").output == "1\n"
        assert sb.exec("echo alive").output == "alive\n"
        return
    with pytest.raises(SandboxDied) as e:
        sb.exec("kill -9 $PPID; sleep 5")
    assert e.value.inside, str(e.value)
    assert not sb.alive()


def test_a_stalled_command_server_counts_as_from_inside(docker_ready, repo: Path, monkeypatch):
    monkeypatch.setattr(sandbox.channel, "REPLY_GRACE", 3.0)
    box = start_sandbox(SandboxConfig(pids_limit=128), workspace=repo)
    try:
        with pytest.raises(SandboxDied, match="did not answer the exec request in time") as e:
            box.exec("kill -STOP $PPID", timeout=2)
        assert e.value.inside, str(e.value)
    finally:
        box.stop()


def test_a_server_that_never_answers_is_given_up_on_at_the_deadline(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sandbox.channel, "REPLY_GRACE", 1.0)
    monkeypatch.setattr(sandbox.channel, "FILE_SECONDS", 2.0)
    fake = tmp_path / "mute_server.py"
    fake.write_text('import json, sys, time\nsys.stdin.readline()\nprint(json.dumps({"ready": True}), flush=True)\n'
                    'time.sleep(600)\n')
    proc = subprocess.Popen([sys.executable, str(fake)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    client = ServerClient(PipeChannel(proc))
    with pytest.raises(SandboxDied, match="did not answer the exec request in time"):
        client.exec("echo hi", 1, None, 1000, None)
    with pytest.raises(SandboxDied, match="did not .* the write request in time"):  # a full pipe is bounded too
        ServerClient(PipeChannel(subprocess.Popen(
            [sys.executable, str(fake)], stdin=subprocess.PIPE, stdout=subprocess.PIPE))).write("/x", b"x" * (8 << 20))
    assert proc.poll() is not None  # closed: the mute server was killed


def test_a_reply_line_past_its_requests_bound_is_cut_off(tmp_path: Path):
    fake = tmp_path / "endless_server.py"
    fake.write_text('import json, sys\nsys.stdin.readline()\nprint(json.dumps({"ready": True}), flush=True)\n'
                    'sys.stdin.readline()\nwhile True:\n    sys.stdout.write("x" * 65536)\n')
    proc = subprocess.Popen([sys.executable, str(fake)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SandboxDied, match=r"reply to the ping request grew past 65536 bytes"):
        ServerClient(PipeChannel(proc)).request("ping")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50


def test_a_sandbox_ended_from_outside_is_not_from_inside(sb: Sandbox, backend: str):
    if backend == "docker":
        sb.container.kill()
    else:
        sb._proc.kill()
    with pytest.raises(SandboxDied) as e:
        sb.exec("echo hi")
    assert not e.value.inside, str(e.value)


def test_the_sandboxs_first_process_cannot_be_ended_from_inside(sb: Sandbox, backend: str):
    r = sb.exec("for s in TERM INT HUP QUIT USR1 ALRM STOP KILL; do kill -s $s 1; done; sleep 1; ps -o args= -p 1")
    assert "python3 -c import ctypes" in r.output if backend == "docker" else \
        "exec(json.loads" in r.output, r.output
    if backend == "docker":
        sb.container.reload()
        assert sb.container.status == "running"
    assert sb.exec("echo still here").output == "still here\n"
    sb.exec("(sleep 0.2 &) ; sleep 2")  # its orphans are reaped: no zombie stays behind a finished background job
    assert "Z" not in sb.exec("ps -eo stat= | cut -c1").output.split()


# --- item 7: bounded reads ------------------------------------------------------------------------------

def test_reading_a_fifo_or_a_device_is_refused_at_once(sb: Sandbox):
    sb.exec("mkfifo /testbed/pipe")
    with pytest.raises(SandboxError, match="pipe is a FIFO, not a regular file"):
        sb.read_file("pipe")
    with pytest.raises(SandboxError, match="character device"):
        sb.read_file("/dev/zero")
    with pytest.raises(SandboxError, match="FIFO"):
        sb.write_file("pipe", "x")  # nor written (a FIFO without a reader would block the server too)
    assert sb.exec("echo alive").output == "alive\n"


def test_reading_a_huge_file_is_refused_in_bounded_time_and_memory(sb: Sandbox):
    sb.exec("truncate -s 256M /tmp/huge && printf 'a\\nb\\n' > /tmp/small")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SandboxError, match=r"over the limit of 8388608 bytes"):
        sb.read_file("/tmp/huge", max_bytes=8 << 20)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"host memory grew {grown_mb:.0f} MB to refuse a 256 MB file"
    assert sb.read_file("/tmp/small", max_bytes=4) == b"a\nb\n"  # exactly the bound is fine
    with pytest.raises(SandboxError, match="over the limit of 3 bytes"):
        sb.read_file("/tmp/small", max_bytes=3)
