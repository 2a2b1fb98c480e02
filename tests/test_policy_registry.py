"""Policy specs: parsing, clear errors, the vllm backend without vllm, the embedded-model cache."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import pytest

from agent.policy import DEFAULT_POLICY, PolicyError, load_policy, parse_spec
from agent.policy import embedded
from agent.policy.openai_compat import OpenAIPolicy


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:gemma3-270m", ("hf", "gemma3-270m", None)),
        ("hf:/models/base@/runs/r1/adapter", ("hf", "/models/base", "/runs/r1/adapter")),
        ("vllm:Qwen/Qwen3-8B", ("vllm", "Qwen/Qwen3-8B", None)),
        ("vllm:Qwen/Qwen3-8B@/adapters/v3", ("vllm", "Qwen/Qwen3-8B", "/adapters/v3")),
        ("openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B", ("openai", "http://127.0.0.1:8000/v1#Qwen/Qwen3-8B", None)),
        ("openai:https://user@api.example.com/v1", ("openai", "https://user@api.example.com/v1", None)),
    ],
)
def test_spec_parsing(spec: str, expected: tuple[str, str, str | None]) -> None:
    assert parse_spec(spec) == expected


def test_default_policy_is_the_embedded_gemma() -> None:
    assert DEFAULT_POLICY == "llamacpp:gemma3-270m"
    assert parse_spec(DEFAULT_POLICY)[1] in embedded.EMBEDDED_GGUF


@pytest.mark.parametrize("spec", ["gpt4", "torch:model", "hf:", "version:", ""])
def test_unknown_or_empty_spec_lists_the_valid_prefixes(spec: str) -> None:
    with pytest.raises(PolicyError, match="hf:.*openai:.*vllm:"):
        load_policy(spec)


def test_a_version_spec_needs_run_directories() -> None:
    with pytest.raises(PolicyError, match="run directories"):
        load_policy("version:abc")


def test_bad_adapter_syntax_and_conflicts() -> None:
    with pytest.raises(PolicyError, match="MODEL@ADAPTER"):
        parse_spec("hf:@/adapter")
    with pytest.raises(PolicyError, match="also given"):
        load_policy("hf:/m@/a1", adapter="/a2")


def test_openai_spec_is_lazy_and_keeps_the_model() -> None:
    policy = load_policy("openai:http://127.0.0.1:9/v1#my-model", concurrency=2)
    assert isinstance(policy, OpenAIPolicy)
    assert policy.spec == "openai:http://127.0.0.1:9/v1#my-model"
    assert policy.model == "my-model" and policy.base == "http://127.0.0.1:9/v1"
    policy.close()
    assert OpenAIPolicy("http://localhost:8000").base == "http://localhost:8000/v1"
    with pytest.raises(PolicyError, match="bad server URL"):
        load_policy("openai:localhost:8000")
    with pytest.raises(ValueError):
        load_policy("openai:http://localhost:8000/v1", no_such_option=1)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_missing_gives_the_install_hint() -> None:
    with pytest.raises(PolicyError, match=r"CUDA GPU and `pip install evolve\[gpu\]`"):
        load_policy("vllm:Qwen/Qwen3-0.6B")


def test_cache_root_follows_evolve_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVOLVE_CACHE", str(tmp_path))
    assert embedded.cache_root() == tmp_path
    with pytest.raises(PolicyError, match="embedded models: gemma3-270m"):
        embedded.embedded_model_dir("no-such-model")


def test_concurrent_first_loads_convert_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVOLVE_CACHE", str(tmp_path))
    calls: list[Path] = []

    def slow_convert(out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")
        time.sleep(0.3)  # long enough for the others to arrive and wait on the lock
        (out / "model.safetensors").write_text("weights")

    monkeypatch.setitem(embedded.EMBEDDED, "fake", slow_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(embedded.embedded_model_dir("fake"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = tmp_path / "models" / "fake"
    assert len(calls) == 1 and results == [final] * 3
    assert (final / "model.safetensors").read_text() == "weights"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [".fake.lock", "fake"]  # no temp dirs left


def test_failed_conversion_leaves_no_half_written_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVOLVE_CACHE", str(tmp_path))

    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setitem(embedded.EMBEDDED, "broken", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        embedded.embedded_model_dir("broken")
    assert not (tmp_path / "models" / "broken").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".broken.lock"]
