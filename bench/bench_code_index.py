"""Benchmark the tree-sitter code index against `grep -rn` on a real installed library.

    .venv/bin/python bench/bench_code_index.py [--package textual] [--queries 20]

Reads every `.py` file of an installed package (the sandbox glue hands the index the same
path -> bytes map), then times: a cold index, an incremental update after one file changes, and
find_definition / find_references / repo_map latency. Baselines: `ast.parse` of every file (what a
cold index costs with Python's own parser, extracting nothing), and one `grep -rn` subprocess per
query, which is what the agent would run without the index.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.tools.code_index import CodeIndex, is_test_path  # noqa: E402

log = logging.getLogger("bench_code_index")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name!r} is not installed in this environment; pick another with --package")
    return Path(next(iter(spec.submodule_search_locations)))


def _timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` runs, in seconds, and the last result."""
    best = float("inf")
    result: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _mean_ms(fn: Callable[[str], object], names: list[str]) -> float:
    times = []
    for n in names:
        t0 = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default="textual", help="an installed package to index (default: textual)")
    ap.add_argument("--queries", type=int, default=20, help="names to look up (default: 20)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = _package_dir(args.package)
    base = root.parent
    files = {str(p.relative_to(base)): p.read_bytes() for p in sorted(root.rglob("*.py"))}
    total_bytes = sum(len(b) for b in files.values())

    # Cold index (best of 2, a fresh index each time) vs ast.parse of every file.
    cold_s, ix = _timed(lambda: _cold(files), repeat=2)
    assert isinstance(ix, CodeIndex)
    ast_s, _ = _timed(lambda: [ast.parse(b) for b in files.values()], repeat=2)

    # Incremental: the largest file gains a function; only it is re-parsed.
    big = max(files, key=lambda p: len(files[p]))
    changed = files[big] + b"\n\ndef _bench_added(x):\n    return x\n"
    before = ix.parse_count
    incr_s, _ = _timed(lambda: ix.update({big: changed}))
    assert ix.parse_count == before + 1 and ix.find_definition("_bench_added")
    small = min(files, key=lambda p: len(files[p]) if files[p].strip() else 1 << 30)
    incr_small_s, _ = _timed(lambda: ix.update({small: files[small] + b"\n# touched\n"}))
    noop_s, _ = _timed(lambda: ix.update(files))  # nothing changed: hashes only
    ix.update({big: files[big]})

    # Query names: public classes and functions of the package, picked at random (seeded).
    rng = random.Random(0)
    pool = sorted(
        {d.name for d in ix.definitions() if d.kind in ("class", "function", "method") and not d.name.startswith("_")}
    )
    names = rng.sample(pool, min(args.queries, len(pool)))

    def_ms = _mean_ms(ix.find_definition, names)
    ref_ms = _mean_ms(ix.find_references, names)
    grep_def_ms = _mean_ms(
        lambda n: subprocess.run(
            ["grep", "-rnE", "--include=*.py", rf"^\s*(async\s+)?(def|class)\s+{n}\b", str(root)],
            capture_output=True,
        ),
        names,
    )
    grep_ref_ms = _mean_ms(
        lambda n: subprocess.run(["grep", "-rnw", "--include=*.py", n, str(root)], capture_output=True), names
    )
    ix.update({small: files[small] + b"\n# touched again\n"})  # an update drops the cached ranking
    map_cold_s, _ = _timed(lambda: ix.repo_map(4000))
    map_warm_s, _ = _timed(lambda: ix.repo_map(4000), repeat=3)

    # Precision: grep -w lines vs index references (grep also hits strings, comments, definitions).
    n_refs = sum(len(ix.find_references(n)) for n in names)
    n_grep = sum(
        len(subprocess.run(["grep", "-rnw", "--include=*.py", n, str(root)], capture_output=True).stdout.splitlines())
        for n in names
    )

    n_defs = len(ix.definitions())
    print(
        f"\ncode index bench: {args.package} ({len(files)} files, {total_bytes / 1e6:.1f} MB, "
        f"{n_defs} definitions, {sum(1 for p in files if is_test_path(p))} test files)"
    )
    rows = [
        ("cold index (all files)", cold_s * 1e3, ast_s * 1e3, "ast.parse all files"),
        (f"update: 1 file changed ({len(files[big]) // 1000} kB)", incr_s * 1e3, cold_s * 1e3, "cold index"),
        (f"update: 1 file changed ({len(files[small])} B)", incr_small_s * 1e3, cold_s * 1e3, "cold index"),
        ("update: nothing changed", noop_s * 1e3, cold_s * 1e3, "cold index"),
        (f"find_definition (mean of {len(names)})", def_ms, grep_def_ms, "grep -rnE '^\\s*(def|class) NAME'"),
        (f"find_references (mean of {len(names)})", ref_ms, grep_ref_ms, "grep -rnw NAME"),
        ("repo_map 4000 chars (after an update)", map_cold_s * 1e3, None, ""),
        ("repo_map 4000 chars (cached ranking)", map_warm_s * 1e3, None, ""),
    ]
    print(f"{'operation':<42} {'index ms':>10} {'baseline ms':>12} {'speedup':>9}  baseline")
    print("-" * 110)
    for op, ours, theirs, what in rows:
        ratio = f"{theirs / ours:8.1f}x" if theirs else ""
        theirs_s = f"{theirs:12.2f}" if theirs else " " * 12
        print(f"{op:<42} {ours:10.2f} {theirs_s} {ratio:>9}  {what}")
    print(
        f"\nreference lines for {len(names)} names: index {n_refs}, grep -w {n_grep} "
        f"(grep also counts strings, comments and the definitions themselves)"
    )


def _cold(files: dict[str, bytes]) -> CodeIndex:
    ix = CodeIndex()
    ix.update(files)
    return ix


if __name__ == "__main__":
    main()
