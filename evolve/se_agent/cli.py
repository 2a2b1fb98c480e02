"""`evolve se-agent SUITE`: SE-Agent on a SWE suite, with live progress; resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.policy import DEFAULT_POLICY
from agent.variant import DEFAULT_VARIANT
from evolve.errors import ConfigError
from evolve.markup import cells, esc
from evolve.run.executor import parse_executor
from evolve.run.opening import parse_ids
from evolve.se_agent.config import SEAgentConfig
from evolve.se_agent.operators import OPERATORS
from sandbox import SandboxConfig
from tasks.registry import suite_names

console = Console()


def se_agent_cmd(
    suite: str = typer.Argument(..., help=f"SWE suite: {', '.join(s for s in suite_names() if s != 'toolcall')}."),
    iterations: int = typer.Option(3, min=1, help="Iterations: pilots first, then one operator per iteration."),
    pilots: int = typer.Option(3, min=1, help="Diverse pilot trajectories per instance in iteration 1."),
    operators: str = typer.Option("revision,recombination,refinement",
                                  help="Operator schedule, cycled from iteration 2; `none`: independent re-sampling."),
    policy: str = typer.Option(DEFAULT_POLICY, help="Policy spec of the agent."),
    operator_policy: Optional[str] = typer.Option(None, help="Policy spec of the summariser, operators and judge "
                                                  "(default: the agent's policy)."),
    no_judge: bool = typer.Option(False, "--no-judge", help="Break visible ties without the pairwise judge."),
    branch: bool = typer.Option(False, "--branch", help="Operators continue their source trajectory from the "
                                "step before its first edit (exploration replayed) instead of starting afresh."),
    workers: int = typer.Option(2, min=1, help="Attempts in parallel (policy calls batched)."),
    executor: str = typer.Option("local", help="Where episodes run: local, ray (a Ray cluster started on this "
                                 "machine) or ray=ADDRESS."),
    out: Optional[str] = typer.Option(None, help="Run directory; the same one resumes; `{timestamp}` allowed. "
                                      "Default runs/se-agent-<suite>."),
    limit: Optional[int] = typer.Option(None, help="Most instances."),
    instances: Optional[str] = typer.Option(None, help="Comma-separated instance ids."),
    dataset: Optional[str] = typer.Option(None, help="Local SWE-bench dataset file."),
    variant: Optional[Path] = typer.Option(None, help="Agent variant directory."),
    max_steps: Optional[int] = typer.Option(None, help="Step budget per episode."),
    max_tokens_per_step: Optional[int] = typer.Option(None, help="Tokens per policy call."),
    sandbox: str = typer.Option("docker", help="Sandbox backend: docker or local."),
    seed: int = typer.Option(0, help="Base sampling seed."),
    operator_max_tokens: int = typer.Option(400, min=16, help="Tokens the summariser, an operator or the judge "
                                            "may generate per call."),
    no_grade: bool = typer.Option(False, "--no-grade", help="Skip the hidden-test grading of the report."),
) -> None:
    """SE-Agent: pilots, then revision/recombination/refinement strategies added to each instance's prompt;
    the prediction is chosen from visible signals only; hidden tests only for the report. Resumable."""
    from evolve.se_agent.report import FIRST, ORACLE, SELECTED  # loads swebench and datasets (seconds)
    from evolve.se_agent.run import open_se_agent, run_se_agent, se_agent_policies

    if sandbox not in ("docker", "local"):
        raise ConfigError(f"--sandbox must be docker or local, not {sandbox!r}")
    ops = [] if operators.strip() == "none" else [o.strip() for o in operators.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPERATORS]
    if bad:
        raise ConfigError(f"--operators: unknown operator {bad[0]!r}; use {','.join(OPERATORS)} (any order, "
                          "repeats allowed) or none")
    try:
        cfg = SEAgentConfig(suite=suite, iterations=iterations, pilots=pilots, operators=ops, policy=policy,
                            operator_policy=operator_policy, judge=not no_judge, branch=branch, workers=workers,
                            executor=parse_executor(executor),
                            limit=limit,
                            out=out or f"runs/se-agent-{suite}", dataset=dataset,
                            variant=str(variant or DEFAULT_VARIANT), max_steps=max_steps,
                            max_tokens_per_step=max_tokens_per_step, sandbox=SandboxConfig(backend=sandbox),
                            seed=seed, grade=not no_grade, operator_max_tokens=operator_max_tokens)
    except ValueError as e:
        raise ConfigError(f"bad se-agent options: {str(e).splitlines()[-1].strip()}") from None
    with open_se_agent(cfg, parse_ids(instances), status=console.status) as chosen:
        run_dir = Path(cfg.out)
        console.print(f"[bold]evolve se-agent {esc(suite)}[/]: {len(chosen)} instance(s), {pilots} pilot(s), "
                      f"{iterations} iteration(s), operators {esc(','.join(ops) or 'none (re-sampling)')}, "
                      f"store {esc(run_dir)}")
        with console.status("loading policy"):
            agent_pol, op_pol = se_agent_policies(cfg)
        started = time.time()

        def on_event(instance_id: str, what: str) -> None:
            console.print(f"{time.time() - started:6.0f} s  {esc(instance_id)}: {esc(what)}")

        report = run_se_agent(cfg, chosen, agent_pol, op_pol, on_event=on_event)
    if report.get("stopped"):
        console.print(f"[yellow]stopped[/] on request; run the same command to resume ({esc(run_dir)})")
        return
    t = Table(title=f"se-agent {esc(suite)}: {report['instances']} instance(s), {report['candidates']} candidate(s), "
                    f"{report['seconds']} s")
    for col in ("instance", "candidates", "selected (method)", "first pilot", "selection", "any candidate"):
        t.add_column(col)
    for r in report["per_instance"]:
        t.add_row(*cells(r["instance_id"], r["candidates"], f"{r['selected']} ({r['selection_method']})",
                         r["first_pilot_resolved"], r["selected_resolved"], r["any_resolved"]))
    console.print(t)
    for key in (FIRST, SELECTED, ORACLE):
        console.print(f"{key}: {report[key]:.2f}")
    console.print(f"predictions: {esc(run_dir / 'predictions.jsonl')} · report: {esc(run_dir / 'report.json')}")
