"""`evolve loop SUITE`: the self-evolving loop as one command (see `evolve.loop.run`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from evolve.errors import ConfigError
from evolve.run.executor import parse_executor
from evolve.loop.config import load_loop_config
from evolve.loop.report import table
from evolve.markup import esc
from evolve.store import check_run_dir
from tasks.registry import get_suite

console = Console()


def loop_cmd(
    suite: str = typer.Argument(..., help="Suite: toolcall, bundled, swe-bench-verified, swe-bench-lite, ..."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="loop.yaml on top of the suite's shipped "
                                          "default (evolve/loop/configs/toolcall.yaml or swe.yaml)."),
    generations: Optional[int] = typer.Option(None, help="Generations to run (a resumed run may be given more)."),
    out: Optional[Path] = typer.Option(None, help="Run directory; the same one resumes. Default runs/loop-<suite>."),
    executor: Optional[str] = typer.Option(None, help="Where sandbox work runs: local, ray or ray=ADDRESS."),
    policy: Optional[str] = typer.Option(None, help="The policy trained and acted with: hf:PATH_OR_NAME or "
                                         "version:ID|latest."),
    meta_policy: Optional[str] = typer.Option(None, help="Policy of HGM's diagnosis and edit (default: each "
                                              "node's own)."),
    train_device: Optional[str] = typer.Option(None, help="Training device: cpu, cuda, cuda:1, auto."),
    rollout_backend: Optional[str] = typer.Option(None, help="How trained versions sample: hf, llamacpp (GGUF "
                                                  "export), vllm (LoRA swapped in), as-is."),
    dataset: Optional[str] = typer.Option(None, help="Local SWE-bench dataset file."),
    curriculum: Optional[str] = typer.Option(None, help="Which training instances each generation's rollouts run "
                                             "on: sec (Self-Evolving Curriculum over task categories), uniform, "
                                             "or off (all; the default). Sets curriculum.mode."),
) -> None:
    """The self-evolving loop: rollouts, trajectory evolution, code and weight children in one HGM tree, a held-out
    gate, generation after generation. Resumable with the same command after any kill; stoppable from the TUI."""
    from evolve.loop.run import LoopStopped, run_loop  # the orchestration loads swebench: only when a loop runs

    if generations is not None and generations < 1:
        raise ConfigError(f"--generations must be at least 1, not {generations}")
    if executor is not None:
        parse_executor(executor)  # a one-line error now, not after the first stage
    the_suite = get_suite(suite, **({"dataset": dataset} if dataset else {}))
    kind = "toolcall" if the_suite.kind == "toolcall" else "swe"
    cfg = load_loop_config(kind, config, suite=suite, generations=generations, executor=executor, dataset=dataset,
                           **{"policies.policy": policy, "policies.meta_policy": meta_policy,
                              "training.device": train_device, "policies.rollout_backend": rollout_backend,
                              "curriculum.mode": curriculum})
    out = out or Path("runs") / f"loop-{suite}"
    check_run_dir(out, create=False)
    console.print(f"[bold]evolve loop {esc(suite)}[/]: {cfg.generations} generation(s), policy "
                  f"{esc(cfg.policies.policy)} (rollouts on {cfg.policies.rollout_backend}), children "
                  f"{', '.join(cfg.kinds())}"
                  + (f", curriculum {cfg.curriculum.mode}" if cfg.curriculum.mode != "off" else "")
                  + f", store {esc(out)}")
    started = time.time()
    last = {"line": ""}

    def progress(stage: str, event: str, detail: dict[str, Any]) -> None:
        if event == "progress":
            line = f"g{detail['generation']} {stage}: {detail['done']}/{detail['total']} {detail.get('what', '')}"
        elif stage == "generation" and event == "done":
            rec = detail["record"]
            line = (f"generation {detail['generation']} done: champion {rec['champion_out'].rsplit(':', 1)[-1]} "
                    f"({rec['gate'].get('reason', '')})")
        elif stage == "generation":
            line = f"generation {detail['generation']} starts from {detail['champion'].rsplit(':', 1)[-1]}"
        else:
            return
        if line != last["line"]:
            last["line"] = line
            console.print(f"{time.time() - started:7.0f} s  {esc(line)}", highlight=False)

    try:
        report = run_loop(cfg, out, progress=progress, suite=the_suite)
    except LoopStopped as e:
        console.print(table(e.report))
        console.print(f"[yellow]stopped[/] on request; run the same command to resume ({esc(out)})")
        raise typer.Exit(130)
    console.print(table(report))
    console.print(f"champion: [bold]{esc(report['champion'])}[/] · report: {esc(out / 'report.json')} · "
                  f"tree: evolve tree show {esc(out)}")
