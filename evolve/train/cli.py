"""`evolve train ...`: SFT and GRPO of a local policy from stored trajectories, and online GRPO on tool calling.

Every command writes its output directory as a run directory (`evolve.db` with the new policy
version and per-step metrics, `checkpoints/`, `final/`); running the same command again resumes from
the last checkpoint. Use the result with `--policy version:ID` (or `version:latest`).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from agent.policy import PolicyError
from evolve.markup import cells, esc
from evolve.store import DB_NAME, StoreError
from evolve.train.errors import TrainError
from evolve.train.versions import all_versions
from tasks.suite import SuiteUnavailable

app = typer.Typer(help="Train the local policy: SFT and GRPO from stored trajectories; online GRPO on tool calling.",
                  no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors a user can fix print one line (no traceback) and exit with status 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        errors = (TrainError, StoreError, FileNotFoundError, PolicyError, SuiteUnavailable)
        try:
            return fn(*args, **kwargs)
        except errors as e:
            err_console.print(f"[bold red]error:[/] {esc(' '.join(str(e).split()))}", soft_wrap=True, markup=True,
                              highlight=False)
            raise typer.Exit(2) from None
    return wrapper


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")


def _out(out: Optional[Path], kind: str) -> Path:
    return out or Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_runs(run_dirs: list[Path]) -> None:
    for d in run_dirs:
        if not (d / DB_NAME).exists():
            raise TrainError(f"{d} is not a run directory (no {DB_NAME}); give the --out directory of an `evolve run`")


def _overrides(policy: Optional[str], full: bool, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in kw.items() if v is not None}
    if policy is not None:
        out["policy"] = policy
    if full:
        out["lora"] = None
    return out


def _report(version: Any) -> None:
    if version is None:  # Ctrl-C (or a stop request) ended it after a step, checkpointed
        console.print("[yellow]stopped[/]: the training is checkpointed; run the same command to resume")
        raise typer.Exit(130)
    console.print(f"policy version [bold]{esc(version.id)}[/] ({esc(version.kind)}) -> {esc(version.path)}")
    console.print(f"use it with: --policy version:{esc(version.id)}")


POLICY = typer.Option(None, "--policy", help="Policy to train: hf:PATH, version:ID or version:latest.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML file of settings (see the config class's fields).")
OUT = typer.Option(None, "--out", "-o", help="Output run directory (default runs/<kind>-<time>); rerun to resume.")
FULL = typer.Option(False, "--full", help="Full fine-tuning instead of a LoRA adapter.")
DEVICE = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, ...")
MAX_LEN = typer.Option(None, "--max-len", help="Most tokens of one training sequence (longer ones are cut at a "
                       "turn boundary).")


@app.command("sft")
@_user_errors
def sft_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories whose trajectories to learn from."),
    config: Optional[Path] = CONFIG, policy: Optional[str] = POLICY, out: Optional[Path] = OUT,
    full: bool = FULL, device: Optional[str] = DEVICE,
    epochs: Optional[float] = typer.Option(None, help="Passes over the data."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    min_reward: Optional[float] = typer.Option(None, help="Only trajectories with at least this reward (default "
                                               "1.0: successes; demonstrations always count)."),
    all_trajectories: bool = typer.Option(False, "--all-trajectories", help="Train on every finished trajectory, "
                                          "failures included (no reward threshold)."),
    max_len: Optional[int] = MAX_LEN,
) -> None:
    """Supervised fine-tuning on the assistant turns of stored trajectories (loss-masked). By default only
    successes (reward >= 1.0) and demonstrations; never HGM's meta-agent trajectories."""
    from evolve.train.config import load_config  # these import torch: only the command that trains loads it
    from evolve.train.sft import SFTConfig, train_sft

    _logging()
    _check_runs(run_dirs)
    if all_trajectories and min_reward is not None:
        raise TrainError("give --min-reward or --all-trajectories, not both")
    cfg = load_config(SFTConfig, config, **_overrides(policy, full, device=device, epochs=epochs,
                                                      max_steps=max_steps, lr=lr, min_reward=min_reward,
                                                      max_len=max_len))
    if all_trajectories:
        cfg.min_reward = None
    _report(train_sft(cfg, run_dirs, _out(out, "sft")))


