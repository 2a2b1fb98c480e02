"""Block attention (`evolve.train.attention`) against plain masked attention, and the LoRA sums kept in float32.

Tolerances (float32 inputs, u = 2^-24):

* a score is a dot product of length D: off by at most gamma_D * sum_i |q_i k_i| * scale (any summation order);
* softmax moves each probability by at most 2 max |d score| of its row, relatively (it is 2-Lipschitz in the max
  norm on log-probabilities), so an output sum_j p_j v_j moves by at most that times max |v|, plus the rounding
  of its own sum over n keys, gamma_n max |v|.
Checked against a float64 computation of the same formula.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.train.attention import block_attention, causal_mask, plan_blocks  # noqa: E402

torch.set_num_threads(1)
U32 = 2.0 ** -24


def _gamma(n: int, u: float = U32) -> float:
    return n * u / (1 - n * u)


def _reference(q, k, v, mask, scale):
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ kk.transpose(-1, -2)) * scale
    return s.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0) @ vv


def _masks(R: int, L: int, window: int | None) -> torch.Tensor:
    """Causal (sliding) rows; row 1 holds two packed sequences; row 2 a tree (trunk of 20, two branches);
    the last query of row 0 attends to nothing (a row the softmax must leave at 0, not NaN)."""
    m = causal_mask(L, window, torch.device("cpu")).expand(R, 1, L, L).clone()
    m[1, :, L // 2:, :L // 2] = False
    b1, b2 = slice(20, 60), slice(60, L)
    m[2, :, b2, b1] = False
    m[0, :, -1, :] = False
    return m


@pytest.mark.parametrize("heads,kv_heads,window,block", [(4, 1, 16, 32), (2, 2, None, 7), (4, 2, 40, 128)])
def test_block_attention_equals_masked_softmax_attention_with_its_gradients(heads, kv_heads, window, block):
    R, L, D, scale = 3, 150, 16, 0.3
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(R, h, L, D, generator=g) for h in (heads, kv_heads, kv_heads))
    mask = _masks(R, L, window)
    up = torch.randn(R, heads, L, D, generator=g)
    qs, ks, vs = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = block_attention(qs, ks, vs, mask, scale=scale, block=block)
    (out * up).sum().backward()
    qd, kd, vd = (t.double().requires_grad_(True) for t in (q, k, v))
    ref = _reference(qd, kd, vd, mask, scale)
    (ref * up.double()).sum().backward()
    ds = _gamma(D) * (q.abs().amax() * k.abs().amax() * D * scale).item()
    tol_out = (4 * ds + _gamma(L)) * v.abs().amax().item() + 1e-7
    assert (out.double() - ref).abs().max().item() <= tol_out
    assert out[0, :, -1].abs().max().item() == 0.0  # a query with no key gets 0
    # gradients: the same sums in another order, through exp and a softmax backward: a few times the output's bound
    # relative to each gradient's scale
    for mine, theirs in ((qs.grad, qd.grad), (ks.grad, kd.grad), (vs.grad, vd.grad)):
        assert (mine.double() - theirs).abs().max().item() <= 8 * tol_out * theirs.abs().max().item() + 1e-6


def test_block_attention_skips_the_pairs_the_mask_forbids():
    """A 1,024-token row with a 64-token sliding window: the score products cover at most (block + window) keys per
    query (dense masked attention multiplies all 1,024), counted on the matmuls actually dispatched."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        macs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.bmm.default, torch.ops.aten.mm.default):
                a, b = args[0], args[1]
                Count.macs += a.numel() * b.shape[-1]
            return func(*args, **(kwargs or {}))

    L, D, window, block = 1024, 8, 64, 64
    q, k, v = torch.randn(1, 1, L, D), torch.randn(1, 1, L, D), torch.randn(1, 1, L, D)
    mask = causal_mask(L, window, torch.device("cpu"))
    with Count():
        block_attention(q, k, v, mask, block=block)
    dense = 2 * L * L * D  # q k^T and p v over every pair
    assert Count.macs <= 2 * L * (block + window) * D < dense / 6
    assert all(hi - lo <= block + window for s, e, lo, hi in plan_blocks(mask, block))


def _tiny_gemma3(vocab: int, attention: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from evolve.train.attention import use_block_attention

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=1024, attn_implementation="sdpa")
    model = Gemma3ForCausalLM(config)
    if attention == "blocks":
        use_block_attention(model)
    return model


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-attn"))


def _tree_batch(tok):
    from evolve.train.data import build_sequences, micro_batches
    from records import Message, Step, Trajectory, TrajectoryStatus

    prompt = [Message(role="system", content="You are a helpful assistant. Call tools to answer."),
              Message(role="user", content="What is the weather in Paris today?")]
    items = [(Trajectory(instance_id="i", status=TrajectoryStatus.submitted, prompt=prompt,
                         steps=[Step(index=0, response=Message(role="assistant", content=a))]), 1.0)
             for a in ("<think>weather</think>", '<tool_call>\n{"name": "search"}\n</tool_call>', "ok")]
    items.append((Trajectory(instance_id="j", status=TrajectoryStatus.submitted,
                             prompt=[Message(role="user", content="Another request entirely, and a longer one.")],
                             steps=[Step(index=0, response=Message(role="assistant", content="fine"))]), 0.0))
    seqs, _ = build_sequences(items, tok, max_len=512)
    [batch] = micro_batches(seqs, list(range(len(seqs))), micro_batch_size=8, max_len=512, pack=True, pad_id=0,
                            share_prefix=True)
    return batch


