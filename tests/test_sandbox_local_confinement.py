"""Attacks on the local (bubblewrap) sandbox, as a hostile agent would try them: each must fail."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandbox import SandboxConfig, SandboxError
from tests.conftest import bwrap_works

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot create namespaces here")


@pytest.fixture
def sandbox_dir(monkeypatch) -> Path:
    """A fresh EVOLVE_SANDBOX_DIR under /tmp (pytest's own tmp_path is closed to the sandboxes' uids)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="evolve-test-sandboxes-"))
    monkeypatch.setenv("EVOLVE_SANDBOX_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sb(repo: Path, monkeypatch, sandbox_dir: Path):
    from sandbox.local import LocalSandbox

    monkeypatch.setenv("EVOLVE_TEST_SECRET", "hunter2-host-secret")
    box = LocalSandbox.start(SandboxConfig(backend="local", pids_limit=64, memory="256m"), workspace=repo)
    yield box
    box.stop()


def test_no_capabilities_and_no_remount_of_the_host_system(sb):
    status = sb.exec("grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status").output
    assert [ln.split()[1] for ln in status.splitlines()] == ["0000000000000000"] * 4
    r = sb.exec("mount -o remount,rw,bind /usr && touch /usr/evolve-escape && echo WROTE")
    assert r.exit_code != 0 and "WROTE" not in r.output
    assert not Path("/usr/evolve-escape").exists()
    assert sb.exec("unshare -U -r true").exit_code != 0  # no nested user namespace to regain capabilities
    assert sb.exec("id -u").output.strip() == "0"  # root inside, nobody outside
    if sb.host_uid is not None:
        assert sb.host_uid >= 1 << 30


def test_host_secrets_are_out_of_sight(sb):
    assert Path("/etc/shadow").exists()
    assert sb.exec("cat /etc/shadow").exit_code != 0
    assert sb.exec("ls -A /root").output.strip() == ""  # an empty home, not the host's /root
    checkout = Path(__file__).resolve()
    assert sb.exec(f"cat {checkout}").exit_code != 0  # the Evolve checkout is not mounted
    assert sb.exec(f"ls {Path.home()}/.gitconfig {Path(sys.prefix)}").exit_code != 0
    everything = sb.exec("env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'").output
    assert "hunter2-host-secret" not in everything and "EVOLVE_TEST_SECRET" not in everything
    assert len(sb.exec("ls -d /proc/[0-9]*").output.split()) < 10  # its own processes, not the host's
    assert sb.exec("ls /sys /run /home /var/lib").exit_code != 0
    assert sorted(sb.exec("env -0 | cut -z -d= -f1 | tr '\\0' ' '").output.split()) == sorted(
        ["GIT_PAGER", "HOME", "LANG", "PAGER", "PATH", "PWD", "SHLVL", "_"])


def test_writes_outside_the_workspace_do_not_reach_the_host(sb, tmp_path: Path):
    for target in ("/etc/evolve-x", "/var/evolve-x", "/evolve-x", "/usr/local/evolve-x", "/bin/evolve-x"):
        assert sb.exec(f"touch {target}").exit_code != 0, target
    assert sb.exec("echo private > /tmp/evolve-private-marker").exit_code == 0
    assert not Path("/tmp/evolve-private-marker").exists()  # the sandbox's /tmp is its own
    assert sb.exec("echo ok > /testbed/inside.txt").exit_code == 0
    assert (sb.workspace / "inside.txt").read_text() == "ok\n"


def test_symlinks_do_not_lead_host_copies_outside(sb, tmp_path: Path):
    sb.exec("ln -s /etc/shadow leak && ln -s /etc outdir && mkdir d && ln -s /etc/shadow d/leak")
    with pytest.raises(SandboxError):  # the sandbox's /etc has no shadow: the host's is never read
        sb.copy_out("leak", str(tmp_path / "leak"))
    with pytest.raises(SandboxError):  # the sandbox's /etc is read-only: the host's is never written
        sb.copy_in(__file__, "outdir/evolve-planted")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "x.txt").write_text("x")
    with pytest.raises(SandboxError):
        sb.copy_in(str(tmp_path / "tree"), "outdir/tree")
    assert not (tmp_path / "leak").exists() and not Path("/etc/evolve-planted").exists()
    assert not Path("/etc/tree").exists()
    sb.copy_out("d", str(tmp_path / "d"))  # a directory comes out with the link as a link, never its target
    assert not os.path.lexists(tmp_path / "d" / "leak")  # a link leading outside is dropped
    sb.copy_in(str(tmp_path / "tree"), "sub/tree")
    assert sb.exec("cat sub/tree/x.txt; echo; stat -c %u sub/tree/x.txt").output.split() == ["x", "0"]


