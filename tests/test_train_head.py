"""The chunked output layer (`evolve.train.head`) against the full-logits computation it replaces.

Tolerances are derived, not tuned:

* float32 against float32: the two sides compute the same dot products, possibly in another summation
  order (BLAS picks kernels by shape). A dot product of length H summed in any order is off by at most
  ``gamma_H * sum_i |h_i w_i|`` with ``gamma_H = H u / (1 - H u)``, u = 2^-24 (float32's unit roundoff);
  log p = z_t - logsumexp(z) moves by at most twice the largest logit error, plus the rounding of the
  result itself (a few u |log p|).
* bfloat16 against float32: bfloat16 keeps 8 significant bits (7 stored + 1 implicit), u = 2^-8. Rounding
  both factors of a product to bfloat16 changes it by at most (2u + u^2) of its size, and the float32
  accumulation adds ``gamma_H`` of float32, so ``|dz| <= (2u + u^2 + gamma_H) sum_i |h_i w_i|`` and
  ``|d log p| <= 2 max |dz|``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.train.head import head_logprobs  # noqa: E402

torch.set_num_threads(1)

U32 = 2.0 ** -24
U16 = 2.0 ** -8


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def _reference(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, temperature: float = 1.0):
    z = (h @ w.T) / temperature
    logp = z.log_softmax(-1)
    return logp.gather(-1, t[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


def _abs_dot(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_i |h_i w_i| for every (row, vocabulary entry): the scale of each logit's rounding error."""
    return h.abs() @ w.abs().T


def _data(n=37, hdim=48, vocab=301, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hdim, generator=g)
    w = torch.randn(vocab, hdim, generator=g) * 0.3
    t = torch.randint(0, vocab, (n,), generator=g)
    return h, w, t


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_equal_full_logits(chunk, temperature):
    h, w, t = _data()
    ref_lp, ref_ent = _reference(h, w, t, temperature)
    lp, ent = head_logprobs(h, w, t, temperature=temperature, chunk=chunk)
    dz = _gamma(h.shape[1], U32) * _abs_dot(h, w).max(-1).values / temperature
    tol = 2 * dz + 8 * U32 * (ref_lp.abs() + math.log(w.shape[0]))
    assert ((lp - ref_lp).abs() <= tol).all()
    assert ((ent - ref_ent).abs() <= 2 * dz + 8 * U32 * math.log(w.shape[0])).all()


@pytest.mark.parametrize("train_weight", [False, True])
def test_chunked_gradients_equal_autograd_of_full_logits(train_weight):
    """Frozen weight (LoRA: the gradient is prepared in the forward pass) and trained weight (recomputed in
    the backward pass) give autograd's gradients of the full-logits log-probs for any upstream gradient."""
    h, w, t = _data()
    g = torch.randn(h.shape[0], generator=torch.Generator().manual_seed(1))
    hr = h.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(train_weight)
    (_reference(hr, wr, t, 0.8)[0] * g).sum().backward()
    hc = h.clone().requires_grad_(True)
    wc = w.clone().requires_grad_(train_weight)
    (head_logprobs(hc, wc, t, temperature=0.8, chunk=8)[0] * g).sum().backward()
    # d logp/dz = onehot - p is exact to a few float32 roundings per entry (|.| <= 2); each gradient entry
    # is a sum of N or V products of such terms with h or w: bounded by gamma_{V+1} * sum |dz| |w|.
    scale_h = (g.abs()[:, None] * 2 / 0.8) * w.abs().sum(0)[None, :]
    assert ((hc.grad - hr.grad).abs() <= _gamma(w.shape[0] + h.shape[1] + 8, U32) * scale_h * 4).all()
    if train_weight:
        scale_w = (2 / 0.8) * (g.abs()[:, None] * h.abs()).sum(0)[None, :].expand_as(w)
        assert ((wc.grad - wr.grad).abs() <= _gamma(h.shape[0] + h.shape[1] + 8, U32) * scale_w * 4).all()
    else:
        assert wc.grad is None


