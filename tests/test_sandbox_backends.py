"""The same behaviour tests against every sandbox backend that runs here (docker and local)."""

from __future__ import annotations

import resource
import socket
import threading
from pathlib import Path

import pytest

from sandbox import SandboxConfig, start_sandbox
from sandbox.base import Sandbox, SandboxError
from tests.conftest import bwrap_works


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


def test_exec_merges_output_and_reports_exit_code(sb: Sandbox):
    r = sb.exec("echo out; echo err >&2; exit 3")
    assert r.exit_code == 3 and "out" in r.output and "err" in r.output
    assert sb.exec("pwd").output.strip() == "/testbed"


def test_session_keeps_cd_and_export(sb: Sandbox):
    sb.exec("mkdir -p sub && cd sub && export ANSWER=42", session="a")
    r = sb.exec("pwd; echo $ANSWER", session="a")
    assert r.output.split() == ["/testbed/sub", "42"]
    assert sb.exec("pwd; echo ${ANSWER:-unset}").output.split() == ["/testbed", "unset"]  # no session
    assert sb.exec("pwd", session="b").output.strip() == "/testbed"  # sessions are separate


def test_timeout_kills_the_process_tree_and_sandbox_stays_usable(sb: Sandbox):
    r = sb.exec("sleep 300 & python3 -c 'import time; time.sleep(300)'", timeout=1.5)
    assert r.timed_out and r.exit_code == -9
    assert r.seconds < 10
    left = sb.exec("ps -eo args | grep -E 'sleep 300|time.sleep' | grep -v grep || true").output
    assert left.strip() == ""
    assert sb.exec("echo next").output == "next\n"


def test_huge_output_is_truncated_in_bounded_memory(sb: Sandbox):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = sb.exec("head -c 1000000000 /dev/zero | tr '\\0' x; echo; echo END", timeout=120, max_output=20_000)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert r.truncated and r.total_bytes == 1_000_000_005
    assert len(r.output) < 21_000 and r.output.startswith("xxxx") and r.output.endswith("END\n")
    assert "bytes omitted" in r.output
    assert grown_mb < 100, f"host memory grew {grown_mb:.0f} MB for a 1 GB output"


def test_files_diff_and_reset(sb: Sandbox, tmp_path: Path):
    sb.write_file("calc.py", "def add(a, b):\n    return a - b\n")
    sb.write_file("new/mod.py", b"X = 1\n")
    assert sb.read_file("new/mod.py") == b"X = 1\n"
    sb.exec("git commit -qam 'agent commits too'")  # the diff is still against the base commit
    patch = sb.diff()
    assert "-    return a + b" in patch and "+    return a - b" in patch and "new/mod.py" in patch
    (tmp_path / "host.txt").write_text("from host")
    sb.copy_in(str(tmp_path / "host.txt"), "host.txt")
    sb.copy_out("calc.py", str(tmp_path / "calc_out.py"))
    assert "a - b" in (tmp_path / "calc_out.py").read_text()
    sb.exec("sleep 1000 >/dev/null 2>&1 &")
    sb.reset()
    assert sb.diff() == ""
    assert sb.exec("cat calc.py").output == "def add(a, b):\n    return a + b\n"
    assert "sleep 1000" not in sb.exec("ps -eo args").output


def test_snapshot_branches_from_the_middle(sb: Sandbox, backend: str):
    sb.write_file("calc.py", "def add(a, b):\n    return b + a\n")
    sb.exec("export GONE=1", session="s")
    handle = sb.snapshot()
    sb.reset()
    with start_sandbox(SandboxConfig(backend=backend), image=handle) as child:
        assert "return b + a" in child.read_file("calc.py").decode()
        assert child.base_commit == sb.base_commit
        assert "+    return b + a" in child.diff()
        child.reset()
        assert child.diff() == ""


def test_no_network(sb: Sandbox):
    # a server on the host's loopback is not reachable from inside (the sandbox has its own, or none)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            server.accept()
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=accept, daemon=True).start()
    code = (f"import socket; s=socket.socket(); s.settimeout(3); "
            f"s.connect(('127.0.0.1', {port})); print('CONNECTED')")
    r = sb.exec(f"python3 -c \"{code}\"", timeout=20)
    server.close()
    assert "CONNECTED" not in r.output and r.exit_code != 0
    interfaces = sb.exec("cat /proc/net/dev").output
    assert [ln.split(":")[0].strip() for ln in interfaces.splitlines()[2:]] == ["lo"]


def test_writes_stay_inside(sb: Sandbox, backend: str):
    r = sb.exec("touch /usr/evolve-escape && echo wrote")
    if backend == "local":  # the host's system is read-only
        assert r.exit_code != 0
    else:  # the container's own filesystem, not the host's
        assert not Path("/usr/evolve-escape").exists()


def test_local_sandbox_needs_a_workspace():
    if not bwrap_works():
        pytest.skip("bubblewrap cannot create namespaces here")
    with pytest.raises(SandboxError, match="workspace directory"):
        start_sandbox(SandboxConfig(backend="local"))


def test_a_patch_over_the_limit_is_an_error_not_a_cut_patch(sb: Sandbox, monkeypatch):
    import sandbox.base

    monkeypatch.setattr(sandbox.base, "MAX_PATCH_BYTES", 200_000)
    sb.exec("seq 1 100000 > big.txt")  # ~590 kB of patch
    with pytest.raises(SandboxError, match=r"patch .* is \d+ bytes, over the limit of 200000"):
        sb.diff()
    sb.exec("rm big.txt && seq 1 1000 > small.txt")
    assert sb.diff().rstrip().endswith("+1000")  # under the limit: the whole patch
