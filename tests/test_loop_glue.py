"""What a user had to glue by hand before `evolve loop` (issue 19), each removed by construction and tested here:
versions found where Agent-R and the loop keep them, `version:latest` recorded and compared as its id and named on
the outputs, held-out toolcall ids reachable without `--split`, k attempts per instance from `evolve run`, SFT on
successes only and never on meta-agent trajectories, `--max-len` on the command line, a GRPO run that learned
nothing storing no version, and a sampler whose tokenizer is not the trainer's detected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.store import RunStore  # noqa: E402
from records import Message, PolicyVersion, Reward, Step, Trajectory, TrajectoryStatus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


def evolve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def _version(store_dir: Path, model: Path, created: float) -> PolicyVersion:
    """A stored full-weights version (the tiny model's directory), as a training would store it."""
    v = PolicyVersion(base=f"hf:{model}", kind="sft", path=str(model), adapter=False, created_at=created)
    with RunStore(store_dir) as store:
        store.put_policy_version(v)
    return v


def test_versions_are_found_where_agent_r_and_the_loop_keep_them(tiny, tmp_path):
    from evolve.train.versions import canonical_spec, get_version

    runs = tmp_path / "runs"
    agent_r = _version(runs / "agent-r-toolcall" / "it1" / "sft", tiny, 1.0)  # three levels below runs/
    loop = _version(runs / "loop-toolcall" / "train" / "g01-n0001", tiny, 2.0)
    assert get_version(agent_r.id, runs).id == agent_r.id
    assert get_version("latest", runs).id == loop.id
    assert canonical_spec("version:latest", runs) == f"version:{loop.id}"
    assert canonical_spec("hf:x", runs) == "hf:x"
    _version(runs / "a" / "b" / "checkpoints" / "step-1", tiny, 3.0)  # checkpoints are never searched
    assert get_version("latest", runs).id == loop.id


def test_run_records_and_labels_the_version_id_and_resume_compares_ids(tiny, tmp_path):
    runs = tmp_path / "runs"
    first = _version(runs / "agent-r-toolcall" / "it1" / "sft", tiny, 1.0)
    out = runs / "eval"
    held_out = "toolcall__book_hotel-4,toolcall__book_hotel-5"  # training-split ids, as Agent-R holds them out
    r = evolve("run", "toolcall", "--policy", "version:latest", "--instances", held_out, "--out", str(out),
               "--max-tokens-per-step", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    with RunStore(out, readonly=True) as store:
        assert {t.policy for t in store.trajectories()} == {f"version:{first.id}"}  # not the base model's name
        assert store.runs()[0]["config"]["policy"] == f"version:{first.id}"  # not `version:latest`
        assert len(store.trajectory_ids()) == 2
    _version(runs / "loop" / "train" / "g01-n0001", tiny, 2.0)  # `latest` now names another version
    r = evolve("run", "toolcall", "--policy", "version:latest", "--instances", held_out, "--out", str(out))
    assert r.returncode == 2 and f"version:{first.id}" in r.stderr and "Traceback" not in r.stderr
    r = evolve("run", "toolcall", "--policy", f"version:{first.id}", "--instances", held_out, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]


def test_run_samples_k_attempts_per_instance_and_resumes_the_missing_ones(tiny, tmp_path):
    from agent.policy import load_policy
    from evolve.toolcall_eval import toolcall_rollouts
    from tasks.registry import get_suite

    out = tmp_path / "k"
    r = evolve("run", "toolcall", "--policy", f"hf:{tiny}", "--limit", "2", "--attempts", "3", "--temperature", "1",
               "--out", str(out), "--max-tokens-per-step", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    with RunStore(out, readonly=True) as store:
        trajs = list(store.trajectories())
        assert len(trajs) == 6 and all(store.rewards(t.id) for t in trajs)
        assert len({t.answer for t in trajs}) > 1  # sampled, not one greedy answer repeated
    # an instance with one attempt stored (a killed run) gets exactly the two it lacks
    insts = get_suite("toolcall").select(None, 1, split="train")
    with RunStore(tmp_path / "partial") as store:
        store.put_trajectory(Trajectory(run_id="partial", instance_id=insts[0].instance_id, status="submitted",
                                        finished_at=1.0))
        assert toolcall_rollouts(store, "partial", insts, load_policy(f"hf:{tiny}"), attempts=3, temperature=1.0,
                                 max_tokens=4)
        assert len(store.trajectory_ids()) == 3 and store.instance_status("partial")[insts[0].instance_id] == "done"


def _scored_run(path: Path) -> dict[str, str]:
    ids = {}
    with RunStore(path) as store:
        for name, origin, reward in (("success", "rollout", 1.0), ("failure", "rollout", 0.0),
                                     ("meta", "hgm:meta", 1.0), ("demo", "reference", None)):
            t = Trajectory(run_id=path.name, instance_id=name, status=TrajectoryStatus.submitted, origin=origin,
                           prompt=[Message(role="user", content=f"do {name}")],
                           steps=[Step(index=0, response=Message(role="assistant", content=f"done {name}"))])
            store.put_trajectory(t)
            if reward is not None:
                store.put_reward(t.id, Reward(name="swe", total=reward))
            ids[name] = t.id
    return ids


def test_sft_trains_on_successes_by_default_and_never_on_meta_agent_trajectories(tmp_path):
    from evolve.train.data import load_trajectories
    from evolve.train.sft import SFTConfig

    ids = _scored_run(tmp_path / "run")
    assert SFTConfig().min_reward == 1.0
    picked = {t.instance_id for t, _ in load_trajectories([tmp_path / "run"], min_reward=SFTConfig().min_reward)}
    assert picked == {"success", "demo"}  # the failure and the meta-agent's edit are left out
    every = {t.instance_id for t, _ in load_trajectories([tmp_path / "run"])}
    assert every == {"success", "failure", "demo"} and ids  # even without a threshold: never the meta-agent


def test_max_len_is_a_command_line_option_and_all_trajectories_opt_in(tiny, tmp_path):
    _scored_run(tmp_path / "run")
    r = evolve("train", "sft", str(tmp_path / "run"), "--policy", f"hf:{tiny}", "--max-len", "8", "--device", "cpu",
               "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "within max_len (8 tokens)" in r.stderr  # the option reached the config
    r = evolve("train", "sft", str(tmp_path / "run"), "--policy", f"hf:{tiny}", "--all-trajectories",
               "--min-reward", "0", "--out", str(tmp_path / "o2"))
    assert r.returncode == 2 and "not both" in r.stderr


def test_grpo_that_made_no_update_stores_no_version(tiny, tmp_path):
    """The untrained tiny model never writes a valid answer: every group's rewards are equal (-3)."""
    from evolve.train.versions import all_versions

    out = tmp_path / "grpo"
    cfg = tmp_path / "g.yaml"
    cfg.write_text("device: cpu\nlimit: 2\nmax_new_tokens: 8\nbatch_size: 4\nmicro_batch_size: 4\nmax_len: 2048\n")
    r = evolve("train", "grpo-toolcall", "--config", str(cfg), "--policy", f"hf:{tiny}", "--steps", "1",
               "--group-size", "2", "--prompts-per-step", "2", "--out", str(out))
    assert r.returncode == 2 and "made no update" in r.stderr and "no policy version is stored" in r.stderr
    # nothing that `version:latest` could pick: the version watched live is closed as `no-updates`
    assert [(v.kind, v.status) for v, _ in all_versions(out)] == [("base", "ready"), ("grpo", "no-updates")]
    with RunStore(out, readonly=True) as store:
        assert store.runs()[0]["status"] == "no-updates"
    # offline GRPO on runs whose groups are all equal says the same, with the same class of error
    from evolve.train.grpo import GRPOConfig, train_grpo
    from evolve.train.errors import NothingLearned

    _scored_run(tmp_path / "run")
    with pytest.raises(NothingLearned, match="stored no policy version"):
        train_grpo(GRPOConfig(policy=f"hf:{tiny}", device="cpu", max_len=256), [tmp_path / "run"], tmp_path / "g2")


def test_token_ids_of_another_tokenizer_are_retokenised_or_refused(tiny):
    from transformers import AutoTokenizer

    from evolve.train.data import BuildReport, TokenizerMismatch, build_sequence

    tok = AutoTokenizer.from_pretrained(tiny)
    text = '<tool_call>\n{"name": "bash", "parameters": {"command": "ls"}}\n</tool_call>'
    own = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def traj(ids):
        return Trajectory(instance_id="i", prompt=[Message(role="user", content="list")], status="submitted",
                          steps=[Step(index=0, response=Message(role="assistant", content=text, token_ids=ids,
                                                                logprobs=[-0.5] * len(ids)))])

    report = BuildReport()
    seq = build_sequence(traj(own), tok, max_len=512, report=report)
    assert report.spliced_turns == 1 and report.mismatched_turns == 0 and seq.has_old_logprobs
    foreign = [(i * 7 + 3) % 200 + 50 for i in range(len(own))]  # in the vocabulary, but not this text's encoding
    for ids in (foreign, [100_000] * 5):  # ... and ids outside the vocabulary
        report = BuildReport()
        seq = build_sequence(traj(ids), tok, max_len=512, report=report)
        text_only = build_sequence(traj([]), tok, max_len=512)
        assert report.mismatched_turns == 1 and report.spliced_turns == 0
        assert seq.input_ids == text_only.input_ids and not seq.has_old_logprobs  # trained on the text
        with pytest.raises(TokenizerMismatch, match="another model"):
            build_sequence(traj(ids), tok, max_len=512, on_mismatch="refuse")
