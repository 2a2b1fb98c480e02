"""Task synthesis throughput: validated tasks per hour, and yield per bug family and per source.

Evolve (every bug of a source in one long-lived sandbox, many bugs per call of the in-sandbox runner, the
suite forked from a process that imported pytest once, the second run on the FAIL_TO_PASS tests only, the
gold patch graded there through `grade_in`) against the straightforward way (the baseline: a fresh sandbox
per test run, `python3 -m pytest` of the whole suite twice per bug, the gold patch graded by `grade` in a
fresh sandbox), measured on the same machine in the same run. Then a re-grading sample: rows drawn from the
suite graded by `tasks.grading.grade` in fresh sandboxes of their own images; every gold patch must resolve
and no empty patch may. Target: >= 1,000 validated tasks from >= 10 real PyPI packages plus the bundled
repositories in under an hour, 0 invalid rows in the sample. The machine's load average is printed: this
2-core machine is shared.

    .venv/bin/python bench/bench_synthesis.py [--n 1000] [--minutes 60] [--workers 3] [--out DIR]

A run cut short by --minutes reports its rate (tasks made / wall seconds x 3600) as well as its count; with
`--n` near 11 x the number of sources every source gets its share within a 20-minute run.
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from swebench.harness.log_parsers.python import parse_log_pytest

from synth_cpu import CpuSampler

from sandbox import SandboxConfig, start_sandbox
from tasks.grading import grade
from tasks.synth import outcomes, plan
from tasks.synth.env_image import commit_bug_command, ensure_source_image, task_image
from tasks.synth.families import FAMILIES
from tasks.synth.rows import make_row
from tasks.synth.session import SourceSession
from tasks.synth.sources import resolve
from tasks.synth.suite import SynthSuite
from tasks.synth.synthesize import Synthesis, SynthConfig

console = Console()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def naive(source_name: str, bugs: int) -> tuple[float, int]:
    """The baseline on one source: seconds per validated task, and how many were validated."""
    src = resolve([source_name])[0]
    image, commit, files = ensure_source_image(src)
    cmd = src.test_command() + " 2>&1 | grep -E '^(PASSED|FAILED|ERROR)'"
    with SourceSession(image, commit, src.pytest_argv()) as s:  # only to read the files and plan (not timed)
        contents = {f: s.read(f) for f in files}
        base, covered = s.baseline(files)
    todo = [m for m in plan.order(contents, covered, list(FAMILIES)) if m.valid(contents[m.entity.file])][:bugs]
    start, kept = time.time(), 0
    for m in todo:
        bugged = m.apply(contents[m.entity.file])
        runs = []
        for _ in range(2):
            with start_sandbox(SandboxConfig(), image=image) as sb:
                sb.write_file(m.entity.file, bugged)
                runs.append({"status": sb.exec(cmd, timeout=300, max_output=8 << 20).output.splitlines()})
            if outcomes.verdict(base, runs[:1]).reason:
                break
        v = outcomes.verdict(base, runs)
        if v.reason:
            continue
        with start_sandbox(SandboxConfig(), image=image) as sb:  # the bug committed as synthesis commits it
            sb.write_file(m.entity.file, bugged)
            bug = sb.exec(commit_bug_command(), timeout=120).output.strip().splitlines()[-1]
            gold = sb.exec(f"git diff --no-color {bug} {commit}", timeout=120, max_output=4_000_000).output
        row = make_row(source=src, source_image=image, source_commit=commit, key=m.key, bug_commit=bug, gold=gold,
                       fail_to_pass=v.fail_to_pass, pass_to_pass=v.pass_to_pass, statement="-", method="procedural",
                       family=m.family, file=m.entity.file, function=m.entity.name)
        task_image(image, commit, gold, bug, row.image)
        if grade(row, gold).resolved and not grade(row, "").resolved:
            kept += 1
    seconds = time.time() - start
    return (seconds / kept if kept else float("inf")), kept


def unfixed_ok(inst) -> bool:
    """The task's own eval script in a fresh sandbox of its image, no patch: every FAIL_TO_PASS test fails (or is
    missing) and every PASS_TO_PASS test passes (the empty patch is never resolved by definition; this runs it)."""
    with start_sandbox(SandboxConfig(), image=inst.image) as sb:
        sb.write_file("/tmp/evolve-eval.sh", inst.eval_script)
        log = sb.exec("bash /tmp/evolve-eval.sh", timeout=600, max_output=8 << 20).output
    status = parse_log_pytest(log, None)
    return all(status.get(t) != "PASSED" for t in inst.FAIL_TO_PASS) and \
        all(status.get(t) == "PASSED" for t in inst.PASS_TO_PASS)


def interleave(sources: list) -> list:
    """Sources of each kind in turn (pypi, bundled, pypi, ...): a run cut by --minutes still covers every kind."""
    kinds: dict[str, list] = {}
    for src in sources:
        kinds.setdefault(src.kind, []).append(src)
    out = []
    while any(kinds.values()):
        for items in kinds.values():
            if items:
                out.append(items.pop(0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=60.0, help="Stop the synthesis after this long.")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--sources", default="pypi,bundled")
    p.add_argument("--out", type=Path, default=Path("runs/bench-synthesis"))
    p.add_argument("--regrade", type=int, default=20, help="Rows re-graded in fresh sandboxes.")
    p.add_argument("--naive-bugs", type=int, default=8, help="Bugs the baseline validates (on inflection).")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sources = interleave(resolve(args.sources.split(",")))
    console.print(f"load average at start: {load()} ({os.cpu_count()} cores)")

    base_s, base_kept = naive("inflection", args.naive_bugs) if args.naive_bugs else (float("nan"), 0)
    console.print(f"baseline: {base_kept} validated, {base_s:.1f} s per validated task (load {load()})")

    suite = args.out / "suite.jsonl"
    syn = Synthesis(SynthConfig(out=suite, n=args.n, workers=args.workers), sources,
                    on_event=lambda s, w: console.print(f"{time.strftime('%H:%M:%S')} {s}: {w}", highlight=False))
    before = syn.journal.total()
    sampler = CpuSampler(os.getpid())
    sampler.start()
    timer = threading.Timer(args.minutes * 60, syn.stop.set)
    timer.daemon = True
    timer.start()
    start = time.time()
    reports = syn.run()
    seconds = time.time() - start
    timer.cancel()
    sampler.sample()
    sampler.done.set()
    boxes, driver = sampler.seconds()
    made = syn.journal.total() - before
    new_rows = list(syn.journal.rows.values())[before:]
    per_hour = made / seconds * 3600 if seconds else 0.0
    rows = [r for r in syn.journal.rows.values()]
    pypi = {r["extra"]["source"] for r in rows if r["extra"]["source_spec"].startswith("pypi:")}
    bundled = {r["extra"]["source"] for r in rows if r["extra"]["source_spec"].startswith("bundled:")}

    t = Table(title=f"sources ({len(sources)}) · load average at the end {load()}")
    for col in ("source", "split", "tests", "tried", "kept", "yield", "seconds", "note"):
        t.add_column(col, justify="right")
    for r in reports:
        t.add_row(r.source, r.split, str(r.tests), str(r.tried), str(r.kept),
                  f"{r.kept / r.tried:.0%}" if r.tried else "-", f"{r.seconds:.0f}", (r.refused or r.error or "")[:60])
    console.print(t)
    y = syn.journal.yields()
    ft = Table(title="yield per bug family")
    for col in ("family", "tried", "kept", "yield"):
        ft.add_column(col, justify="right")
    for fam, tried in sorted(y["tried_family"].items()):
        ft.add_row(fam, str(tried), str(y["kept_family"][fam]), f"{y['kept_family'][fam] / tried:.0%}")
    console.print(ft)
    console.print("rejections: " + ", ".join(f"{k} {v}" for k, v in y["reasons"].most_common(6)))
    console.print("phase seconds (summed over workers): " + ", ".join(f"{k} {v:.0f}" for k, v in syn.phases.items()))

    sample = random.Random(0).sample(SynthSuite(suite).instances(), min(args.regrade, len(rows)))
    SynthSuite(suite).ensure_images(sample)
    invalid = [i.instance_id for i in sample
               if not grade(i, i.patch).resolved or grade(i, "").resolved or not unfixed_ok(i)]

    ours = seconds / made if made else float("inf")
    res = Table(title="synthesis: validated tasks per hour")
    for col in ("method", "validated", "s per task", "tasks/hour", "vs baseline"):
        res.add_column(col, justify="right")
    res.add_row("baseline (fresh sandbox per run, grade() per gold)", str(base_kept), f"{base_s:.1f}",
                f"{3600 / base_s:.0f}" if base_kept else "-", "1.0")
    res.add_row(f"Evolve ({args.workers} workers)", str(made), f"{ours:.2f}", f"{per_hour:.0f}",
                f"{base_s / ours:.1f}x" if made and base_kept else "-")
    console.print(res)
    cpu = (boxes + driver) / made if made else float("inf")
    console.print(f"CPU: sandboxes {boxes:.0f} s + this process {driver:.0f} s = {cpu:.2f} CPU-s per validated task, "
                  f"i.e. {2 * 3600 / cpu:.0f} tasks/hour on 2 idle cores (the wall rate above is under load "
                  f"{load()})")
    console.print(f"{len(rows)} rows in {suite}: {len(pypi)} PyPI packages, {len(bundled)} bundled repositories; "
                  f"re-grading sample: {len(sample) - len(invalid)}/{len(sample)} valid"
                  + (f" (invalid: {', '.join(invalid)})" if invalid else ""))
    made_pypi = {r["extra"]["source"] for r in new_rows if r["extra"]["source_spec"].startswith("pypi:")}
    made_bundled = {r["extra"]["source"] for r in new_rows if r["extra"]["source_spec"].startswith("bundled:")}
    ok = len(rows) >= 1000 and len(pypi) >= 10 and bundled and seconds <= 3600 and not invalid
    rate_ok = per_hour >= 1000 and len(made_pypi) >= 10 and made_bundled and not invalid
    console.print(f"target (>= 1000 tasks from >= 10 PyPI packages + bundled in < 1 h, 0 invalid): "
                  f"{'met' if ok else 'NOT met'} by this run's count; by its rate "
                  f"({made} tasks made in {seconds / 60:.1f} min from {len(made_pypi)} PyPI packages and "
                  f"{len(made_bundled)} bundled repositories, x 60 / {seconds / 60:.1f} = {per_hour:.0f} per hour): "
                  f"{'met' if rate_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
