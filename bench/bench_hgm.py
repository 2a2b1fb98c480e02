"""HGM against its baselines in a simulated world, through the real scheduler (evolve.hgm.scheduler).

Every method runs on the same paired seeds (the same world, the same task order): HGM (clade Thompson
sampling, τ schedule, widening, 1%-quantile pick), greedy by own mean, the released code's first estimator
(10k pseudo-counts at the own mean) and DGM (its parent rule, staged evaluation, best-mean pick). It prints
the mean final true skill with 95% confidence intervals, one-sided paired t-tests of HGM against each
baseline, and the evaluations HGM's pick needs to reach each baseline's final quality, as a ratio of the
budget. Targets (anchors §1.14.7, 100 seeds): HGM beats greedy by ≥ 0.03 with p < 0.01 and DGM by ≥ 0.08,
and reaches DGM's final quality in ≤ 0.5x its evaluations, in under a minute on 2 cores.

    .venv/bin/python bench/bench_hgm.py [--seeds 100] [--world evolve.hgm.sim:MismatchWorld] [--procs 2]
"""

from __future__ import annotations

import argparse
import importlib
import math
import resource
import time
from multiprocessing import Pool

import numpy as np
from rich.console import Console
from rich.table import Table

from evolve.hgm.config import HGMConfig
from evolve.hgm.drivers import run_simulated
from evolve.hgm.policy import DGM_METHODS, _beta_cdf
from evolve.hgm.scheduler import Scheduler

METHODS: dict[str, dict] = {
    "hgm": {},
    "greedy": dict(expansion_rule="greedy"),
    "pseudo-10k": dict(expansion_rule="pseudo"),
    "dgm": dict(expansion_rule="dgm", loop="dgm", final_pick="mean", initial_expansions=0),
    "hgm-no-tau": dict(tau_schedule=False),
}
CHECK_EVERY = 10


def load_world(spec: str):
    module, _, cls = spec.partition(":")
    if not cls:
        raise SystemExit(f"--world must be MODULE:CLASS, not {spec!r}")
    return getattr(importlib.import_module(module), cls)


