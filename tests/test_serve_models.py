"""`evolve serve` with several models by name: the base policy and stored versions (`version:ID`,
`version:latest` answered with its id), listed by /v1/models, loaded on first use within a memory cap;
LoRA versions share one copy of the base weights. Real SQLite run store, real PEFT adapters, the tiny model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from agent.policy import load_policy
from agent.policy.base import SamplingParams
from agent.policy.serve import serve_in_thread
from evolve.serve_models import version_models
from evolve.store import RunStore
from records import PolicyVersion
from records.trajectory import Message
from tests.tiny_model import build_tiny_model

torch.set_num_threads(1)

PROMPT = [Message(role="user", content="What is the weather in Paris?")]


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A PEFT LoRA adapter on `base` with random (non-zero) weights, so that it changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").exists():
        return out
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


def make_full(base: Path, out: Path, seed: int) -> Path:
    """A full-weights version: the base with perturbed weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = build_tiny_model(root / "tiny", init_std=0.2)
    spec = f"hf:{base}"
    versions = [
        PolicyVersion(id="base0", base=spec, kind="base", created_at=1.0),
        PolicyVersion(id="lora1", parent_id="base0", base=spec, kind="sft", adapter=True,
                      path=str(make_adapter(base, root / "a1", 1)), created_at=2.0),
        PolicyVersion(id="full2", parent_id="base0", base=spec, kind="sft", path=str(make_full(base, root / "f2", 2)),
                      created_at=3.0),
        PolicyVersion(id="full3", parent_id="base0", base=spec, kind="sft", path=str(make_full(base, root / "f3", 3)),
                      created_at=4.0),
        PolicyVersion(id="lora4", parent_id="lora1", base=spec, kind="grpo", adapter=True,
                      path=str(make_adapter(base, root / "a4", 4)), created_at=5.0),
    ]
    with RunStore(root / "run1") as store:
        for v in versions:
            store.put_policy_version(v)
    return root, base, versions


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@pytest.fixture
def server(runs):
    root, base, _ = runs
    resolver, lister = version_models(root)
    full = weights_bytes(base)
    # room for the base, both adapters and ONE full version (not two)
    cap = full + weights_bytes(root / "a1") + weights_bytes(root / "a4") + int(full * 1.5)
    s = serve_in_thread(load_policy(f"hf:{base}"), port=0, model_name="tiny", resolver=resolver, lister=lister,
                        max_model_bytes=cap)
    yield s
    s.stop()


def chat(server, model: str | None) -> dict:
    body = {"messages": [{"role": "user", "content": PROMPT[0].content}], "max_tokens": 6, "temperature": 0,
            "logprobs": True}
    if model is not None:
        body["model"] = model
    r = httpx.post(f"{server.url}/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def lps(body: dict) -> list[float]:
    return [e["logprob"] for e in body["choices"][0]["logprobs"]["content"]]


def test_models_listed_and_latest_resolved_to_its_id(server, runs):
    ids = [m["id"] for m in httpx.get(f"{server.url}/models", timeout=10).json()["data"]]
    assert ids == ["tiny", "version:base0", "version:lora1", "version:full2", "version:full3", "version:lora4"]
    latest = chat(server, "version:latest")
    assert latest["model"] == "version:lora4"  # the newest trained version, by its id
    card = httpx.get(f"{server.url}/models/version:latest", timeout=10).json()
    assert card["id"] == "version:lora4" and card["loaded"] and card["max_model_len"] == 2048
    r = httpx.post(f"{server.url}/chat/completions", json={"model": "version:nope", "messages": [
        {"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_lora_versions_share_the_base_weights_and_answer_as_their_adapter(server, runs):
    root, base, versions = runs
    plain = chat(server, None)
    one = chat(server, "version:lora1")
    four = chat(server, "version:lora4")
    again = chat(server, "version:lora1")  # adapters switch per forward pass: no bleed between versions
    assert lps(one) == pytest.approx(lps(again), abs=1e-5)
    assert lps(plain) == pytest.approx(lps(chat(server, "tiny")), abs=1e-5)
    assert lps(one) != pytest.approx(lps(plain), abs=1e-3) and lps(one) != pytest.approx(lps(four), abs=1e-3)
    reference = load_policy(f"hf:{base}", adapter=str(root / "a1")).generate([PROMPT], SamplingParams(max_tokens=6,
                                                                                               temperature=0))[0]
    assert one["choices"][0]["message"]["content"] == reference.text
    assert lps(one) == pytest.approx(reference.logprobs, abs=1e-4)  # float32, cached vs batched forward
    loaded = server.models.loaded
    shared = loaded["tiny"].shared
    assert loaded["version:lora1"].shared is shared and loaded["version:lora4"].shared is shared
    assert shared.adapters == {"version:lora1", "version:lora4"}
    # one copy of the weights: the base plus two adapters' bytes
    assert server.models.used_bytes() == weights_bytes(base) + weights_bytes(root / "a1") + weights_bytes(root / "a4")


def test_memory_cap_closes_idle_versions_least_recently_used_first(server, runs):
    a = chat(server, "version:full2")
    assert "version:full2" in server.models.loaded
    b = chat(server, "version:full3")  # two full versions do not fit: the idle full2 is closed
    assert "version:full3" in server.models.loaded and "version:full2" not in server.models.loaded
    assert server.models.used_bytes() <= server.models.max_bytes
    assert lps(chat(server, "version:full2")) == pytest.approx(lps(a), abs=1e-5)  # loaded again on use
    assert "version:full3" not in server.models.loaded
    assert lps(a) != pytest.approx(lps(b), abs=1e-3)


def test_cli_serves_versions_by_name(runs, tmp_path):
    root, base, _ = runs
    port = 18000 + int(time.time()) % 1000
    proc = subprocess.Popen([sys.executable, "-m", "evolve.cli", "serve", "--policy", "version:latest", "--runs-root",
                             str(root), "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise AssertionError(proc.stderr.read() if proc.poll() is not None else "no server")
        assert models[0]["id"] == "version:lora4"  # the base of this server is the latest version, by id
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}, timeout=60).json()
        assert r["model"] == "version:lora4"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