@app.command("grpo")
@_user_errors
def grpo_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories with scored trajectories (several per instance)."),
    config: Optional[Path] = CONFIG, policy: Optional[str] = POLICY, out: Optional[Path] = OUT,
    full: bool = FULL, device: Optional[str] = DEVICE,
    epochs: Optional[int] = typer.Option(None, help="Passes over the data."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    reward: Optional[str] = typer.Option(None, help="Name of the stored reward to use (default: combined / the only one)."),
    max_len: Optional[int] = MAX_LEN,
    curriculum: Optional[str] = typer.Option(None, help="sec (Self-Evolving Curriculum over task categories) or "
                                             "uniform; default: every group once per epoch."),
) -> None:
    """GRPO on stored, scored trajectories grouped by task instance (offline)."""
    from evolve.train.config import load_config  # these import torch: only the command that trains loads it
    from evolve.train.grpo import GRPOConfig, train_grpo

    _logging()
    _check_runs(run_dirs)
    cfg = load_config(GRPOConfig, config, **_overrides(policy, full, device=device, epochs=epochs,
                                                       max_steps=max_steps, lr=lr, reward=reward, max_len=max_len,
                                                       curriculum=curriculum))
    _report(train_grpo(cfg, run_dirs, _out(out, "grpo")))


@app.command("sft-toolcall")
@_user_errors
def sft_toolcall_cmd(
    config: Optional[Path] = CONFIG, policy: Optional[str] = POLICY, out: Optional[Path] = OUT,
    full: bool = FULL, device: Optional[str] = DEVICE,
    epochs: Optional[float] = typer.Option(None, help="Passes over the reference answers."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N training instances."),
) -> None:
    """Warm start for tool calling: SFT on the training split's reference answers (the suite's own prompts)."""
    from evolve.train.config import load_config  # these import torch: only the command that trains loads it
    from evolve.train.warmstart import ToolcallSFTConfig, train_sft_toolcall

    _logging()
    cfg = load_config(ToolcallSFTConfig, config, **_overrides(policy, full, device=device, epochs=epochs,
                                                              max_steps=max_steps, lr=lr, limit=limit))
    _report(train_sft_toolcall(cfg, _out(out, "sft-toolcall")))


@app.command("grpo-toolcall")
@_user_errors
def grpo_toolcall_cmd(
    config: Optional[Path] = CONFIG, policy: Optional[str] = POLICY, out: Optional[Path] = OUT,
    full: bool = FULL, device: Optional[str] = DEVICE,
    steps: Optional[int] = typer.Option(None, help="Optimiser steps."),
    group_size: Optional[int] = typer.Option(None, help="Completions per prompt."),
    prompts_per_step: Optional[int] = typer.Option(None, help="Prompts per step."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    rollout_policy: Optional[str] = typer.Option(None, help="`live` (the training model) or a spec such as vllm:MODEL."),
    max_len: Optional[int] = MAX_LEN,
) -> None:
    """Online GRPO on the tool-calling suite: sample groups, score with ToolRL, store, update."""
    from evolve.train.config import load_config  # these import torch: only the command that trains loads it
    from evolve.train.rollout import ToolcallGRPOConfig, train_grpo_toolcall

    _logging()
    cfg = load_config(ToolcallGRPOConfig, config, **_overrides(
        policy, full, device=device, steps=steps, group_size=group_size, prompts_per_step=prompts_per_step, lr=lr,
        rollout_policy=rollout_policy, max_len=max_len))
    _report(train_grpo_toolcall(cfg, _out(out, "grpo-toolcall")))


@app.command("export-gguf")
@_user_errors
def export_gguf_cmd(
    policy: str = typer.Argument(..., help="version:ID, version:latest or hf:DIR (the embedded model's architecture)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .gguf file to write."),
    runs_root: Path = typer.Option(Path("runs"), help="Directory holding run directories (for version:)."),
    tensor_type: str = typer.Option("q8_0", "--type", help="q8_0 (default), f16 or f32."),
) -> None:
    """Write a trained policy version (LoRA merged) as a GGUF file; sample it fast with --policy llamacpp:FILE."""
    from evolve.train.gguf_export import export_policy  # imports torch and gguf: only when exporting

    if tensor_type not in ("q8_0", "f16", "f32"):
        raise TrainError(f"--type must be q8_0, f16 or f32, not {tensor_type!r}")
    _logging()
    path = export_policy(policy, out, runs_root=runs_root, tensor_type=tensor_type)  # type: ignore[arg-type]
    console.print(f"wrote {esc(str(path))}; sample it with --policy llamacpp:{esc(str(path))}")


@app.command("versions")
@_user_errors
def versions_cmd(runs_root: Path = typer.Argument(Path("runs"), help="Directory holding run directories.")) -> None:
    """List stored policy versions (oldest first)."""
    table = Table("id", "kind", "status", "parent", "base", "path", "metrics")
    for v, _ in all_versions(runs_root):
        metrics = " ".join(f"{k}={val:.3g}" for k, val in list(v.metrics.items())[:4])
        table.add_row(*cells(v.id, v.kind, v.status, v.parent_id or "", v.base, v.path, metrics))
    console.print(table)