def test_bfloat16_logprobs_within_the_bound_of_an_8_bit_mantissa():
    h, w, t = _data(n=64, hdim=64, vocab=512)
    ref_lp, _ = _reference(h.double(), w.double(), t)
    lp, _ = head_logprobs(h, w, t, chunk=16, compute_dtype=torch.bfloat16)
    dz = (2 * U16 + U16 ** 2 + _gamma(h.shape[1], U32)) * _abs_dot(h, w).max(-1).values
    err = (lp.double() - ref_lp).abs()
    assert (err <= 2 * dz + 8 * U32 * ref_lp.abs()).all()
    assert err.max() > 1e-4  # bfloat16 really was used (float32 would be ~1e-6 here)


def test_no_tensor_of_tokens_by_vocabulary_is_ever_allocated():
    """Forward and backward of 200 rows over a 4096-token vocabulary in chunks of 16: no op output holds
    more than a chunk's logits (16 x 4096); the full-logits path would make 200 x 4096 several times."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        biggest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, torch.Tensor):
                    Largest.biggest = max(Largest.biggest, o.numel())
            return out

    n, vocab, chunk = 200, 4096, 16
    h, w, t = _data(n=n, hdim=32, vocab=vocab)
    for train_weight in (False, True):
        Largest.biggest = 0
        hc = h.clone().requires_grad_(True)
        wc = w.clone().requires_grad_(train_weight)
        with Largest():
            lp, _ = head_logprobs(hc, wc, t, chunk=chunk)
            lp.sum().backward()
        assert max(w.numel(), chunk * vocab) >= Largest.biggest
        assert Largest.biggest < n * vocab


# --- on a real (tiny) model ----------------------------------------------------------------------------

def _batch(tok):
    from evolve.train.data import build_sequences, collate, plan_rows
    from records import Message, Step, Trajectory, TrajectoryStatus

    def traj(k):
        return Trajectory(instance_id=f"i{k}", status=TrajectoryStatus.submitted,
                          prompt=[Message(role="system", content="You are an agent." * (k + 1)),
                                  Message(role="user", content=f"List files {k}.")],
                          steps=[Step(index=0, response=Message(role="assistant", content="<think>ls</think>" * (k + 1)),
                                      observation=Message(role="tool", content="README.md")),
                                 Step(index=1, response=Message(role="assistant", content="<response>done</response>"))])

    seqs, _ = build_sequences([(traj(k), 1.0) for k in range(3)], tok, max_len=512)
    return collate(seqs, plan_rows([len(s) for s in seqs], 512), tok.pad_token_id)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-head", init_std=0.5)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _full_logits_nll(model, b):
    """The plain computation: every position's logits through transformers, log-softmax, mean NLL."""
    logits = model(input_ids=b.input_ids, position_ids=b.position_ids, attention_mask=None, use_cache=False).logits
    logp = logits[:, :-1].float().log_softmax(-1).gather(-1, b.targets[..., None]).squeeze(-1)
    return -(logp * b.mask).sum() / b.mask.sum(), logits


def test_sft_loss_and_gradients_equal_the_full_logits_path(tiny):
    from evolve.train.losses import masked_nll
    from evolve.train.modeling import forward_logprobs

    model, tok = tiny
    b = _batch(tok)
    model.zero_grad()
    ref, logits = _full_logits_nll(model, b)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logp, _, _ = forward_logprobs(model, b, chunk=7, compute_dtype=torch.float32)
    loss = masked_nll(logp, torch.ones_like(logp))
    loss.backward()
    # Same float32 dot products (bound in the module docstring), averaged: the loss moves by at most the
    # largest per-token bound; gradients likewise, relative to each parameter's gradient scale.
    hdim = model.config.hidden_size
    assert abs(loss.item() - ref.item()) <= 2 * _gamma(hdim, U32) * logits.abs().max().item() * 4 + 8 * U32 * ref.item()
    for n, p in model.named_parameters():
        scale = ref_grads[n].abs().max().item()
        assert (p.grad - ref_grads[n]).abs().max().item() <= 1e-4 * scale + 1e-7, n


