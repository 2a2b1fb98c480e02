"""The pure GRPO/SFT losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from evolve.train.losses import (group_advantages, kl_k3, masked_nll, policy_loss, token_entropy,
                                 token_logprobs)

torch.set_num_threads(1)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- advantages -------------------------------------------------------------------------------------

def test_advantages_mean_and_std():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    adv, keep = group_advantages(r, g, scale_by_std=False)
    assert adv[:4].tolist() == [0.5, -0.5, -0.5, 0.5]
    assert keep.tolist() == [True] * 4 + [False] * 3  # all-equal group skipped
    assert adv[4:].tolist() == [0.0, 0.0, 0.0]
    adv, _ = group_advantages(r, g, scale_by_std=True, eps=0.0)
    std = math.sqrt((4 * 0.25) / 3)  # unbiased std of [1, 0, 0, 1]
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / std)


def test_advantages_singleton_group_skipped():
    adv, keep = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0, 1, 1]))
    assert keep.tolist() == [False, True, True]
    assert adv[0] == 0.0


# --- masking ----------------------------------------------------------------------------------------

def test_masked_tokens_get_exactly_zero_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.1, math.nan, -0.4, math.inf]])  # junk where masked out must not leak
    mask = t([1, 0, 1, 0])
    adv = torch.full((1, 4), 2.0)
    for norm in ("sequence", "token", "constant"):
        logp.grad = None
        loss, _ = policy_loss(logp, old, adv, mask, norm=norm, max_len=8,
                              ref_logp=torch.tensor([[-1.0, math.nan, -0.5, 5.0]]), kl_coef=0.1)
        loss.backward()
        assert torch.isfinite(loss)
        assert logp.grad[0, 1] == 0.0 and logp.grad[0, 3] == 0.0
        assert logp.grad[0, 0] != 0.0 and logp.grad[0, 2] != 0.0


def test_changing_a_masked_logprob_changes_nothing():
    mask = t([1, 1, 0])
    adv = torch.ones(1, 3)
    old = t([-1.0, -1.0, -1.0])
    a, _ = policy_loss(t([-0.9, -1.2, -7.0]), old, adv, mask)
    b, _ = policy_loss(t([-0.9, -1.2, 3.0]), old, adv, mask)
    assert a.item() == b.item()


def test_sft_nll_ignores_masked_tokens():
    logp = torch.tensor([-1.0, -2.0, -4.0], requires_grad=True)
    loss = masked_nll(logp, t(1, 0, 1))
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert logp.grad.tolist() == [-0.5, 0.0, -0.5]


# --- clipping ---------------------------------------------------------------------------------------

def test_clip_high_and_low_separately():
    # ratios e^0.5=1.65 (adv +1: clipped at 1.28), e^-0.5=0.61 (adv -1: clipped at 0.8), e^0.1 (no clip)
    logp = torch.tensor([[0.5, -0.5, 0.1]], requires_grad=True)
    old = torch.zeros(1, 3)
    adv = t([1.0, -1.0, 1.0])
    loss, st = policy_loss(logp, old, adv, torch.ones(1, 3), clip_low=0.2, clip_high=0.28, norm="token")
    expected = (-1.28 + 0.8 - math.exp(0.1)) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert (st.clipped_high, st.clipped_low, st.tokens) == (1.0, 1.0, 3.0)
    loss.backward()
    # clipped tokens get no gradient; the unclipped one gets -A * r / n
    assert logp.grad[0, 0] == 0.0 and logp.grad[0, 1] == 0.0
    assert logp.grad[0, 2].item() == pytest.approx(-math.exp(0.1) / 3, abs=1e-6)


def test_clip_is_one_sided():
    # positive advantage with a low ratio, negative advantage with a high ratio: not clipped (pessimistic bound)
    logp = torch.tensor([[-0.5, 0.5]], requires_grad=True)
    loss, st = policy_loss(logp, torch.zeros(1, 2), t([1.0, -1.0]), torch.ones(1, 2), norm="token")
    assert st.clipped_low == st.clipped_high == 0.0
    assert loss.item() == pytest.approx((-math.exp(-0.5) + math.exp(0.5)) / 2, abs=1e-6)
    loss.backward()
    assert (logp.grad != 0).all()


def test_asymmetric_ranges_matter():
    logp = t([0.2])  # ratio 1.2214
    loss_a, st_a = policy_loss(logp, t([0.0]), t([1.0]), t([1.0]), clip_high=0.28, norm="token")
    loss_b, st_b = policy_loss(logp, t([0.0]), t([1.0]), t([1.0]), clip_high=0.2, norm="token")
    assert (st_a.clipped_high, st_b.clipped_high) == (0.0, 1.0)
    assert loss_a.item() == pytest.approx(-math.exp(0.2)) and loss_b.item() == pytest.approx(-1.2)


# --- normalisations -----------------------------------------------------------------------------------

def _two_seqs():
    # on-policy (ratio 1): per-token loss = -A. seq 0: 1 token, A=+1; seq 1: 3 tokens, A=-1 (+1 pad slot)
    logp = torch.zeros(2, 4)
    adv = t([1, 1, 1, 1], [-1, -1, -1, -1])
    mask = t([1, 0, 0, 0], [1, 1, 1, 0])
    return logp, adv, mask


def test_norm_sequence():
    logp, adv, mask = _two_seqs()
    loss, _ = policy_loss(logp, logp, adv, mask, norm="sequence")
    assert loss.item() == pytest.approx((-1 + 1) / 2)  # mean of per-sequence means: (-1) and (+1)


def test_norm_token():
    logp, adv, mask = _two_seqs()
    loss, _ = policy_loss(logp, logp, adv, mask, norm="token")
    assert loss.item() == pytest.approx((-1 + 3) / 4)


def test_norm_constant():
    logp, adv, mask = _two_seqs()
    loss, _ = policy_loss(logp, logp, adv, mask, norm="constant", max_len=10)
    assert loss.item() == pytest.approx((-1 + 3) / (2 * 10))
    with pytest.raises(ValueError):
        policy_loss(logp, logp, adv, mask, norm="constant")


def test_norm_sequence_with_packed_seq_ids():
    # both sequences in ONE row: seq_ids tells them apart, same result as two rows
    logp = torch.zeros(1, 6)
    adv = t([1, -1, -1, -1, 0, 0])
    mask = t([1, 1, 1, 1, 0, 0])
    sid = torch.tensor([[0, 1, 1, 1, -1, -1]])
    loss, _ = policy_loss(logp, logp, adv, mask, norm="sequence", seq_ids=sid)
    assert loss.item() == pytest.approx(0.0)
    loss_tok, _ = policy_loss(logp, logp, adv, mask, norm="token", seq_ids=sid)
    assert loss_tok.item() == pytest.approx(0.5)


def test_accumulated_micro_batches_equal_full_batch():
    torch.manual_seed(0)
    logp = torch.randn(4, 5, requires_grad=True)
    old = logp.detach() + 0.3 * torch.randn(4, 5)
    adv = torch.randn(4, 1).expand(4, 5)
    mask = (torch.rand(4, 5) > 0.3).float()
    mask[:, 0] = 1
    for norm in ("sequence", "token", "constant"):
        full, _ = policy_loss(logp, old, adv, mask, norm=norm, max_len=5)
        parts = [policy_loss(logp[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], norm=norm, max_len=5,
                             seq_ids=torch.arange(i, i + 2)[:, None].expand(2, 5),
                             num_seqs=4, num_tokens=float(mask.sum()))[0] for i in (0, 2)]
        assert sum(parts).item() == pytest.approx(full.item(), abs=1e-6)


# --- KL -------------------------------------------------------------------------------------------

def test_kl_k3_by_hand():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.5])
    d = 0.5
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.0, math.exp(d) - d - 1])
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_kl_term_in_loss():
    logp = t([-2.0])
    ref = t([-1.5])
    loss, st = policy_loss(logp, logp, t([0.0]), t([1.0]), ref_logp=ref, kl_coef=0.5, norm="token")
    k3 = math.exp(0.5) - 0.5 - 1
    assert loss.item() == pytest.approx(0.5 * k3) and st.kl_sum == pytest.approx(k3)


# --- log-probs ----------------------------------------------------------------------------------------

def test_token_logprobs_and_entropy():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    lp = token_logprobs(logits, torch.tensor([[1, 0]]), chunk=1)
    assert lp[0].tolist() == pytest.approx([math.log(0.5), math.log(0.75)])
    ent = token_entropy(logits)
    assert ent[0, 0].item() == pytest.approx(math.log(2))
    lp_t = token_logprobs(logits, torch.tensor([[1, 0]]), temperature=2.0)
    assert lp_t[0, 1].item() == pytest.approx(math.log(math.sqrt(3) / (math.sqrt(3) + 1)))
