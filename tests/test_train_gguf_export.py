"""Exporting weights to GGUF for llama.cpp: the real embedded model's weights through the embedded GGUF as template."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.policy import SamplingParams, load_policy
from agent.policy.embedded import embedded_gguf
from records.trajectory import Message


@pytest.mark.slow
def test_exported_weights_are_the_trained_ones_and_llamacpp_runs_them(tmp_path):
    """Every tensor of the export is the transformers weight (Gemma norms as 1 + w, llama.cpp's convention)
    within Q8_0's rounding: a block of 32 is stored as round(x / d) with d = max|x| / 127 (a float16), so each
    value is off by at most d / 2, plus float16's rounding of d (2^-11 relative): |y - x| <= max|x| / 254 * 1.001.
    llama.cpp then loads the file, renders and tokenises prompts as for the embedded file, and samples."""
    import gguf
    from gguf.quants import dequantize

    from evolve.train.gguf_export import export_gguf
    from evolve.train.modeling import load_for_training

    model, tok = load_for_training("hf:gemma3-270m", lora=None, device=torch.device("cpu"), dtype=torch.float32,
                                   trainable=False)
    with torch.no_grad():  # a "trained" change, so the export cannot pass by copying the template
        model.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    out = export_gguf(model.state_dict(), embedded_gguf("gemma3-270m"), tmp_path / "t.gguf",
                      chat_template=tok.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, model.config.num_hidden_layers)
    exported = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    state = model.state_dict()
    for hf_name in ["model.layers.0.mlp.down_proj.weight", "model.layers.5.self_attn.q_proj.weight",
                    "model.layers.0.input_layernorm.weight", "model.norm.weight", "model.embed_tokens.weight"]:
        t = exported[names.get_name(hf_name.removeprefix("model."), try_suffixes=(".weight",))]
        x = state[hf_name].numpy()
        if hf_name.endswith("norm.weight"):
            x = x + 1.0
        y = dequantize(t.data, t.tensor_type).reshape(x.shape)
        bound = 0.0 if t.tensor_type == gguf.GGMLQuantizationType.F32 else np.abs(x).max() / 254 * 1.001
        assert np.abs(y - x).max() <= bound, hf_name
    conv = [Message(role="system", content="Be brief."), Message(role="user", content="Name a colour.")]
    with load_policy(f"llamacpp:{out}", n_ctx=512) as trained, load_policy("llamacpp:gemma3-270m", n_ctx=512) as base:
        assert trained.prompt_ids(conv) == base.prompt_ids(conv)
        g = trained.generate([conv], SamplingParams(max_tokens=4, temperature=0.0))[0]
        assert g.completion_tokens > 0 and len(g.logprobs) == len(g.token_ids)
