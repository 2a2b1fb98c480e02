"""The `evolve` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from agent.policy import DEFAULT_POLICY
from agent.policy.serve import check_port, serve
from agent.policy.serve.llamacpp_backend import LlamaCppServeConfig
from evolve import run_cli, sandbox_cli, synth_cli, trajectories_cli
from evolve.agent_r import cli as agent_r_cli
from evolve.errors import ConfigError, user_errors
from evolve.hgm import cli as hgm_cli
from evolve.loop import cli as loop_cli
from evolve.markup import esc
from evolve.policies import policy_loader
from evolve.se_agent import cli as se_agent_cli
from evolve.serve_models import PREFIX, version_models
from evolve.train import cli as train_cli
from tui import cli as tui_cli  # the command line is the one place evolve reaches up to the TUI

app = typer.Typer(help="Evolve: self-evolving coding and tool-use agents.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.command("run")(run_cli.run_cmd)
synth_cli.app.command("list", help="List the suites, or one suite's instances (and make their images present "
                                   "with --build).")(run_cli.tasks_cmd)
app.add_typer(synth_cli.app, name="tasks")
app.command("trajectories")(trajectories_cli.trajectories_cmd)
app.add_typer(sandbox_cli.app, name="sandbox")
app.add_typer(train_cli.app, name="train")
app.command("hgm")(hgm_cli.hgm_cmd)
app.add_typer(hgm_cli.tree_app, name="tree")
app.command("se-agent")(se_agent_cli.se_agent_cmd)
app.command("agent-r")(agent_r_cli.agent_r_cmd)
app.command("loop")(loop_cli.loop_cmd)
app.command("tui")(tui_cli.tui_cmd)
err_console = Console(stderr=True)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@app.command("serve")
def serve_cmd(policy: str = typer.Option(DEFAULT_POLICY, help="Policy spec to serve (requests without a `model`, or "
                                         "naming it, get it); stored versions are served by name too."),
              port: int = typer.Option(8000, help="Port on 127.0.0.1."),
              runs_root: str = typer.Option("runs", help="Where `version:ID` policies are looked up."),
              max_tokens_cap: int = typer.Option(4096, min=1, help="Largest max_tokens a request may ask for "
                                                 "(larger ones are refused with 400: one request cannot hold "
                                                 "the model for minutes)."),
              max_model_memory: float = typer.Option(8.0, min=0.01, help="GB of weights kept loaded; idle stored "
                                                     "versions are closed, least recently used first, to load "
                                                     "another (LoRA versions count only their adapters)."),
              engine: str = typer.Option("auto", help="auto: continuous batching for llama.cpp and transformers "
                                         "models; policy: whole completions from the policy's own generate."),
              max_connections: int = typer.Option(128, min=1, help="Most client connections at once."),
              request_timeout: float = typer.Option(60.0, min=0.1, help="Seconds a client has to send a "
                                                    "request's headers, then its body."),
              threads: Optional[int] = typer.Option(None, min=1, help="CPU threads of llama.cpp models (default: "
                                                    "all cores this process may use).")) -> None:
    """Serve a policy and its stored versions as an OpenAI-compatible HTTP server on loopback (streaming,
    n > 1, completions, log-probs, tool calls)."""
    if engine not in ("auto", "policy"):
        raise ConfigError(f"--engine must be auto or policy, not {engine!r}")
    check_port("127.0.0.1", port)  # a busy or invalid port is found before the model loads
    resolver, lister = version_models(Path(runs_root))
    name = resolver(policy).name if policy.startswith(PREFIX) else policy  # version:latest -> version:ID
    serve(policy_loader(Path(runs_root))(policy), "127.0.0.1", port, model_name=name,
          max_tokens_cap=max_tokens_cap, max_model_bytes=int(max_model_memory * 1e9), engine=engine,
          max_connections=max_connections, request_timeout_s=request_timeout, resolver=resolver, lister=lister,
          llamacpp=LlamaCppServeConfig(threads=threads))


def main() -> None:
    """Entry point: user errors print one line and exit 2, with no traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on an unreachable hub; HF_HUB_OFFLINE=0 allows it
    try:
        app()
    except user_errors() as e:
        first = str(e).strip().splitlines() or [type(e).__name__]
        err_console.print(f"[bold red]error:[/] {esc(' '.join(first[:3]))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: the run store keeps what finished; run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
