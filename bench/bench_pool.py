"""Getting a ready sandbox: warm-pool acquire + reset against `docker run` of a fresh container.

Both sides give a container at a clean repository, ready for commands, from the same image with the
same limits; the `docker run` side is timed until the CLI returns (the container is started), so it
is a lower bound for a fresh sandbox. Target: pool under 50 ms median and at least 5x faster.

    .venv/bin/python bench/bench_pool.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sandbox import BASE_IMAGE, SandboxConfig
from sandbox.docker import DockerSandbox
from sandbox.pool import SandboxPool


def make_repo(path: Path) -> Path:
    path.mkdir()
    for i in range(50):
        (path / f"mod{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 20)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run([*git, "init", "-q"], cwd=path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=path, check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    config = SandboxConfig()
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo")
        pool_times = []
        with SandboxPool(lambda: DockerSandbox.start(config, workspace=repo), size=2) as pool:
            pool.release(pool.acquire())
            for _ in range(args.rounds):
                t = time.perf_counter()
                sb = pool.acquire()
                sb.reset()
                pool_times.append(time.perf_counter() - t)
                sb.write_file("mod1.py", "dirty\n")  # the agent's work, undone by the next reset
                pool.release(sb)
                time.sleep(0.05)
        run_times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            cid = subprocess.run(["docker", "run", "-d", "--network", "none", "--cpus", "1", "--memory", "2g",
                                  "--pids-limit", "512", BASE_IMAGE, "sleep", "infinity"],
                                 check=True, capture_output=True, text=True).stdout.strip()
            run_times.append(time.perf_counter() - t)
            subprocess.run(["docker", "rm", "-f", cid], check=True, capture_output=True)
    pool_ms, run_ms = statistics.median(pool_times) * 1000, statistics.median(run_times) * 1000
    table = Table(title=f"ready sandbox, median of {args.rounds}")
    for col in ("method", "median ms", "Evolve is x faster"):
        table.add_column(col, justify="right")
    table.add_row("Evolve pool acquire + reset", f"{pool_ms:.1f}", "1.0")
    table.add_row("docker run (fresh container)", f"{run_ms:.1f}", f"{run_ms / pool_ms:.1f}")
    Console().print(table)
    ok = pool_ms < 50 and run_ms / pool_ms >= 5
    Console().print(f"target (< 50 ms and >= 5x vs docker run): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
