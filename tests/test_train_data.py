"""Training data: mask correctness on multi-turn trajectories with the tiny tokenizer, splicing, truncation, packing."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from records import Message, Reward, Step, Trajectory, TrajectoryStatus  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from evolve.train.data import (build_sequence, build_sequences, collate, load_trajectories,  # noqa: E402
                               plan_rows, tokenize_messages)

torch.set_num_threads(1)

CALL = '<think>list files</think>\n<tool_call>\n{"name": "bash", "parameters": {"command": "ls"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _traj(tok, *, sampled: bool = True, second_train: bool = True, status=TrajectoryStatus.submitted) -> Trajectory:
    ids = tok(CALL, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] if sampled else None
    lps = [-0.1 * (k + 1) for k in range(len(ids))] if ids else None
    return Trajectory(
        instance_id="inst-1", run_id="run-a", status=status,
        prompt=[Message(role="system", content="You are an agent."), Message(role="user", content="List files.")],
        steps=[Step(index=0, response=Message(role="assistant", content=CALL, token_ids=ids, logprobs=lps),
                    observation=Message(role="tool", name="bash", content="README.md\nsetup.py")),
               Step(index=1, response=Message(role="assistant", content="<think>done</think>\n<response>Two files."
                                              "</response>", train=second_train),
                    observation=Message(role="tool", content="final observation, never trained"))])


def _pieces(tok, seq, trained: bool) -> str:
    return "".join(tok.decode([i]) for i, m in zip(seq.input_ids, seq.loss_mask) if bool(m) == trained)


def test_only_assistant_tokens_are_trained(tiny):
    _, tok = tiny
    seq = build_sequence(_traj(tok), tok, max_len=1000)
    text = tok.decode(seq.input_ids)
    assert text.startswith("<|im_start|>system\nYou are an agent.<|im_end|>")
    assert "final observation" not in text  # nothing after the last assistant turn
    # trained: exactly the two completions with their end-of-turn markers
    assert _pieces(tok, seq, True) == CALL + "<|im_end|>" + "<think>done</think>\n<response>Two files.</response><|im_end|>"
    untrained = _pieces(tok, seq, False)
    for context in ("You are an agent.", "List files.", "README.md\nsetup.py", "<|im_start|>assistant\n",
                    "<|im_start|>tool\n"):
        assert context in untrained
    assert seq.loss_mask[0] == 0


def test_recorded_token_ids_are_spliced_exactly(tiny):
    _, tok = tiny
    traj = _traj(tok)
    # make the recorded ids differ from what re-tokenising the text would give: one char per token
    chars = [tok.convert_tokens_to_ids(tok.tokenize(c)[0]) for c in "<think>"]
    msg = traj.steps[0].response
    msg.token_ids = chars + msg.token_ids[len(tok("<think>", add_special_tokens=False)["input_ids"]):]
    msg.logprobs = [-0.01 * (k + 1) for k in range(len(msg.token_ids))]
    seq = build_sequence(traj, tok, max_len=1000)
    trained = [i for i, m in zip(seq.input_ids, seq.loss_mask) if m]
    assert trained[:len(msg.token_ids)] == msg.token_ids  # the exact sampled ids, not a re-tokenisation
    olds = [lp for lp, m in zip(seq.old_logprobs, seq.loss_mask) if m]
    assert olds[:len(msg.logprobs)] == pytest.approx(msg.logprobs)
    assert all(math.isnan(lp) for lp in olds[len(msg.logprobs):])  # the text-only turn has none
    assert not seq.has_old_logprobs
    # the newline the template adds after the sampled <|im_end|> is context, not trained
    end = seq.loss_mask.index(1) + len(msg.token_ids) - 1
    assert seq.input_ids[end] == tok.eos_token_id
    assert seq.loss_mask[end] == 1 and tok.decode([seq.input_ids[end + 1]]) == "\n" and seq.loss_mask[end + 1] == 0


def test_quantised_rollout_logprobs_are_left_for_the_trainer_to_recompute(tiny):
    """A `llamacpp:` rollout keeps its token ids but not its log-probs (other weights); an `hf:` one keeps both."""
    _, tok = tiny
    for policy, kept in (("hf:gemma3-270m", True), ("llamacpp:gemma3-270m", False)):
        traj = _traj(tok).model_copy(update={"policy": policy})
        seq = build_sequence(traj, tok, max_len=1000)
        trained = [i for i, m in zip(seq.input_ids, seq.loss_mask) if m]
        assert trained[:len(traj.steps[0].response.token_ids)] == traj.steps[0].response.token_ids
        olds = [lp for lp, m in zip(seq.old_logprobs, seq.loss_mask) if m][:len(traj.steps[0].response.logprobs)]
        assert (not any(math.isnan(lp) for lp in olds)) == kept


def test_stop_string_sample_without_eos_keeps_end_marker_as_context(tiny):
    _, tok = tiny
    traj = _traj(tok)
    msg = traj.steps[0].response
    msg.token_ids, msg.logprobs = msg.token_ids[:-1], msg.logprobs[:-1]  # stopped at </tool_call>, no eos
    seq = build_sequence(traj, tok, max_len=1000)
    n = len(msg.token_ids)
    start = next(k for k, m in enumerate(seq.loss_mask) if m)
    assert seq.input_ids[start:start + n] == msg.token_ids
    assert seq.input_ids[start + n] == tok.eos_token_id and seq.loss_mask[start + n] == 0
    assert tok.decode(seq.input_ids) == tok.decode(build_sequence(_traj(tok, sampled=False), tok,
                                                                  max_len=1000).input_ids)


def test_train_false_turn_is_masked_out(tiny):
    _, tok = tiny
    seq = build_sequence(_traj(tok, second_train=False), tok, max_len=1000)
    assert _pieces(tok, seq, True) == CALL + "<|im_end|>"
    assert "<response>Two files.</response>" in _pieces(tok, seq, False)
    # all turns train=False: nothing to learn, dropped and counted
    traj = _traj(tok, second_train=False)
    traj.steps[0].response.train = False
    seqs, report = build_sequences([(traj, 1.0)], tok, max_len=1000)
    assert seqs == [] and report.dropped_no_trainable == 1


def test_truncation_is_cut_at_a_turn_boundary_and_reported(tiny, caplog):
    _, tok = tiny
    full = build_sequence(_traj(tok), tok, max_len=10_000)
    first_end = full.turn_ends[0]
    with caplog.at_level(logging.WARNING):
        seqs, report = build_sequences([(_traj(tok), 1.0)], tok, max_len=len(full) - 1)
    assert report.cut_at_turn == 1 and "cut at a turn boundary" in caplog.text
    (seq,) = seqs
    assert len(seq) == first_end and seq.input_ids == full.input_ids[:first_end]
    assert _pieces(tok, seq, True) == CALL + "<|im_end|>"
    # drop policy, and a limit below the first turn: dropped and counted, never silent
    seqs, report = build_sequences([(_traj(tok), 1.0)], tok, max_len=len(full) - 1, overflow="drop")
    assert seqs == [] and report.dropped_too_long == 1
    seqs, report = build_sequences([(_traj(tok), 1.0)], tok, max_len=first_end - 1)
    assert seqs == [] and report.dropped_too_long == 1


def test_native_tool_calls_render_through_the_template(tiny):
    from records import ToolCall

    _, tok = tiny
    msgs = [Message(role="user", content="weather?"),
            Message(role="assistant", content="", tool_calls=[ToolCall(name="get_weather", arguments={"city": "Oslo"})])]
    seq = tokenize_messages(msgs, tok)
    assert '"name": "get_weather"' in _pieces(tok, seq, True)


def test_packing_has_no_cross_sequence_attention(tiny):
    model, tok = tiny
    seqs, _ = build_sequences([(_traj(tok), 1.0), (_traj(tok, sampled=False), 0.0), (_traj(tok), 0.5)],
                              tok, max_len=400)
    seqs[1].input_ids[5] = 7  # make the sequences differ in their context
    rows = plan_rows([len(s) for s in seqs], max_len=400)
    assert len(rows) < len(seqs)  # really packed
    from evolve.train.modeling import forward_logprobs

    model.eval()
    with torch.no_grad():
        packed = collate(seqs, rows, tok.pad_token_id)
        lp_packed, _, keep = forward_logprobs(model, packed)
        sid = packed.seq_ids[keep]
        for i in range(len(seqs)):
            alone, _, _ = forward_logprobs(model, collate(seqs, [[i]], tok.pad_token_id))
            assert torch.allclose(lp_packed[sid == i], alone, atol=1e-5)
        # sanity: with a full attention mask (what packing without position-aware masking would do) they differ
        out = model(input_ids=packed.input_ids, attention_mask=torch.ones_like(packed.input_ids), use_cache=False)
        assert out.logits.shape[1] == packed.input_ids.shape[1]
    # padding positions restart their own segment; every sequence starts at position 0
    assert (packed.position_ids[:, 0] == 0).all()
    assert plan_rows([5, 3, 9], 10, pack=False) == [[0], [1], [2]]


def test_load_from_store_with_rewards(tiny, tmp_path):
    _, tok = tiny
    with RunStore(tmp_path / "run") as store:
        a, b, c = _traj(tok), _traj(tok), _traj(tok, status=TrajectoryStatus.running)
        for traj, r in ((a, 1.0), (b, 0.0), (c, 1.0)):
            store.put_trajectory(traj)
            store.put_reward(traj.id, Reward(name="toolrl", total=r))
    items = load_trajectories([tmp_path / "run"])
    assert [(t.id, r) for t, r in items] == [(a.id, 1.0), (b.id, 0.0)]  # running one left out
    assert [t.id for t, _ in load_trajectories([tmp_path / "run"], min_reward=0.5)] == [a.id]
    seqs, _ = build_sequences(items, tok, max_len=1000)
    assert seqs[0].reward == 1.0 and seqs[0].instance_id == "inst-1" and seqs[0].run_id == "run-a"
