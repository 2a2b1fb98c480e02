"""`evolve agent-r SUITE`: the command line of Agent-R's iterations (see `evolve.agent_r.loop`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.policy import DEFAULT_POLICY
from agent.variant import DEFAULT_VARIANT
from evolve.agent_r.config import AgentRConfig
from evolve.errors import ConfigError
from evolve.markup import cells, esc
from evolve.policies import policy_loader
from evolve.run.executor import parse_executor
from evolve.run.opening import run_dir
from tasks.registry import get_suite

console = Console()


def agent_r_cmd(
    suite: str = typer.Argument(..., help="Suite to search: bundled, swe-bench-verified, swe-bench-lite (rewarded "
                               "by grading with the hidden tests) or toolcall (rewarded by ToolRL's reward)."),
    instances: Optional[str] = typer.Option(None, help="Comma-separated instances to search (default: the suite's; "
                                            "toolcall: its train split)."),
    limit: Optional[int] = typer.Option(None, help="Most instances to search."),
    held_out: Optional[str] = typer.Option(None, "--held-out", help="Instances for evaluation only: comma-separated "
                                            "ids; for toolcall also a split (test) or N (the first N of the test split)."),
    policy: str = typer.Option(DEFAULT_POLICY, help="Policy of iteration 1 (samples and verifies)."),
    train_policy: str = typer.Option("hf:gemma3-270m", help="Weights iteration 1 fine-tunes (same model as --policy)."),
    variant: Optional[Path] = typer.Option(None, help="Agent variant directory (`undo` is added to its tools where it lacks it)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; the same one resumes. Default runs/agent-r-<suite>."),
    iterations: int = typer.Option(1, help="Search -> data -> SFT rounds."),
    rollouts: Optional[int] = typer.Option(None, help="MCTS iterations per instance (default 4)."),
    n_gen: Optional[int] = typer.Option(None, "--n-gen", help="Responses sampled per expansion (default 4)."),
    max_depth: Optional[int] = typer.Option(None, help="Most steps on a search path (default 6)."),
    c: Optional[float] = typer.Option(None, "--c", help="UCT exploration constant (default 0.25)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature of expansions (default 1.0, > 0)."),
    alpha: Optional[str] = typer.Option(None, help="Pairs need value(high) > alpha (default 0.5; env EVOLVE_AGENT_R_ALPHA)."),
    beta: Optional[str] = typer.Option(None, help="Pairs need a value gap > beta (default 0.2; env EVOLVE_AGENT_R_BETA)."),
    verifier_k: Optional[int] = typer.Option(None, help="1: greedy verifier; k > 1: majority of k samples."),
    max_pairs: Optional[int] = typer.Option(None, help="Most splices per instance (default 4)."),
    sft_steps: int = typer.Option(20, help="Optimiser steps of each iteration's SFT."),
    sft_lr: float = typer.Option(1e-4, help="Peak learning rate of each SFT."),
    full: bool = typer.Option(False, "--full", help="Full fine-tuning instead of LoRA."),
    device: str = typer.Option("auto", help="Training device."),
    workers: int = typer.Option(2, help="Branches executed in parallel."),
    executor: str = typer.Option("local", help="Where the SWE search's branch episodes, their grading and the "
                                 "splice replays run: local (threads here), ray (a Ray cluster started on this "
                                 "machine) or ray=ADDRESS; sampling, the verifier, SFT and evaluation stay here. "
                                 "toolcall: local only."),
    max_steps: Optional[int] = typer.Option(None, help="Step budget of evaluation episodes."),
    max_tokens_per_step: Optional[int] = typer.Option(None, help="Tokens per policy call."),
    dataset: Optional[str] = typer.Option(None, help="Local SWE-bench dataset file."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate each version on --held-out."),
) -> None:
    """Agent-R: MCTS over agent steps, revision trajectories spliced at the flagged step's parent (with a real
    undo), replay-checked, then SFT; repeated for --iterations. Resumable."""
    # loads swebench (seconds)
    from evolve.agent_r.loop import AgentRRunConfig, run_agent_r
    from evolve.agent_r.start import choose, open_agent_r

    for name, value in (("--iterations", iterations), ("--workers", workers), ("--sft-steps", sft_steps)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, not {value}")
    executor_cfg = parse_executor(executor)
    search = AgentRConfig.from_env(rollouts=rollouts, n_gen=n_gen, max_depth=max_depth, c=c, temperature=temperature,
                                   alpha=alpha, beta=beta, verifier_k=verifier_k, max_pairs=max_pairs)
    out = run_dir(out, f"agent-r-{suite}")
    the_suite = get_suite(suite, dataset)
    train, held = choose(the_suite, instances, held_out, limit)
    toolcall = the_suite.kind == "toolcall"
    cfg = AgentRRunConfig(suite=suite, kind=the_suite.kind, instances=[i.instance_id for i in train],
                          held_out=sorted(i.instance_id for i in held), policy=policy, train_policy=train_policy,
                          variant=str(variant or DEFAULT_VARIANT),
                          max_steps=max_steps, max_tokens_per_step=max_tokens_per_step, workers=workers,
                          executor=executor_cfg,
                          iterations=iterations, search=search, sft_steps=sft_steps, sft_lr=sft_lr, full=full,
                          device=device, evaluate=evaluate, out=str(out))
    with open_agent_r(cfg, the_suite, train, held, status=console.status):
        console.print(f"[bold]evolve agent-r {esc(suite)}[/]: {len(train)} instance(s) searched, {len(held)} held "
                      f"out, {iterations} iteration(s), policy {esc(policy)}, store {esc(out)}")
        report = run_agent_r(cfg, train, held, policy_loader(out),  # versions it trains live under its --out
                             say=lambda text: console.print(text, markup=False, highlight=False))
    metrics = ("reward", "success", "recovered", "repeat_rate") if toolcall else ("success", "recovered", "repeat_rate")
    table = Table("iteration", "policy", "splices", "good", "trained",
                  *(("held-out reward", "exact") if toolcall else ("success",)), "recovered", "repeat rate")
    for row in [{"iteration": 0, "policy": policy, "eval": report.get("before")}] + report["iterations"]:
        e = row.get("eval") or {}
        table.add_row(*cells(row["iteration"], row["policy"], row.get("splices", ""), row.get("good", ""),
                             row.get("trained") or "", *(f"{e[k]:.3f}" if k in e else "" for k in metrics)))
    console.print(table)
    console.print(f"report: {esc(out / 'report.json')}")
    if report.get("stopped"):
        console.print(f"[yellow]stopped[/]: {esc(report['stopped'])}; run the same command to resume")
        if report["stopped"] == "Ctrl-C":
            raise typer.Exit(130)
