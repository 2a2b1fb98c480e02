"""`evolve sandbox ...`: build the base image, clean up, and a smoke run."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from evolve.markup import cells, esc
from sandbox import SandboxConfig, start_sandbox
from sandbox.base import SandboxError
from sandbox.base_image import build_base
from sandbox.prune import prune
from tasks.bundled.materialize import materialize
from tasks.bundled.suite import BundledSuite

app = typer.Typer(help="Sandboxes: build the base image, remove leftovers, smoke-test.", no_args_is_help=True)
console = Console()


@app.command("build-base")
def build_base_cmd(
    force: bool = typer.Option(False, help="Rebuild even when the image matches its recipe."),
    method: str = typer.Option("auto", help="`auto` (pull where a registry answers, else debootstrap), "
                               "`debootstrap` (needs only Debian's mirror) or `pull` (needs a Docker registry)."),
) -> None:
    """Build the base image (Python 3, git, pytest, patch, build tools); cached until its recipe changes."""
    if method not in ("auto", "debootstrap", "pull"):
        raise typer.BadParameter("use auto, debootstrap or pull", param_hint="--method")
    start = time.time()
    image, built = build_base(method=method, force=force)  # type: ignore[arg-type]
    console.print(f"{esc(image)}: {'built in %.0f s' % (time.time() - start) if built else 'up to date'}")


@app.command("prune")
def prune_cmd(
    run: Optional[str] = typer.Option(None, help="Only what this run id left (containers, snapshot images, "
                                      "local workspaces and snapshots)."),
    force: bool = typer.Option(False, help="Also remove what live processes own (their runs then fail)."),
    docker: bool = typer.Option(True, help="Prune Docker too (--no-docker: only local sandboxes)."),
) -> None:
    """Remove the sandboxes, snapshot images and local workspaces that dead Evolve processes left behind.

    What a running process owns is kept (its owner is recorded: pid, start time, host boot) unless --force."""
    done = prune(run, force=force, docker=docker)
    console.print(f"removed {done.containers} containers, {done.images} snapshot images, {done.workspaces} "
                  f"local workspaces and {done.snapshots} local snapshots"
                  + (f"; kept {done.kept} owned by live processes (--force removes them)" if done.kept else ""),
                  soft_wrap=True)
    if done.docker_error:
        raise SandboxError(f"{done.docker_error} (--no-docker prunes only local sandboxes)")


@app.command("smoke")
def smoke_cmd(
    instance: Optional[str] = typer.Option(None, help="Bundled instance id (default: the first)."),
    backend: str = typer.Option("docker", "--sandbox", help="docker or local."),
) -> None:
    """Start a sandbox on a bundled repository, run its tests there and print the result."""
    inst = BundledSuite().select([instance] if instance else None, limit=1)[0]
    name = inst.repo.split("/")[-1]
    with tempfile.TemporaryDirectory() as tmp:
        materialize(name, Path(tmp) / name)
        start = time.time()
        with start_sandbox(SandboxConfig(backend=backend), workspace=f"{tmp}/{name}") as sb:  # type: ignore[arg-type]
            started = time.time() - start
            result = sb.exec(inst.test_cmd, timeout=300)
    table = Table(title=f"smoke: {esc(inst.instance_id)} in a {esc(backend)} sandbox")
    for col in ("sandbox start", "tests", "exit code", "seconds"):
        table.add_column(col)
    summary = next((ln for ln in reversed(result.output.splitlines()) if " in " in ln and "=" in ln), "?")
    table.add_row(*cells(f"{started:.2f} s", summary.strip("= "), result.exit_code, f"{result.seconds:.2f}"))
    console.print(table)
    logging.getLogger(__name__).debug(result.output)