def test_no_network(sb):
    r = sb.exec("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"", timeout=30)
    assert r.exit_code != 0 and "Network is unreachable" in r.output
    interfaces = sb.exec("cat /proc/net/dev").output
    assert [ln.split(":")[0].strip() for ln in interfaces.splitlines()[2:]] == ["lo"]


def test_fork_bomb_is_bounded(sb):
    peak = [0]
    stop = threading.Event()

    def count() -> None:  # the sandbox's processes, counted on the host by its uid
        while not stop.is_set():
            n = 0
            for p in os.listdir("/proc"):
                try:
                    n += p.isdigit() and os.stat(f"/proc/{p}").st_uid == sb.host_uid
                except OSError:
                    pass
            peak[0] = max(peak[0], n)
            time.sleep(0.05)

    sampler = threading.Thread(target=count, daemon=True)
    if sb.host_uid is not None:
        sampler.start()
    r = sb.exec("bomb() { bomb | bomb & }; bomb", timeout=5)
    stop.set()
    assert "Resource temporarily unavailable" in r.output or r.timed_out
    if sb.host_uid is not None:
        sampler.join()
        assert 0 < peak[0] <= 64
    sb.reset()  # kills what the bomb left
    assert sb.exec("echo alive", timeout=20).output == "alive\n"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_memory_hog_is_bounded(sb):
    r = sb.exec("python3 -c 'x = bytearray(1 << 30); print(\"GOT 1 GB\")'", timeout=60)
    assert r.exit_code != 0 and "GOT 1 GB" not in r.output
    if sb.limits.kind == "rlimit":
        pytest.skip(f"no writable cgroup here: {sb.limits.describe}; several processes are not held together")
    # four processes of 150 MB each: each under the per-process limit, together over the sandbox's 256 MB
    hog = "python3 -c 'import time; x = bytearray(150 << 20); time.sleep(3)'"
    r = sb.exec(f"for i in 1 2 3 4; do {hog} & done; wait; echo DONE", timeout=60)
    assert r.output.count("Killed") + r.output.count("MemoryError") >= 3, r.output  # at most one fits
    assert sb.exec("echo alive", timeout=20).output == "alive\n"


def test_started_from_a_short_lived_thread_it_stays_alive(repo: Path, sandbox_dir: Path):
    from sandbox.local import LocalSandbox

    box: list = []
    t = threading.Thread(target=lambda: box.append(LocalSandbox.start(SandboxConfig(backend="local"), workspace=repo)))
    t.start()
    t.join()
    time.sleep(0.3)
    try:
        assert box[0].alive() and box[0].exec("echo ok").output == "ok\n"
    finally:
        box[0].stop()
    assert list(sandbox_dir.iterdir()) == []  # stop removed the workspace


CHILD = """
import os, sys, time
sys.path.insert(0, {root!r})
from sandbox import SandboxConfig
from sandbox.local import LocalSandbox
sb = LocalSandbox.start(SandboxConfig(backend="local", run_id="dead-run"), workspace={repo!r})
snap = sb.snapshot()
print(sb._proc.pid, sb.workspace, snap, sb.limits.cgroup or "-", flush=True)
time.sleep(300)
"""


def test_killed_owner_takes_the_sandbox_along_and_prune_removes_its_leftovers(repo: Path, sandbox_dir: Path):
    from sandbox.local import LocalSandbox, prune_local

    code = CHILD.format(root=str(Path(__file__).parents[1]), repo=str(repo))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ})
    bwrap_pid, workspace, snap, cgroup = child.stdout.readline().split()
    live = LocalSandbox.start(SandboxConfig(backend="local", run_id="dead-run"), workspace=repo)
    live_snap = live.snapshot()
    try:
        assert prune_local("dead-run") == (0, 0)  # its owner is alive: kept
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        for _ in range(100):  # --die-with-parent
            if not Path(f"/proc/{bwrap_pid}").exists() or "Z" in Path(f"/proc/{bwrap_pid}/stat").read_text().split()[2]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sandbox outlived the process that started it")
        assert Path(workspace).exists() and Path(snap).exists()  # a SIGKILL leaves them behind
        assert prune_local("another-run") == (0, 0)
        r = subprocess.run([sys.executable, "-m", "evolve.cli", "sandbox", "prune", "--run", "dead-run",
                            "--no-docker"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "1 local workspaces and 1 local snapshots" in r.stdout, r.stdout + r.stderr
        assert not Path(workspace).exists() and not Path(snap).exists()
        assert cgroup == "-" or not Path(cgroup).exists()  # its memory cgroup too
        assert live.alive() and Path(live_snap).exists()  # a live owner's sandbox and snapshot stay
        owner = json.loads((live.workspace.parent / "owner.json").read_text())
        assert owner["evolve.owner_pid"] == str(os.getpid()) and owner["evolve.run"] == "dead-run"
    finally:
        live.stop()
    assert not live.workspace.exists()


def test_refuses_to_run_unconfined(repo: Path, monkeypatch, tmp_path: Path, sandbox_dir: Path):
    from sandbox import local

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SandboxError, match="bubblewrap"):
        local.LocalSandbox.start(SandboxConfig(backend="local"), workspace=repo)
    # a bubblewrap that cannot create namespaces (user namespaces disabled) fails the way the real one does
    fake = sandbox_dir.parent / f"{sandbox_dir.name}-bin" / "bwrap"  # reachable by a sandbox uid
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    local.check_host.cache_clear()
    try:
        with pytest.raises(SandboxError, match="cannot confine commands here.*No permissions"):
            local.LocalSandbox.start(SandboxConfig(backend="local"), workspace=repo)
    finally:
        local.check_host.cache_clear()
        shutil.rmtree(fake.parent)
    assert list(sandbox_dir.iterdir()) == []  # nothing left behind


def test_cgroup_v2_limits_written_where_delegated(tmp_path: Path, monkeypatch):
    """The cgroup v2 path on a simulated delegated tree (this CI host may be cgroup v1): which files are
    written, and the fallback when the controllers are not delegated."""
    from sandbox import limits

    root = tmp_path / "cgroup"
    own = root / "user.slice" / "me"
    (own / "evolve-sandboxes").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "evolve-sandboxes" / "cgroup.controllers").write_text("memory pids\n")
    monkeypatch.setattr(limits, "CGROUP_ROOT", root)
    monkeypatch.setattr(limits, "_own_cgroup", lambda controller: "/user.slice/me" if controller == "" else None)
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):  # the kernel fills a new cgroup with its control files
        real_mkdir(self, *a, **k)
        for name in ("memory.max", "memory.swap.max", "pids.max", "cgroup.procs"):
            (self / name).write_text("")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    lim = limits.Limits("sb-x", 256 << 20, 64, host_uid=1 << 30)
    cg = own / "evolve-sandboxes" / "sb-x"
    assert lim.kind == "cgroup2" and lim.cgroup == cg and "pids.max 64" in lim.describe
    assert (cg / "memory.max").read_text() == str(256 << 20) and (cg / "pids.max").read_text() == "64"
    assert (cg / "memory.swap.max").read_text() == "0"
    assert (own / "evolve-sandboxes" / "cgroup.subtree_control").read_text() == "+memory +pids"
    (own / "evolve-sandboxes" / "cgroup.controllers").write_text("cpu\n")  # not delegated: rlimits
    other = limits.Limits("sb-y", 256 << 20, 64, host_uid=1 << 30)
    assert other.kind == "rlimit" and other.cgroup is None and "RLIMIT_NPROC 64" in other.describe