def one_run(args: tuple) -> tuple[str, int, float, list[float]]:
    """Final true skill and the pick's true skill every CHECK_EVERY charged evaluations."""
    world_spec, method, seed, budget, workers, dgm_method = args
    world = load_world(world_spec)(seed=seed)
    cfg = HGMConfig(seed=seed, budget=budget, dgm_method=dgm_method, **METHODS[method])
    sched = Scheduler(cfg, world.task_ids, world.root())
    curve: list[float] = []
    charged = [0]

    def on_complete(action, result, started, finished) -> None:
        if action.kind == "evaluate" and action.charged and result.status != "infra_error":
            charged[0] += 1
            if charged[0] % CHECK_EVERY == 0:
                curve.append(sched.nodes[sched.final_pick()].info["p"])

    run_simulated(sched, world, workers, on_complete)
    final = sched.nodes[sched.final_pick()].info["p"]
    curve += [final] * (budget // CHECK_EVERY - len(curve))
    return method, seed, final, curve


def t_sf(t: float, df: int) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (via the regularised incomplete beta)."""
    tail = 0.5 * _beta_cdf(df / (df + t * t), df / 2, 0.5)
    return tail if t >= 0 else 1.0 - tail


def t_crit(df: int, level: float = 0.975) -> float:
    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf(mid, df) > 1 - level else (lo, mid)
    return (lo + hi) / 2


def mean_ci(x: np.ndarray) -> tuple[float, float]:
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), t_crit(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))


def paired_p(a: np.ndarray, b: np.ndarray) -> float:
    """One-sided paired t-test p-value for mean(a − b) > 0."""
    d = a - b
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 0.0 if d.mean() > 0 else 1.0
    return t_sf(float(d.mean()) / (sd / math.sqrt(len(d))), len(d) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="evolve.hgm.sim:MismatchWorld", help="MODULE:CLASS of a simulated world")
    parser.add_argument("--seeds", type=int, default=100, help="paired seeds")
    parser.add_argument("--budget", type=int, default=800, help="evaluations per run")
    parser.add_argument("--workers", type=int, default=1, help="simulated asynchronous workers")
    parser.add_argument("--procs", type=int, default=2, help="processes")
    parser.add_argument("--methods", default="hgm,greedy,pseudo-10k,dgm",
                        help=f"comma-separated, the first is the reference; known: {', '.join(METHODS)}")
    parser.add_argument("--dgm-method", default="score_child_prop", choices=DGM_METHODS, help="DGM's parent rule")
    parser.add_argument("--check-args", action="store_true", help="parse the arguments, print them and exit")
    args = parser.parse_args()
    if args.check_args:
        print(vars(args))
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    load_world(args.world)
    jobs = [(args.world, m, s, args.budget, args.workers, args.dgm_method) for s in range(args.seeds) for m in methods]
    started = time.perf_counter()
    with Pool(args.procs) as pool:
        results = pool.map(one_run, jobs, chunksize=8)
    seconds = time.perf_counter() - started
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = cpu.ru_utime + cpu.ru_stime
    final = {m: np.zeros(args.seeds) for m in methods}
    curves = {m: np.zeros((args.seeds, args.budget // CHECK_EVERY)) for m in methods}
    for m, s, f, c in results:
        final[m][s], curves[m][s] = f, c
    ref = methods[0]
    ref_curve = curves[ref].mean(axis=0)
    console = Console(width=150)
    t = Table(title=f"{args.world} · {args.seeds} paired seeds · budget {args.budget} · {args.workers} worker(s) · "
                    f"{seconds:.1f} s wall, {cpu_seconds:.1f} s CPU, {args.procs} process(es)")
    for col in ("method", "mean final true skill", "95% CI", f"{ref} − method", "paired p, 1-sided",
                f"evals for {ref} to reach it", "ratio"):
        t.add_column(col, justify="right")
    for m in methods:
        mean, ci = mean_ci(final[m])
        row = [m, f"{mean:.3f}", f"± {ci:.3f}"]
        if m == ref:
            row += ["", "", "", ""]
        else:
            diff = final[ref] - final[m]
            target = final[m].mean()
            reach = np.flatnonzero(ref_curve >= target)
            evals = (int(reach[0]) + 1) * CHECK_EVERY if len(reach) else None
            row += [f"{diff.mean():+.3f}", f"{paired_p(final[ref], final[m]):.2g}",
                    str(evals) if evals else f"> {args.budget}",
                    f"{evals / args.budget:.2f}x" if evals else "n/a"]
        t.add_row(*row)
    console.print(t)
    targets = []
    if ref == "hgm" and {"greedy", "dgm"} <= set(methods):
        d_g, d_d = final[ref] - final["greedy"], final[ref] - final["dgm"]
        reach = np.flatnonzero(ref_curve >= final["dgm"].mean())
        ratio = (int(reach[0]) + 1) * CHECK_EVERY / args.budget if len(reach) else float("inf")
        targets = [("HGM − greedy ≥ 0.03 with p < 0.01", d_g.mean() >= 0.03 and paired_p(final[ref], final["greedy"]) < 0.01),
                   ("HGM − DGM ≥ 0.08", d_d.mean() >= 0.08), ("DGM's final quality in ≤ 0.5x its evaluations", ratio <= 0.5),
                   ("under 60 s of CPU per core (CPU s / processes)", cpu_seconds / args.procs < 60)]
    for name, ok in targets:
        console.print(f"target {name}: {'[green]met[/]' if ok else '[red]NOT met[/]'}")
    console.print(f"evals to reach: the first multiple of {CHECK_EVERY} charged evaluations at which {ref}'s pick "
                  f"(mean over seeds) is at least the method's mean final skill; ratio = that / the method's "
                  f"{args.budget} evaluations.")


if __name__ == "__main__":
    main()