def test_bfloat16_autocast_loss_matches_float32_within_the_argued_bound(tiny):
    """The whole model under bfloat16 autocast: every matmul rounds its two factors to 8 significant bits,
    a relative change of at most 2u + u^2 (u = 2^-8) of each product's size. To first order these add
    along the longest chain of matmuls from input to logit: 4 per layer (q/k/v projection, attention scores,
    attention-weighted values, output projection... taken as 4 for attention and 3 for the MLP) plus the
    head, so each logit moves by at most D (2u + u^2) |z|_max with D = 7 L + 1, and the mean NLL by twice
    that (log-softmax is 2-Lipschitz in the max norm)."""
    from evolve.train.losses import masked_nll
    from evolve.train.modeling import forward_logprobs

    model, tok = tiny
    b = _batch(tok)
    with torch.no_grad():
        ref, logits = _full_logits_nll(model, b)
        lp16, _, _ = forward_logprobs(model, b, compute_dtype=torch.bfloat16)
        loss16 = masked_nll(lp16, torch.ones_like(lp16))
    depth = 7 * model.config.num_hidden_layers + 1
    bound = 2 * depth * (2 * U16 + U16 ** 2) * logits.abs().max().item()
    diff = abs(loss16.item() - ref.item())
    assert diff <= bound
    assert diff > 0  # bfloat16 was really used


# --- shared prefixes (trees) ------------------------------------------------------------------------------

def _tiny_gemma3(vocab: int):
    """A random Gemma 3 with sliding-window layers (window 8, shorter than the prompts) and a global one."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                              max_position_embeddings=1024, attn_implementation="sdpa")
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_group_laid_out_as_a_tree_gives_each_sequence_its_own_logprobs(tiny, arch):
    """A GRPO group (one prompt, several completions) as one tree: the prompt once, each completion attending
    to it and to itself. Every trained token's log-prob equals the one computed for its sequence alone, in
    float32: the same dot products (masked keys add exact zeros after the softmax) in another summation order;
    the bound of the module docstring over a few layers of O(1) activations is ~1e-6, checked at 1e-5."""
    from evolve.train.data import build_sequences, collate, micro_batches
    from evolve.train.modeling import forward_logprobs
    from records import Message, Step, Trajectory, TrajectoryStatus

    model, tok = tiny
    if arch == "gemma3":
        model = _tiny_gemma3(len(tok))
    prompt = [Message(role="system", content="You are a helpful assistant. Call tools to answer."),
              Message(role="user", content="What is the weather in Paris today?")]
    answers = ["<think>weather</think>", '<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>', "ok",
               "<response>The answer is 42.</response>"]
    items = [(Trajectory(instance_id="i", status=TrajectoryStatus.submitted, prompt=prompt,
                         steps=[Step(index=0, response=Message(role="assistant", content=a))]), 1.0) for a in answers]
    items.append((Trajectory(instance_id="j", status=TrajectoryStatus.submitted,
                             prompt=[Message(role="user", content="Another request entirely.")],
                             steps=[Step(index=0, response=Message(role="assistant", content="ok"))]), 0.0))
    seqs, _ = build_sequences(items, tok, max_len=512)
    [tree] = micro_batches(seqs, list(range(len(seqs))), micro_batch_size=8, max_len=512, pack=True, pad_id=0,
                           share_prefix=True)
    assert tree.tokens < sum(len(s) for s in seqs) - 3 * 20  # the prompt (> 20 tokens) is there once, not 4 times
    with torch.no_grad():
        lp, _, keep = forward_logprobs(model, tree, compute_dtype=torch.float32)
        sid = tree.seq_ids[keep]
        for i in range(len(seqs)):
            b = collate(seqs, [[i]], 0)
            alone, _, _ = forward_logprobs(model, b, compute_dtype=torch.float32)
            assert alone.numel() == int((sid == i).sum()) > 0
            # and alone, our masks are transformers' own (sliding windows included)
            own = model(input_ids=b.input_ids).logits[:, :-1].log_softmax(-1).gather(-1, b.targets[..., None])
            assert torch.allclose(own.squeeze(-1)[b.mask > 0], alone, atol=1e-5)
            assert torch.allclose(lp[sid == i], alone, atol=1e-5), i
