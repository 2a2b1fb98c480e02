"""Exec overhead of a trivial command (`true`) in a running sandbox, median over N calls.

Evolve's exec (a JSON line to the in-sandbox server over its unix socket in a directory shared with the
container; also shown over the daemon's relay of an attached exec stream, the fallback, on a second
container) against `docker exec` through the CLI (what mini-swe-agent does per command) and docker-py's
`exec_run` (an exec create + start over the Engine API), all on the same running container, in one run.
Target: Evolve under 5 ms median and at least 15x less than `docker exec`.

    .venv/bin/python bench/bench_exec.py [--calls 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from rich.console import Console
from rich.table import Table

from sandbox import SandboxConfig
from sandbox.docker import DockerSandbox


def median_ms(fn, calls: int) -> float:
    for _ in range(5):
        fn()  # warm up
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with DockerSandbox.start(SandboxConfig()) as sb, \
            DockerSandbox.start(SandboxConfig(direct_channel=False)) as relayed:
        assert sb.direct and not relayed.direct
        cid = sb.container.id
        evolve = median_ms(lambda: sb.exec("true"), args.calls)
        relay = median_ms(lambda: relayed.exec("true"), args.calls)
        cli = median_ms(lambda: subprocess.run(["docker", "exec", cid, "true"], check=True), args.calls)
        py = median_ms(lambda: sb.container.exec_run(["true"]), args.calls)
    table = Table(title=f"exec overhead of `true`, median of {args.calls} calls")
    for col in ("method", "median ms", "Evolve is x faster"):
        table.add_column(col, justify="right")
    table.add_row("Evolve exec (unix socket)", f"{evolve:.2f}", "1.0")
    table.add_row("Evolve exec over the daemon's relay", f"{relay:.2f}", f"{relay / evolve:.2f}")
    table.add_row("docker exec (CLI)", f"{cli:.2f}", f"{cli / evolve:.1f}")
    table.add_row("docker-py exec_run", f"{py:.2f}", f"{py / evolve:.1f}")
    Console().print(table)
    ok = evolve < 5 and cli / evolve >= 15
    Console().print(f"target (< 5 ms and >= 15x vs docker exec): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
