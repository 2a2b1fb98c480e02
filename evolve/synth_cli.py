"""`evolve tasks ...`: list suites (the default), `synthesize` tasks from real repositories, write `demos`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from agent.policy.base import SamplingParams
from agent.variant import AgentVariant
from evolve.demos import write_scripts
from evolve.errors import ConfigError
from evolve.markup import cells, esc
from evolve.policies import policy_loader
from records import Message
from tasks.synth.families import FAMILIES
from tasks.synth.sources import resolve
from tasks.synth.suite import SynthSuite

console = Console()


class TasksGroup(TyperGroup):
    """`evolve tasks [SUITE] [--build ...]` keeps listing suites: a first word that is no subcommand goes to
    `list`."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=TasksGroup, help="Task suites: list them, synthesise tasks, write demonstrations.",
                  add_completion=False)
"""`list` is `run_cli.tasks_cmd`, added by `evolve.cli` (the one module that imports CLI modules)."""


def _completer(spec: str, runs_root: Path, max_tokens: int = 1024):
    """A policy as prompt -> text (for LLM bugs and issue texts)."""
    policy = policy_loader(runs_root)(spec)

    def complete(prompt: str) -> str:
        gen = policy.generate([[Message(role="user", content=prompt)]],
                              SamplingParams(max_tokens=max_tokens, temperature=0.7))[0]
        return gen.text
    return complete


@app.command("synthesize")
def synthesize_cmd(
    sources: list[str] = typer.Argument(..., help="bundled | bundled:NAME | pypi | NAME[==VERSION] (a package of "
                                        "the catalog) | PATH (a local git repository)."),
    n: int = typer.Option(100, "--n", min=1, help="Validated tasks wanted (spread over the sources)."),
    methods: str = typer.Option("procedural", help="procedural, llm or procedural,llm (llm needs --policy)."),
    policy: Optional[str] = typer.Option(None, help="Policy that writes LLM bugs and the issue texts (default: "
                                         "issue texts from a template)."),
    out: Path = typer.Option(Path("suite.jsonl"), help="Suite file (JSONL rows); the same file resumes."),
    workers: int = typer.Option(2, min=1, help="Sources validated at once (one sandbox each)."),
    families: Optional[str] = typer.Option(None, help="Comma-separated bug families (default: all)."),
    holdout: float = typer.Option(0.2, help="Share of the sources held out (split `test`); 0 for none."),
    batch: int = typer.Option(12, min=1, help="Bugs per call of the in-sandbox runner."),
    seed: int = typer.Option(0, help="Order of the bugs tried."),
) -> None:
    """Synthesise SWE-style tasks: inject bugs into real repositories, keep those their tests catch, validate
    each through grading, write SWE-bench rows usable as `synth:OUT`. Resumable."""
    from tasks.synth.synthesize import Synthesis, SynthConfig  # grading loads swebench: `evolve --help` stays fast
    chosen_methods = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen_methods if m not in ("procedural", "llm")]
    if bad or not chosen_methods:
        raise ConfigError(f"--methods takes procedural and/or llm, not {methods!r}")
    if "llm" in chosen_methods and not policy:
        raise ConfigError("--methods llm needs --policy (the model that rewrites functions)")
    fams = [f.strip() for f in families.split(",") if f.strip()] if families else list(FAMILIES)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown bug family {unknown[0]!r}; the families are: {', '.join(FAMILIES)}")
    if not 0 <= holdout < 1:
        raise ConfigError(f"--holdout must be in [0, 1), not {holdout}")
    resolved = resolve(sources)
    cfg = SynthConfig(out=out, n=n, methods=chosen_methods, families=fams, workers=workers, holdout=holdout,
                      batch=batch, seed=seed)
    complete = _completer(policy, out.parent) if policy else None
    started = time.time()

    def on_event(source: str, what: str) -> None:
        console.print(f"{time.time() - started:7.0f} s  {esc(source)}: {esc(what)}", highlight=False)

    syn = Synthesis(cfg, resolved, complete=complete, on_event=on_event)
    console.print(f"[bold]synthesize[/]: {len(resolved)} source(s), {n} task(s) wanted, {workers} worker(s) -> "
                  f"{esc(out)}")
    reports = syn.run()
    t = Table(title=f"{syn.journal.total()} validated task(s) in {esc(out)} · {time.time() - started:.0f} s")
    for col in ("source", "split", "tests", "tried", "kept", "note"):
        t.add_column(col)
    for r in reports:
        t.add_row(*cells(r.source, r.split, r.tests, r.tried, r.kept, (r.refused or r.error or "")[:90]))
    console.print(t)
    y = syn.journal.yields()
    ft = Table(title="yield per bug family (all attempts in the journal)")
    for col in ("family", "tried", "kept", "yield"):
        ft.add_column(col)
    for fam, tried in sorted(y["tried_family"].items()):
        kept = y["kept_family"][fam]
        ft.add_row(*cells(fam, tried, kept, f"{kept / tried:.0%}"))
    console.print(ft)
    console.print(f"use it: evolve run synth:{esc(out)}  (splits: train / test by source)")


@app.command("demos")
def demos_cmd(
    suite_file: Path = typer.Argument(..., help="A synthesised suite file."),
    out: Optional[Path] = typer.Option(None, help="Run directory of the demonstrations (default runs/demos)."),
    split: str = typer.Option("train", help="Which split to demonstrate (train; test is held out)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Most tasks."),
    workers: int = typer.Option(2, min=1, help="Episodes in parallel."),
) -> None:
    """Scripted demonstrations (failing test, open the function, fix with the agent's tools, test, submit)
    acted out by the real agent loop with the replay policy and graded: `evolve train sft OUT` learns them."""
    from evolve.run.runner import RunConfig, run_swe  # grading loads swebench: `evolve --help` stays fast
    from evolve.run.start import open_swe_run

    suite = SynthSuite(suite_file)
    chosen = suite.select(limit=limit, split=split)
    if not chosen:
        raise ConfigError(f"{suite_file} has no {split} tasks")
    out = out or Path("runs") / "demos"
    scripts = out.parent / f"{out.name}-scripts.jsonl"
    cfg = RunConfig(suite=suite.name, instances=[i.instance_id for i in chosen], policy=f"replay:{scripts}",
                    workers=workers, out=str(out))
    with open_swe_run(cfg, suite, chosen, status=console.status):
        with console.status("writing the scripts"):
            policy = write_scripts(chosen, scripts, AgentVariant.load())
        started = time.time()
        report = run_swe(cfg, chosen, policy, lambda iid, what: console.print(
            f"{time.time() - started:6.0f} s  {esc(iid)}: {esc(what)}", highlight=False))
    console.print(f"demonstrations: {report['resolved']}/{report['instances']} resolved, stored in {esc(out)} "
                  f"(scripts: {esc(scripts)}); train with: evolve train sft {esc(out)}")
