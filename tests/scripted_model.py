"""A tiny model that says what a script says: `tiny_model.py`'s Llama fine-tuned (in seconds, on the CPU) until
greedy decoding of each given conversation gives its scripted reply, e.g. a tool call. Real weights and a real
tokenizer, so a served model that "emits tool calls" goes through every layer of the server unmocked."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from agent.policy.base import SamplingParams
from records.trajectory import Message
from tests.tiny_model import EOS, build_tiny_model


def _key(examples: list[tuple[list[Message], list[dict[str, Any]] | None, str]]) -> str:
    data = [([m.model_dump(mode="json") for m in msgs], tools, reply) for msgs, tools, reply in examples]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def train_to_say(path: Path, examples: list[tuple[list[Message], list[dict[str, Any]] | None, str]],
                 max_steps: int = 600) -> Path:
    """Write at `path` a tiny model whose greedy reply to each (conversation, tools) is its scripted text
    (then `<|im_end|>`); reused when already trained on the same examples."""
    import torch

    from agent.policy.hf import HFPolicy

    marker = path / "scripted.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == _key(examples):
        return path
    base = build_tiny_model(path.parent / f"{path.name}-base", hidden=64, layers=2, init_std=0.02)
    policy = HFPolicy(str(base), device="cpu")
    tok, model = policy.tokenizer, policy.model
    rows = []
    for messages, tools, reply in examples:
        prompt = policy.prompt_ids(messages, tools)
        target = tok(reply + EOS, add_special_tokens=False)["input_ids"]
        rows.append((torch.tensor([prompt + target]), len(prompt)))
    width = max(ids.shape[1] for ids, _ in rows)
    batch = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):  # right-padded; loss on the replies only
        n = ids.shape[1]
        batch[i, :n], mask[i, :n] = ids[0], 1
        labels[i, n_prompt:n] = ids[0, n_prompt:]
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a loaded 2-core machine one thread is ~10x faster for a model this small
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(max_steps):
        logits = model(input_ids=batch, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 labels[:, 1:].reshape(-1), ignore_index=-100)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 9 and loss.item() < 0.01:
            model.eval()
            if all(_says(policy, e) for e in examples):
                break
            model.train()
    else:
        raise AssertionError(f"the scripted model did not learn its script in {max_steps} steps")
    torch.set_num_threads(threads)
    model.eval()
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    marker.write_text(json.dumps({"key": _key(examples)}))
    return path


def _says(policy: Any, example: tuple[list[Message], list[dict[str, Any]] | None, str]) -> bool:
    messages, tools, reply = example
    gen = policy.generate([messages], SamplingParams(max_tokens=200, temperature=0.0), tools)[0]
    return gen.text == reply and gen.finish_reason == "stop"
