"""A trained policy version as a GGUF file for llama.cpp (`evolve train export-gguf`): fast CPU sampling of it.

The trained weights (a LoRA adapter merged into its base, or full weights) are written into a copy of a
template GGUF of the same architecture, by default the embedded model's own file: every metadata field
(architecture, hyper-parameters, the tokenizer's vocabulary and merges) is copied from it, so llama.cpp
tokenises and runs the export exactly as it runs the template, and each tensor is replaced by the trained
one under its GGUF name (`gguf.TensorNameMap`). Gemma's RMSNorm multiplies by ``1 + w`` where llama.cpp
multiplies by ``w``, so Gemma norm weights are written as ``1 + w`` (the inverse of what transformers does
when it loads a Gemma GGUF). Matrices are written as Q8_0 (8-bit blocks, about half the size of float16
and within 0.4% of each weight) or F16/F32; norms stay F32. The chat template of the trained model's
tokenizer is stored in the file, so `llamacpp:FILE` renders prompts as `hf:` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import torch

from agent.policy.embedded import embedded_gguf
from evolve.train.errors import TrainError
from evolve.train.modeling import load_for_training
from evolve.train.versions import resolve_policy

log = logging.getLogger(__name__)

TensorType = Literal["q8_0", "f16", "f32"]

GEMMA_ARCHS = ("gemma", "gemma2", "gemma3", "gemma3n")
"""Architectures whose RMSNorm scales by (1 + weight)."""


def export_gguf(state: dict[str, Any], template: Path, out: Path, *, tensor_type: TensorType = "q8_0",
                chat_template: str | None = None) -> Path:
    """Write ``state`` (a transformers state dict of the template's architecture) as ``out``; see the module
    docstring. Written to a temporary file and renamed, so ``out`` is never half-written."""
    reader = gguf.GGUFReader(str(template))
    arch = reader.fields["general.architecture"].contents()
    by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise ValueError(f"unknown GGUF architecture {arch!r} in {template}")
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    names = gguf.get_tensor_name_map(by_name[arch], n_blocks)
    wanted = {t.name: t for t in reader.tensors}

    tensors: dict[str, np.ndarray] = {}
    for hf_name, value in state.items():
        name = names.get_name(hf_name.removeprefix("model.").removeprefix("language_model."),
                              try_suffixes=(".weight", ".bias")) or names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or name not in wanted:
            if hf_name.endswith("lm_head.weight"):
                continue  # tied to the embedding: llama.cpp uses token_embd for the output
            raise ValueError(f"tensor {hf_name} has no place in the {arch} GGUF template {template.name}")
        w = value.detach().to(torch.float32).cpu().numpy()
        if arch in GEMMA_ARCHS and name.endswith("norm.weight"):
            w = w + 1.0
        tensors[name] = w
    missing = sorted(set(wanted) - set(tensors))
    if missing:
        raise ValueError(f"the trained weights lack {len(missing)} tensors of the template: {missing[:4]}")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "f32": gguf.LlamaFileType.ALL_F32}[tensor_type]
    writer.add_file_type(int(file_type))
    if chat_template:
        writer.add_chat_template(chat_template)
    for t in reader.tensors:  # the template's order
        w = tensors[t.name]
        if w.ndim >= 2 and tensor_type == "q8_0" and w.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(t.name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif w.ndim >= 2 and tensor_type != "f32":
            writer.add_tensor(t.name, w.astype(np.float16))
        else:
            writer.add_tensor(t.name, w.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    log.info("wrote %s (%s, %.0f MB)", out, tensor_type, out.stat().st_size / 1e6)
    return out


def export_policy(spec: str, out: Path, *, runs_root: Path | None = None, tensor_type: TensorType = "q8_0",
                  template: Path | None = None) -> Path:
    """Export a policy (`version:ID`, `version:latest` or `hf:DIR` of the embedded model's architecture) to
    ``out``; a LoRA version is merged into its base first. ``template``: default the embedded model's GGUF."""
    base, kw = resolve_policy(spec, Path(runs_root or "runs"))
    if not base.startswith("hf:"):
        raise TrainError(f"export-gguf needs a trained version or hf: model, not {spec!r}")
    model, tok = load_for_training(base, adapter=kw.get("adapter"), lora=None, device=torch.device("cpu"),
                                   dtype=torch.float32, trainable=False)
    template = template or embedded_gguf("gemma3-270m")
    try:
        return export_gguf(model.state_dict(), template, out, tensor_type=tensor_type,
                           chat_template=tok.chat_template if isinstance(tok.chat_template, str) else None)
    except ValueError as e:
        raise TrainError(f"cannot export {spec} into the GGUF layout of {template.name}: {e}") from None