def test_a_gemma3_tree_batch_gives_the_same_logprobs_and_gradients_with_blocks_as_with_sdpa(tok):
    """Packed rows, a shared-prefix tree and sliding windows (8 tokens) through the whole model: block attention and
    transformers' SDPA compute the same float32 dot products in another order; over 3 layers of O(1) activations
    the bound above is ~1e-6 per log-prob, checked at 1e-5 (and gradients at 1e-4 of their scale)."""
    from evolve.train.losses import masked_nll
    from evolve.train.modeling import forward_logprobs

    batch = _tree_batch(tok)
    assert int(batch.branch_ids.max()) >= 2  # a real tree
    results = {}
    for attention in ("sdpa", "blocks"):
        model = _tiny_gemma3(len(tok), attention)
        logp, _, _ = forward_logprobs(model, batch, compute_dtype=torch.float32)
        masked_nll(logp, torch.ones_like(logp)).backward()
        results[attention] = (logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (lp_s, g_s), (lp_b, g_b) = results["sdpa"], results["blocks"]
    assert torch.allclose(lp_s, lp_b, atol=1e-5)
    for n, grad in g_s.items():
        assert (g_b[n] - grad).abs().max().item() <= 1e-4 * grad.abs().max().item() + 1e-8, n


def test_generation_with_block_attention_matches_sdpa(tok):
    """The live GRPO rollout samples with the training model: prompts (padded, batched) go through block attention,
    decoding steps (one query, a KV cache) through SDPA; greedy tokens are those of the SDPA model."""
    ids = tok(["What is the weather in Paris today?", "Hi"], return_tensors="pt", padding=True, padding_side="left")
    outs = []
    for attention in ("sdpa", "blocks"):
        model = _tiny_gemma3(len(tok), attention).eval()
        outs.append(model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id))
    assert torch.equal(outs[0], outs[1])


def test_a_small_lora_update_survives_the_bfloat16_forward(tmp_path):
    """The adapter's update after one small step is far below bfloat16's grid step of the frozen layers' outputs.
    Added in bfloat16 it rounds back to exactly the frozen output (the loss barely moves); added in float32
    (`keep_adapter_sums_float32`, applied by load_for_training) the bfloat16 forward sees the change that float32
    sees, to within bfloat16's rounding of everything else: the two forwards round the same frozen outputs, so most
    of it cancels in the change; measured 12% of the change (~1e-2 here), checked at 25%. Without the float32 sums
    the bfloat16 change was +0.005 against float32's -0.014: not even its sign."""
    from evolve.train.data import build_sequences, collate
    from evolve.train.losses import masked_nll
    from evolve.train.modeling import LoraSettings, forward_logprobs, load_for_training
    from records import Message, Step, Trajectory, TrajectoryStatus

    path = build_tiny_model(tmp_path / "m", init_std=0.5)
    model, tok = load_for_training(f"hf:{path}", lora=LoraSettings(r=4, alpha=8), device=torch.device("cpu"),
                                   dtype=torch.float32)  # float32 weights: compute_dtype alone picks the precision
    trajs = [(Trajectory(instance_id=f"i{k}", status=TrajectoryStatus.submitted,
                         prompt=[Message(role="user", content=f"List the files of project {k}, then read the README.")],
                         steps=[Step(index=0, response=Message(role="assistant", content="<think>ls</think>" * 4))]),
              1.0) for k in range(4)]
    seqs, _ = build_sequences(trajs, tok, max_len=512)
    batch = collate(seqs, [[i] for i in range(len(seqs))], tok.pad_token_id)

    def losses():
        with torch.no_grad():
            return {dt: masked_nll(lp := forward_logprobs(model, batch, compute_dtype=dt)[0],
                                   torch.ones_like(lp)).item() for dt in (torch.float32, torch.bfloat16)}

    before = losses()
    logp = forward_logprobs(model, batch, compute_dtype=torch.float32)[0]
    masked_nll(logp, torch.ones_like(logp)).backward()
    for n, p in model.named_parameters():  # a descent step of the adapter, at most 3e-4 per entry
        if "lora_B" in n:
            p.data = -3e-4 * p.grad / p.grad.abs().max()
    after = losses()
    change32 = after[torch.float32] - before[torch.float32]
    change16 = after[torch.bfloat16] - before[torch.bfloat16]
    assert change32 < -1e-3
    assert abs(change16 - change32) <= 0.25 * abs(change32)

    from evolve.train.modeling import _float32_output  # without the hooks: the update is lost in bfloat16
    for m in model.modules():
        m._forward_hooks = {k: h for k, h in m._forward_hooks.items() if h is not _float32_output}
    lost = losses()
    assert abs((lost[torch.bfloat16] - before[torch.bfloat16]) - change32) > 0.25 * abs(change32)
