"""A tiny causal LM + byte-level BPE tokenizer for fast, real (unmocked) tests.

`build_tiny_model(path)` writes a directory that `AutoModelForCausalLM.from_pretrained(path)` and
`AutoTokenizer.from_pretrained(path)` load offline: a randomly initialised Llama (seeded) and a
byte-level BPE tokenizer trained in code on a small built-in corpus (ToolRL-style `<think>`,
`<tool_call>` and JSON text, Python code, English), with a ChatML chat template
(`<|im_start|>role\\n...<|im_end|>\\n`, `add_generation_prompt` supported).

Special tokens: bos `<|endoftext|>` (not added automatically), eos `<|im_end|>`, pad `<|pad|>`.
Any text round-trips (byte-level), so unknown characters never break a test.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL_TOKENS = [BOS, PAD, IM_START, EOS]
VOCAB_SIZE = 512  # 256 bytes + 4 specials + ~250 merges

# Note: transformers renders chat templates with trim_blocks/lstrip_blocks, so newlines that follow a
# block tag are written as {{ '\n' }} expressions.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system{{ '\\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "# Tools{{ '\\n' }}<tools>"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n' }}</tools><|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{% if message.get('tool_calls') %}"
    "{% for call in message['tool_calls'] %}"
    "{% set fn = call['function'] if call.get('function') else call %}"
    "{{ '\\n<tool_call>\\n' }}{\"name\": \"{{ fn['name'] }}\", \"arguments\": {{ fn['arguments'] | tojson }}}"
    "{{ '\\n</tool_call>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "<think>I need to look at the file first, then run the tests.</think>",
    '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>',
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "src/main.py"}}\n</tool_call>',
    '<tool_call>\n{"name": "search", "arguments": {"query": "weather in Paris", "limit": 5}}\n</tool_call>',
    '<tool_response>\n{"result": "ok", "value": 42}\n</tool_response>',
    "<response>The answer is 42.</response>",
    "def add(a: int, b: int) -> int:\n    return a + b\n",
    "import os\nimport sys\n\nfor i in range(10):\n    print(i)\n",
    "class Solution:\n    def solve(self, nums: list[int]) -> int:\n        return sum(nums)\n",
    "diff --git a/src/main.py b/src/main.py\n--- a/src/main.py\n+++ b/src/main.py\n@@ -1,3 +1,3 @@\n",
    "The quick brown fox jumps over the lazy dog. Hello, world! What is the weather today?",
    "You are a helpful assistant. Call tools to answer the user's question, then give the answer.",
    "system user assistant tool function arguments name content role true false null",
]


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tok


def _write(out: Path, seed: int, hidden: int, layers: int, init_std: float) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps({"seed": seed, "hidden": hidden, "layers": layers, "init_std": init_std}))


def build_tiny_model(
    path: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2, init_std: float = 0.02
) -> Path:
    """Write (or reuse) a tiny Llama + tokenizer at `path`; return `path`.

    `init_std` is the weights' init scale: the default 0.02 gives near-uniform next-token
    distributions (diverse samples); larger (e.g. 0.5) gives peaked, context-dependent ones.
    Idempotent: a directory already built with the same settings is reused. Safe under concurrent
    builders: the files are written to a temporary sibling directory, then renamed into place.
    """
    path = Path(path)
    want = {"seed": seed, "hidden": hidden, "layers": layers, "init_std": init_std}
    marker = path / "tiny_model.json"
    if marker.exists() and json.loads(marker.read_text()) == want:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write(tmp, seed, hidden, layers, init_std)
        if path.exists():
            if marker.exists() and json.loads(marker.read_text()) == want:
                return path  # another builder won the race
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (marker.exists() and json.loads(marker.read_text()) == want):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
