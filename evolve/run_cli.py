"""`evolve run SUITE` and `evolve tasks`: the CLI side of running suites, with live progress."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agent.policy import DEFAULT_POLICY
from agent.variant import DEFAULT_VARIANT
from evolve.errors import ConfigError
from evolve.markup import cells, esc
from evolve.policies import load_policies
from evolve.run.executor import parse_executor
from evolve.run.opening import parse_ids, run_dir
from evolve.toolcall_eval import run_toolcall
from rewards.combine import KNOWN_REWARDS, RewardWeights
from sandbox import SandboxConfig
from tasks.registry import get_suite, suite_names
from tasks.suite_images import ensure_suite_images

console = Console()


def run_cmd(
    suite: str = typer.Argument(..., help=f"Suite: {', '.join(suite_names())}."),
    limit: Optional[int] = typer.Option(None, help="Most instances."),
    instances: Optional[str] = typer.Option(None, help="Comma-separated instance ids."),
    policy: str = typer.Option(DEFAULT_POLICY, help="hf:PATH_OR_NAME[@ADAPTER], openai:URL[#model], "
                               "vllm:MODEL, replay:FILE_OR_RUN_DIR (stored trajectories), or version:ID|latest (a trained policy)."),
    sandbox: str = typer.Option("docker", help="Sandbox backend: docker or local."),
    workers: int = typer.Option(2, min=1, help="Episodes in parallel (their policy calls are batched)."),
    executor: str = typer.Option("local", help="Where episodes run: local (threads here), ray (a Ray cluster "
                                 "started on this machine) or ray=ADDRESS (an existing cluster)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; the same one resumes. Default runs/<suite>."),
    dataset: Optional[str] = typer.Option(None, help="Local SWE-bench dataset file (JSON/JSONL/parquet)."),
    variant: Optional[Path] = typer.Option(None, help="Agent variant directory."),
    max_steps: Optional[int] = typer.Option(None, help="Step budget per episode."),
    max_tokens_per_step: Optional[int] = typer.Option(None, help="Tokens per policy call."),
    split: Optional[str] = typer.Option(None, help="toolcall suite: train or test (default: test, or both splits "
                                        "when --instances names ids)."),
    attempts: int = typer.Option(1, help="Attempts per instance, each its own trajectory (K > 1 with --temperature > 0 "
                                 "gives offline GRPO its groups)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default: the variant's; toolcall 0)."),
    seed: int = typer.Option(0, help="Sampling seed of the toolcall attempts."),
    judge: Optional[str] = typer.Option(None, help="Policy spec of an LLM judge that also scores each trajectory."),
    reward_weights: str = typer.Option("swe=1", help="Weights of the stored `combined` reward, e.g. swe=1,judge=0.5."),
    infra_retries: int = typer.Option(2, help="Reruns of an episode whose sandbox failed (did not start, died, "
                                      "image missing), and retries of grading whose sandbox failed, before the "
                                      "instance is left as an infra or grading error."),
) -> None:
    """Run the agent (or, for `toolcall`, the policy) on a suite; grade, store, report. Resumable."""
    if sandbox not in ("docker", "local"):
        raise ConfigError(f"--sandbox must be docker or local, not {sandbox!r}")
    for name, value in (("--limit", limit), ("--max-steps", max_steps), ("--max-tokens-per-step", max_tokens_per_step)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")
    if infra_retries < 0:
        raise ConfigError(f"--infra-retries must be 0 or more, not {infra_retries}")
    if attempts < 1:
        raise ConfigError(f"--attempts must be at least 1, not {attempts}")
    if temperature is not None and temperature < 0:
        raise ConfigError(f"--temperature must be 0 or more, not {temperature}")
    if split is not None and split not in ("train", "test"):
        raise ConfigError(f"--split must be train or test (the toolcall suite's splits), not {split!r}")
    weights = parse_weights(reward_weights)  # before anything runs: a bad weight fails here, not after grading
    executor_cfg = parse_executor(executor)
    ids = parse_ids(instances)
    if instances is not None and not ids:
        raise ConfigError("--instances names no instance")
    out = run_dir(out, suite)  # an unusable --out fails at once, before the suite is even loaded
    the_suite = get_suite(suite, dataset)
    from evolve.run.start import choose_swe, choose_toolcall, open_swe_run, open_toolcall_run  # loads swebench (slow)
    from evolve.run.runner import RunConfig, report_ok, run_swe

    if the_suite.kind == "toolcall":
        with open_toolcall_run(out, policy) as policy:
            chosen, split = choose_toolcall(the_suite, ids, limit, split)
            _run_toolcall(chosen, split, policy, out, max_tokens_per_step or 256, attempts=attempts,
                          temperature=temperature or 0.0, seed=seed)
        return
    chosen = choose_swe(the_suite, ids, limit)
    cfg = RunConfig(suite=suite, instances=[i.instance_id for i in chosen], limit=limit, dataset=dataset,
                    policy=policy, variant=str(variant or DEFAULT_VARIANT), max_steps=max_steps,
                    max_tokens_per_step=max_tokens_per_step, sandbox=SandboxConfig(backend=sandbox),
                    workers=workers, out=str(out), judge=judge, rewards=weights,
                    infra_retries=infra_retries, executor=executor_cfg, attempts=attempts,
                    temperature=temperature)
    with open_swe_run(cfg, the_suite, chosen, status=console.status):  # locked until the report is out
        console.print(f"[bold]evolve run {esc(suite)}[/]: {len(chosen)} instance(s), policy {esc(cfg.policy)}, "
                      f"{workers} worker(s), store {esc(out)}")
        with console.status("loading policy"):
            pol, judge_pol = load_policies(out.parent, cfg.policy, judge)
        states = {i.instance_id: "pending" for i in chosen}
        started = time.time()

        def table() -> Table:
            t = Table(title=f"{esc(suite)} · {time.time() - started:.0f} s")
            t.add_column("instance")
            t.add_column("state")
            for iid, st in states.items():
                t.add_row(*cells(iid, st))
            return t

        with Live(table(), console=console, refresh_per_second=2, transient=False) as live:
            def on_event(instance_id: str, what: str) -> None:
                states[instance_id] = what
                live.update(table())
                if not console.is_terminal:  # a log file gets one line per event instead of a live table
                    console.print(f"{time.time() - started:6.0f} s  {esc(instance_id)}: {esc(what)}")

            report = run_swe(cfg, chosen, pol, on_event, judge_policy=judge_pol)
        _print_report(report, out)
        if report.get("stopped"):
            console.print(f"[yellow]stopped[/] ({esc(report['stopped'])}): {report['interrupted']} interrupted, "
                          f"{report['not_run']} not started; run the same command to resume")
            raise typer.Exit(130)
        if not report_ok(report):
            console.print(f"[red]not all instances were graded[/]: {report['infra_errors']} infrastructure "
                          f"error(s), {report['grading_errors']} grading error(s) (see the error column and "
                          f"{esc(out / 'report.json')}); run the same command to retry them")
            raise typer.Exit(1)


def parse_weights(text: str):
    """`swe=1,judge=0.5` -> RewardWeights; `ConfigError` for a malformed item, a non-finite number, an
    unknown reward name or a name given twice."""
    weights: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ConfigError(f"bad --reward-weights item {item!r}: write NAME=NUMBER, e.g. swe=1,judge=0.5")
        if not math.isfinite(number):
            raise ConfigError(f"bad --reward-weights item {item!r}: a weight must be a finite number")
        if name not in KNOWN_REWARDS:
            raise ConfigError(f"bad --reward-weights item {item!r}: unknown reward {name!r} "
                              f"(the rewards are {', '.join(sorted(KNOWN_REWARDS))})")
        if name in weights:
            raise ConfigError(f"--reward-weights names {name!r} twice")
        weights[name] = number
    if not weights:
        raise ConfigError("--reward-weights is empty: write NAME=NUMBER, e.g. swe=1")
    return RewardWeights(weights=weights)


def _run_toolcall(chosen, split, policy: str, out: Path, max_tokens: int, *, attempts: int = 1,
                  temperature: float = 0.0, seed: int = 0) -> None:
    with console.status("loading policy"):
        (pol,) = load_policies(out.parent, policy)
    with console.status("") as status:
        report = run_toolcall(chosen, pol, out, {"suite": "toolcall", "split": split, "policy": policy,
                                                 "attempts": attempts, "temperature": temperature, "seed": seed},
                              max_tokens=max_tokens, attempts=attempts, temperature=temperature, seed=seed,
                              on_progress=lambda d, n: status.update(f"toolcall: {d}/{n} scored"))
    t = Table(title=f"toolcall ({esc(split or 'by id')}, {report['instances']} instances x {attempts}, {esc(policy)})")
    for col in ("mean format", "mean correctness", "mean total", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(f"{report['mean_format']:.3f}", f"{report['mean_correctness']:.3f}", f"{report['mean_total']:.3f}",
              str(report["seconds"]))
    console.print(t)
    console.print(f"stored in {esc(out)}")


def _print_report(report: dict, out: Path) -> None:
    rate = "nothing graded" if report["resolved_rate"] is None else f"{report['resolved_rate']:.0%}"
    title = f"resolved {report['resolved']}/{report['instances']} ({rate})"
    for key, what in (("grading_errors", "grading errors"), ("infra_errors", "infra errors"),
                      ("interrupted", "interrupted"), ("not_run", "not run")):
        if report.get(key):
            title += f" · [red]{report[key]} {what}[/]"
    t = Table(title=f"{title} · {report['tokens']} tokens · {report['seconds']} s")
    for col in ("instance", "status", "resolved", "steps", "tokens", "seconds", "error"):
        t.add_column(col)
    for r in report["per_instance"]:
        problem = r.get("grading_error") or r.get("infra_error") or r.get("error") or ""
        resolved = "ungraded" if r.get("resolved") is None and r.get("status") != "not run" else str(r.get("resolved"))
        t.add_row(*cells(r["instance_id"], r.get("status", ""), resolved, r.get("steps", ""), r.get("tokens", ""),
                         r.get("seconds", ""), problem[:120]))
    console.print(t)
    console.print(f"predictions: {esc(out / 'predictions.jsonl')} · report: {esc(out / 'report.json')}")


def tasks_cmd(suite: Optional[str] = typer.Argument(None, help="Show this suite's instances."),
              dataset: Optional[str] = typer.Option(None, help="Local SWE-bench dataset file."),
              build: bool = typer.Option(False, "--build", help="Make the suite's task images present: build the "
                                         "bundled ones; pull SWE-bench's where a registry answers, or build them "
                                         "with --task-repo."),
              instances: Optional[str] = typer.Option(None, help="Comma-separated instance ids (with --build: only "
                                                      "their images)."),
              task_repo: Optional[str] = typer.Option(None, help="A swebench task repository (tasks/<id>/Dockerfile) "
                                                      "to build SWE-bench images from with swebench's builder."),
              force: bool = typer.Option(False, "--force", help="With --build: rebuild (or pull again) even "
                                         "images that exist.")) -> None:
    """List the suites, or one suite's instances (and make their images present with --build)."""
    ids = parse_ids(instances)
    if build:
        name = suite or "bundled"
        the_suite = get_suite(name, dataset)
        if the_suite.kind != "swe":
            raise ConfigError(f"suite {name!r} has no images to build")
        chosen = the_suite.select(ids, check=False)  # images need the instance ids, not the grading fields
        done = ensure_suite_images(the_suite, chosen, task_repo=task_repo, force=force, status=console.status)
        counts = ", ".join(f"{len(v)} {k}" for k, v in done.items() if v) or "nothing to do"
        console.print(f"{esc(name)} images for {len(chosen)} instance(s): {esc(counts)}")
        return
    if suite is None:
        t = Table(title="suites")
        t.add_column("suite")
        t.add_column("kind")
        t.add_column("description")
        for name in suite_names():
            s = get_suite(name)
            t.add_row(*cells(name, s.kind, s.description))
        console.print(t)
        return
    s = get_suite(suite, dataset)
    t = Table(title=f"{esc(suite)} instances")
    t.add_column("instance")
    t.add_column("detail")
    for inst in (s.select(ids) if ids else s.instances()):
        detail = inst.extra.get("bug_kind") or inst.extra.get("category") or inst.repo
        t.add_row(*cells(inst.instance_id, detail))
    console.print(t)
