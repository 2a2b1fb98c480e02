"""`evolve hgm SUITE` (search a tree of self-modified agents) and `evolve tree show|diff|best|export`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.tree import Tree

from agent.policy import DEFAULT_POLICY, load_policy
from agent.variant import DEFAULT_VARIANT, AgentVariant
from agent.variant_dir import copy_variant, variant_diff
from evolve.errors import ConfigError
from evolve.hgm.config import HGMConfig
from evolve.hgm.search import open_search, run_search
from evolve.hgm.view import find_node, hgm_run_id, tree_summary
from evolve.markup import cells, esc
from evolve.policies import RunsRoot
from evolve.run.executor import parse_executor
from evolve.run.run_lock import RunLock
from evolve.store import RunStore, check_run_dir, owner_alive
from sandbox.prune import prune_orphans
from tasks.registry import get_suite
from tasks.suite_images import ensure_suite_images

console = Console()
tree_app = typer.Typer(help="Inspect the tree of an `evolve hgm` run.", no_args_is_help=True)


def _split_holdout(chosen: list, holdout: Optional[str], suite) -> tuple[list, list]:
    """(search tasks, held-out tasks): `--holdout N` keeps the last N chosen instances out of the search;
    `--holdout ID,ID` names instances of the suite the search never sees."""
    if not holdout:
        return chosen, []
    text = holdout.strip()
    if text.isdigit():
        n = int(text)
        if not 0 < n < len(chosen):
            raise ConfigError(f"--holdout {n}: hold out between 1 and {len(chosen) - 1} of the {len(chosen)} "
                              f"chosen instances")
        return chosen[:-n], chosen[-n:]
    ids = [i.strip() for i in text.split(",") if i.strip()]
    held = suite.select(ids, None)
    search = [i for i in chosen if i.instance_id not in set(ids)]
    if not search:
        raise ConfigError("--holdout takes every chosen instance: the search needs some")
    return search, held


def hgm_cmd(
    suite: str = typer.Argument(..., help="Suite (see `evolve tasks`)."),
    budget: int = typer.Option(800, min=1, help="Evaluations (single agent-task episodes) the search may start."),
    alpha: float = typer.Option(0.6, min=0.01, max=1.0, help="Widening exponent: expand when N^alpha >= nodes."),
    workers: int = typer.Option(1, min=1, help="Expansions and evaluations run in parallel."),
    executor: str = typer.Option("local", help="Where the sandbox work runs: local, ray (a Ray cluster started on "
                                 "this machine) or ray=ADDRESS. On Ray: evaluations, each edit by the meta-agent, "
                                 "each child's own tests and its smoke episode; here: the diagnosis, the variant "
                                 "directories and the run store."),
    policy: str = typer.Option(DEFAULT_POLICY, help="Task policy spec (the agent being evolved)."),
    meta_policy: Optional[str] = typer.Option(None, help="Policy of the diagnosis and the edit (default: --policy)."),
    root_variant: Optional[Path] = typer.Option(None, help="Variant directory of the root (default: the default)."),
    instances: Optional[str] = typer.Option(None, help="Comma-separated instance ids to search on."),
    limit: Optional[int] = typer.Option(None, min=1, help="Most instances to search on."),
    holdout: Optional[str] = typer.Option(None, help="N (the last N chosen instances) or ID,ID: never seen by the "
                                          "search; the top nodes are re-evaluated on them at the end."),
    holdout_top: int = typer.Option(3, min=1, help="How many top nodes the holdout re-evaluates."),
    privileged_diagnosis: bool = typer.Option(False, "--privileged-diagnosis",
                                              help="Show the diagnosis the hidden tests' names and results."),
    expansion_rule: str = typer.Option("hgm", help="Parent choice: hgm (clade Thompson sampling), greedy, "
                                       "pseudo (10k pseudo-counts), dgm."),
    dgm_method: str = typer.Option("score_child_prop", help="DGM parent method: random, score_prop, "
                                   "score_child_prop, best."),
    initial_expansions: int = typer.Option(5, min=0, help="Root expansions before widening takes over."),
    tau: bool = typer.Option(True, "--tau/--no-tau", help="Cool Thompson sampling with tau = B/(B-n)."),
    root_eval_charged: bool = typer.Option(False, help="Charge the root's evaluations to the budget."),
    smoke: bool = typer.Option(True, "--smoke/--no-smoke", help="Validate each child with one smoke episode."),
    max_seconds: Optional[float] = typer.Option(None, min=1, help="Stop deciding after this many seconds."),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="Stop deciding after this many policy tokens."),
    seed: int = typer.Option(0, help="Seed of the task order and every random choice."),
    out: Optional[Path] = typer.Option(None, help="Run directory; the same one resumes. Default runs/hgm-<suite>."),
) -> None:
    """Search a tree of self-modified agents (the Huxley-Gödel Machine). Resumable after any kill."""
    from pydantic import ValidationError

    # loads swebench and datasets (seconds)
    from evolve.hgm.run import build_report, check_resume, close_interrupted, evaluate_holdout, open_world

    try:
        cfg = HGMConfig(budget=budget, alpha=alpha, expansion_rule=expansion_rule, dgm_method=dgm_method,
                        loop="dgm" if expansion_rule == "dgm" else "hgm",
                        final_pick="mean" if expansion_rule == "dgm" else "quantile",
                        initial_expansions=initial_expansions, tau_schedule=tau, root_eval_charged=root_eval_charged,
                        max_seconds=max_seconds, max_tokens=max_tokens, seed=seed)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    executor_cfg = parse_executor(executor)
    out = out or Path("runs") / f"hgm-{suite}"
    check_run_dir(out, create=False)
    the_suite = get_suite(suite)
    if the_suite.kind != "swe":
        raise ConfigError(f"suite {suite!r} is a {the_suite.kind} suite; HGM evolves coding agents (use a SWE suite)")
    ids = [i.strip() for i in instances.split(",") if i.strip()] if instances else None
    chosen, held = _split_holdout(the_suite.select(ids, limit), holdout, the_suite)
    if not chosen:
        raise ConfigError("no instances to search on: the selection is empty")
    root_dir = root_variant or DEFAULT_VARIANT

    AgentVariant.load(root_dir)  # a bad root variant is a user error, before anything starts
    run_id = out.resolve().name
    config = {"suite": suite, "tasks": [i.instance_id for i in chosen], "holdout": [i.instance_id for i in held],
              "policy": policy, "meta_policy": meta_policy or policy, "root_variant": str(Path(root_dir).resolve()),
              "privileged_diagnosis": privileged_diagnosis, "workers": workers, "smoke": smoke,
              "search": cfg.model_dump(mode="json")}
    check_run_dir(out)
    ensure_suite_images(the_suite, chosen + held, status=console.status)
    with RunLock(out, f"evolve hgm {suite}"), RunStore(out) as store:
        check_resume(store, run_id, config)
        prune_orphans(run_id)
        store.put_run(run_id, "hgm", config)
        close_interrupted(store, run_id)
        with console.status("loading policies"):
            runs = RunsRoot(out.parent)
            task_pol = load_policy(policy, runs=runs)
            meta_pol = task_pol if (meta_policy or policy) == policy else load_policy(meta_policy, runs=runs)
        world = open_world(chosen, held, root_dir, task_pol, meta_pol, store, run_id, out, workers=workers,
                           executor=executor_cfg, policy_spec=policy, privileged_diagnosis=privileged_diagnosis,
                           smoke=smoke, seed=seed)
        sched = open_search(cfg, world, store, run_id)
        started = time.time()
        console.print(f"[bold]evolve hgm {esc(suite)}[/]: {len(chosen)} task(s) (+{len(held)} held out), budget "
                      f"{budget}, {workers} worker(s), policy {esc(policy)}, meta {esc(meta_policy or policy)}"
                      + (", [yellow]privileged diagnosis[/]" if privileged_diagnosis else "") + f", store {esc(out)}")
        stop = lambda: store.stop_requested(run_id, since=started)  # noqa: E731
        with Live(_progress(sched, started), console=console, refresh_per_second=1, transient=False) as live:
            def on_complete(action, result, t0, t1) -> None:
                live.update(_progress(sched, started))
                what = (f"{action.kind} {action.node.rsplit(':', 1)[-1]}"
                        + (f" on {action.task}: {result.status}" if action.kind == "evaluate" else
                           f" -> {action.child.rsplit(':', 1)[-1]}: "
                           f"{'accepted' if result.accepted else 'rejected (' + result.reason[:60] + ')'}"))
                store.log_event("hgm", run_id=run_id, what=what)
                if not console.is_terminal:
                    console.print(f"{time.time() - started:7.0f} s  {esc(what)}")

            try:
                run_search(sched, world, workers, should_stop=stop, on_complete=on_complete)
                stopped = stop()
                holdout_rows = [] if not held or stopped else evaluate_holdout(
                    world, sched, store, run_id, held, holdout_top, status=lambda what: console.status(esc(what)))
            finally:
                world.close()
        report = build_report(store, run_id, sched, holdout_rows, time.time() - started, stopped)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        store.set_run_status(run_id, "stopped" if stopped else "finished")
    _print_report(report, out)


def _progress(sched, started: float) -> Table:
    s = sched.summary()
    t = Table(title=f"HGM · {time.time() - started:.0f} s")
    for col in ("evaluations", "nodes accepted", "rejected", "expanding", "in flight", "infra errors", "best (s/n)"):
        t.add_column(col, justify="right")
    best = sched.final_pick()
    bs, bf = sched.stats.own(best)
    t.add_row(*cells(f"{s['reserved']}/{s['budget']}", s["accepted"], s["rejected"], s["expanding"], s["in_flight"],
                     s["infra_errors"], f"{best.rsplit(':', 1)[-1]} ({bs}/{bs + bf})"))
    return t


def _print_report(report: dict, out: Path) -> None:
    console.print(f"best-belief agent: [bold]{esc(report['best'])}[/] (own {report['best_own'][0]}/{sum(report['best_own'])}, "
                  f"root {report['root_own'][0]}/{sum(report['root_own'])}) · {report['nodes_attempted']} children "
                  f"attempted, {report['accepted']} accepted, {report['rejected']} rejected "
                  f"{esc(report['rejected_by_reason'] or '')} · {report['evaluations']} evaluations · {report['seconds']} s"
                  + (" · [yellow]stopped: run the same command to resume[/]" if report["stopped"] else ""))
    if report["privileged_diagnosis"]:
        console.print("[yellow]diagnoses saw the hidden tests (--privileged-diagnosis)[/]")
    for row in report["holdout"]:
        console.print(f"holdout: {esc(row['node'])} passed {row['holdout_passed']}/{row['holdout_judged']} "
                      f"(search: {row['search_own'][0]}/{sum(row['search_own'])})")
    console.print(f"report: {esc(out / 'report.json')} · inspect: evolve tree show {esc(out)}")


# --- evolve tree ----------------------------------------------------------------------------------------------
def _open(run: Path, run_id: Optional[str]):
    store = RunStore(run, readonly=True)
    return store, tree_summary(store, hgm_run_id(store, run_id))


@tree_app.command("show")
def show_cmd(run: Path = typer.Argument(..., help="Run directory of an `evolve hgm` or an `evolve loop`."),
             run_id: Optional[str] = typer.Option(None, help="HGM run id (when the store holds several).")) -> None:
    """The tree: own and clade counts, CMP estimate, 1% quantile, status; ★ marks the best-belief node."""
    store, summary = _open(run, run_id)
    store.close()
    kids: dict = {}
    for n in summary["nodes"]:
        kids.setdefault(n["parent_id"], []).append(n)

    def label(n: dict) -> str:
        s, f = n["own"]
        cs, cf = n["clade"]
        cmp_ = "—" if n["cmp"] is None else f"{n['cmp']:.2f}"
        colour = {"accepted": "green", "rejected": "red", "expanding": "yellow"}.get(n["status"], "white")
        name = n["id"].rsplit(":", 1)[-1] if summary["kind"] == "hgm" else n["id"].split(":", 1)[-1]
        text = (f"{'★ ' if n['best'] else ''}[bold]{esc(name)}[/] [{colour}]{esc(n['status'])}[/] "
                f"own {s}/{s + f} · clade {cs}/{cs + cf} · CMP {cmp_} · q01 {n['quantile']:.2f}")
        if summary["kind"] == "loop":  # both kinds of node: a code child changes the variant, a weight child the policy
            text += f" · [cyan]{esc(n['node_kind'])}[/] {esc(n['policy'])}"
            if n["champion_of"]:
                text += f" · [green]champion of g{', g'.join(str(g) for g in n['champion_of'])}[/]"
        note = n["reason"] if n["status"] == "rejected" else n["label"]
        return text + (f" · {esc(note[:70])}" if note else "")

    roots = kids.get(None, [])
    cfg = summary["config"]
    status = summary["status"]
    if status == "running" and owner_alive(run) is False:
        status = "dead: resume it with the same command"  # as the TUI says: no process holds its lock
    tree = Tree(f"{'HGM' if summary['kind'] == 'hgm' else 'loop'} run {esc(summary['run_id'])} "
                f"({esc(status)}) · suite {esc(cfg.get('suite'))} · "
                f"{len(summary['nodes'])} nodes" + (" · privileged diagnosis" if cfg.get("privileged_diagnosis") else ""))

    def add(parent_tree, n):
        branch = parent_tree.add(label(n))
        for k in kids.get(n["id"], []):
            add(branch, k)

    for r in roots:
        add(tree, r)
    console.print(tree)


@tree_app.command("diff")
def diff_cmd(node: str = typer.Argument(..., help="Node id (or its last part, e.g. n0003)."),
             run: Optional[Path] = typer.Option(None, help="Run directory of an `evolve hgm` (default: runs/RUN "
                                                "when NODE is written RUN:NODE)."),
             against: str = typer.Option("parent", help="parent (the stored diff) or root.")) -> None:
    """The change a node made (against its parent), or everything it changed against the root."""
    if against not in ("parent", "root"):
        raise ConfigError(f"--against must be parent or root, not {against!r}")
    if run is None:
        if ":" not in node:
            raise ConfigError("give --run DIR (or write the node as RUN:NODE for a run under runs/)")
        run = Path("runs") / node.split(":", 1)[0]
    store, summary = _open(run, None)
    n = find_node(summary, node)
    stored = next(x for x in store.tree(tree_id=summary["run_id"]) if x.id == n["id"])
    store.close()
    if against == "parent":
        text = stored.info.get("diff", "") if stored.parent_id else ""
    else:
        root = next(x for x in summary["nodes"] if x["parent_id"] is None)
        if not n["variant_dir"] or not Path(n["variant_dir"]).is_dir():
            raise ConfigError(f"node {n['id']} has no variant directory (rejected before its patch applied)")
        text = variant_diff(root["variant_dir"], n["variant_dir"])
    typer.echo(text if text else f"(node {n['id']} changes nothing against its {against})")


@tree_app.command("best")
def best_cmd(run: Path = typer.Argument(..., help="Run directory of an `evolve hgm`."),
             export: Optional[Path] = typer.Option(None, help="Copy the best node's variant here (a new directory)."),
             run_id: Optional[str] = typer.Option(None, help="HGM run id (when the store holds several).")) -> None:
    """The best-belief node (best 1% quantile of Beta(1+s, 1+f) over its own outcomes); --export writes its
    variant directory, usable as `evolve run --variant DIR`."""
    store, summary = _open(run, run_id)
    store.close()
    if summary["best"] is None:
        raise ConfigError(f"run {summary['run_id']} has no evaluated node yet")
    n = next(x for x in summary["nodes"] if x["id"] == summary["best"])
    console.print(f"best-belief: [bold]{esc(n['id'])}[/] own {n['own'][0]}/{sum(n['own'])} · "
                  f"q01 {n['quantile']:.3f} · {esc(n['variant_dir'])}")
    if export is not None:
        copy_variant(n["variant_dir"], export, f"best-belief node {n['id']} of HGM run {summary['run_id']}")
        console.print(f"exported to {esc(export)}: evolve run SUITE --variant {esc(export)}")


@tree_app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="Run directory of an `evolve hgm`."),
               output: Optional[Path] = typer.Option(None, help="Write the JSON here (default: stdout)."),
               run_id: Optional[str] = typer.Option(None, help="HGM run id (when the store holds several).")) -> None:
    """The whole tree as JSON: nodes with counts, CMP, quantile, status, reasons; the config; the pick."""
    store, summary = _open(run, run_id)
    store.close()
    text = json.dumps(summary, indent=2)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text)
        console.print(f"wrote {esc(output)}")
