"""The loop's curriculum (`curriculum.mode: sec|uniform`, `evolve loop --curriculum`): each generation's rollouts
run on training instances drawn by the Self-Evolving Curriculum over categories, the bandit is fed the attempts'
groups, and its state after every generation is in the loop's store (read by the same `history` as `evolve train
grpo --curriculum`). A fast test on a real store with stored rewards, and a Docker loop on a synthesised suite
with a scripted policy whose groups carry signal in one category only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from agent.policy.base import Generation, Policy, SamplingParams
from records import Message, Reward, Step, TaskInstance, Trajectory, TrajectoryStatus

ROOT = Path(__file__).resolve().parents[1]
P_SUCCESS = {"src/mixed": 0.5, "src/solved": 1.0, "src/hopeless": 0.0}


def _ctx(tmp_path: Path, store, mode: str = "sec", tasks: int | None = 2):
    from evolve.loop.config import LoopConfig
    from evolve.loop.context import LoopContext
    from evolve.loop.splits import Splits

    train = [TaskInstance(instance_id=f"synth__{cat.split('/')[1]}-{i}", repo="evolve-synth/src",
                          extra={"category": cat}) for cat in P_SUCCESS for i in range(3)]
    cfg = LoopConfig.model_validate({"suite": "synth:x", "curriculum": {"mode": mode, "tasks": tasks}})
    return LoopContext(cfg=cfg, out=tmp_path, run_id="loop", store=store, splits=Splits(train, train, train, train),
                       policies=None, kind="swe", start_node="loop:start", start_spec="x", start_variant="")


def _rollouts(run_dir: Path, chosen: list[TaskInstance], attempts: int = 4) -> None:
    """Stored, scored attempts: `mixed` half succeed, `solved` all, `hopeless` none."""
    from evolve.store import RunStore

    with RunStore(run_dir) as store:
        store.put_run(run_dir.name, "run", {})
        for inst in chosen:
            p = P_SUCCESS[inst.extra["category"]]
            for k in range(attempts):
                traj = Trajectory(run_id=run_dir.name, instance_id=inst.instance_id, status=TrajectoryStatus.submitted,
                                  steps=[Step(index=0, response=Message(role="assistant", content="x"))])
                store.put_trajectory(traj)
                store.put_reward(traj.id, Reward(name="swe", total=float(k < attempts * p)))


def test_sec_draws_toward_the_category_with_signal_and_stores_the_weights_per_generation(tmp_path):
    from evolve.curriculum_log import history
    from evolve.loop import curriculum
    from evolve.store import RunStore

    drawn: Counter[str] = Counter()
    with RunStore(tmp_path / "loop") as store:
        ctx = _ctx(tmp_path, store)
        for g in range(1, 7):
            cur, chosen = curriculum.draw(ctx, g)
            assert len(chosen) == 2 and len({i.instance_id for i in chosen}) == 2
            again = curriculum.draw(ctx, g)[1]  # drawn again (a resumed generation): the same instances
            assert [i.instance_id for i in again] == [i.instance_id for i in chosen]
            drawn.update(i.extra["category"] for i in chosen)
            run_dir = tmp_path / "runs" / f"g{g:02d}"
            _rollouts(run_dir, chosen)
            fed = curriculum.feed(ctx, g, cur, chosen, run_dir)
            assert fed["rewards"].get("src/solved", 0.0) == 0.0 and fed["rewards"].get("src/hopeless", 0.0) == 0.0
            if "src/mixed" in fed["rewards"]:
                assert fed["rewards"]["src/mixed"] > 0.5  # |advantage| of a 2-of-4 group: 2/sqrt(3) ~ 1.15 (std n-1)
        past = history(store, "loop")
    assert [d["step"] for d in past] == list(range(7))  # the initial state, then one per generation
    assert past[0]["weights"] == pytest.approx({c: 1 / 3 for c in P_SUCCESS})
    w = past[-1]["weights"]
    # argued: once drawn, Q(mixed) >= alpha * 1.15 ~ 0.58 against 0 elsewhere: weight >= 1 / (1 + 2 e^-2.9) ~ 0.9
    assert w["src/mixed"] > 0.85 and drawn["src/mixed"] > drawn["src/solved"] + drawn["src/hopeless"]


def test_uniform_keeps_weights_equal_and_off_runs_every_instance(tmp_path):
    from evolve.curriculum_log import history
    from evolve.loop import curriculum
    from evolve.store import RunStore

    with RunStore(tmp_path / "loop") as store:
        ctx = _ctx(tmp_path, store, mode="uniform", tasks=None)
        cur, chosen = curriculum.draw(ctx, 1)
        assert len(chosen) == 5  # null: half of the 9 training instances, rounded up
        _rollouts(tmp_path / "runs" / "g01", chosen)
        curriculum.feed(ctx, 1, cur, chosen, tmp_path / "runs" / "g01")
        assert history(store, "loop")[-1]["weights"] == pytest.approx({c: 1 / 3 for c in P_SUCCESS})
    with RunStore(tmp_path / "off") as store:
        ctx = _ctx(tmp_path, store, mode="off")
        cur, chosen = curriculum.draw(ctx, 1)
        assert cur is None and len(chosen) == 9 and not history(store, "loop")


def test_curriculum_option_is_validated_in_one_line():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "evolve.cli", "loop", "toolcall", "--curriculum", "greedy"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "curriculum.mode" in r.stderr and "Traceback" not in r.stderr


# --- a loop on a synthesised suite, in Docker ----------------------------------------------------------------

def call(name: str, **parameters) -> str:
    return f"<think>{name}</think>\n<tool_call>\n{json.dumps({'name': name, 'parameters': parameters})}\n</tool_call>"


class CategoryPolicy(Policy):
    """Fixes a task (its gold patch applied with bash, then submit) on every other attempt of an instance of the
    `mixed` category (its groups carry signal), on every attempt of any other category (no signal)."""

    spec = "scripted-category"
    context_length = 1_000_000

    def __init__(self, rows: list[TaskInstance], mixed: str):
        self.rows = {r.problem_statement.strip()[:300]: r for r in rows}
        self.mixed = mixed
        self.tries: Counter[str] = Counter()
        self.lock = threading.Lock()

    def _row(self, conv: list[Message]) -> TaskInstance | None:
        text = "\n".join(m.content for m in conv if m.role == "user")
        return next((r for k, r in self.rows.items() if k in text), None)

    def generate(self, conversations: list[list[Message]], params: SamplingParams, tools=None) -> list[Generation]:
        out = []
        for conv in conversations:
            row, text = self._row(conv), call("submit")
            if row is not None and not any(m.role == "assistant" for m in conv):
                with self.lock:
                    n = self.tries[row.instance_id]
                    self.tries[row.instance_id] += 1
                if row.extra["category"] != self.mixed or n % 2 == 0:
                    text = call("bash", command=f"cd /testbed && git apply <<'EVOLVE_EOF'\n{row.patch}EVOLVE_EOF")
            out.append(Generation(text=text, prompt_tokens=10, completion_tokens=10))
        return out

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4


ARITH = '''\
def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def below(x, limit):
    return x < limit


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def sign(x):
    if x < 0:
        return -1
    return 1
'''
ARITH_TESTS = '''\
from arith import add, below, clamp, sign, sub


def test_add():
    assert add(2, 3) == 5


def test_sub():
    assert sub(5, 3) == 2


def test_below():
    assert below(1, 2) and not below(3, 2)


def test_clamp():
    assert clamp(5, 0, 3) == 3 and clamp(-1, 0, 3) == 0 and clamp(2, 0, 3) == 2


def test_sign():
    assert sign(-4) == -1 and sign(4) == 1
'''


@pytest.fixture(scope="module")
def arith_suite(tmp_path_factory):
    """A small synthesised suite: a repository of five tested functions, its caught bugs of two families (two
    categories: `git-arith/flip_operator`, `git-arith/remove_conditional`)."""
    from tests.conftest import make_git_repo
    from tests.test_synth_validate import synthesize

    tmp = tmp_path_factory.mktemp("arith-suite")
    repo = make_git_repo(tmp / "arith", {"arith.py": ARITH, "tests/test_arith.py": ARITH_TESTS})
    out = tmp / "suite.jsonl"
    synthesize(repo, out, families=["flip_operator", "remove_conditional"])
    return out


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.usefixtures("docker_ready")
def test_loop_on_a_synthesised_suite_moves_the_weights_toward_the_category_with_signal(arith_suite, tmp_path):
    from evolve.curriculum_log import history
    from evolve.loop.config import LoopConfig
    from evolve.loop.run import run_loop
    from evolve.store import RunStore
    from tasks.synth.suite import SynthSuite

    everything = SynthSuite(arith_suite).instances()
    same = Counter(r.problem_statement for r in everything)
    rows = [r for r in everything if same[r.problem_statement] == 1]  # the policy tells tasks apart by their text
    mixed = "git-arith/flip_operator"
    signal = [r for r in rows if r.extra["category"] == mixed]
    other = [r for r in rows if r.extra["category"] != mixed]
    assert len(signal) >= 2 and len(other) >= 1 and len(rows) >= 5, Counter(r.extra["category"] for r in rows)
    # training: two of the mixed category and one other (any two draws reach the mixed one); then search, gate
    train = signal[:2] + other[:1]
    search, held = [r for r in rows if r not in train][:2]
    cfg = LoopConfig.model_validate({
        "suite": f"synth:{arith_suite}", "generations": 2,
        "splits": {"train": [r.instance_id for r in train], "search": [search.instance_id],
                   "held_out": [held.instance_id]},
        "curriculum": {"mode": "sec", "tasks": 2},
        "rollouts": {"attempts": 2, "temperature": 1.0, "max_steps": 3, "max_tokens": 256},
        "evolution": {"agent_r": {"enabled": False}, "se_agent": {"enabled": False}},
        "sft": {"enabled": False}, "grpo": {"enabled": True}, "code": {"enabled": False},
        "search": {"budget": 1, "initial_expansions": 1, "max_expansions": 1, "workers": 1},
        "gate": {"min_held_out": 1},
        "policies": {"policy": "scripted-category", "rollout_backend": "as-is"}, "workers": 2})
    policy = CategoryPolicy(rows, mixed)
    out = tmp_path / "loop"
    report = run_loop(cfg, out, load_policy={"scripted-category": policy}.__getitem__)
    assert len(report["generations"]) == 2
    with RunStore(out, readonly=True) as store:
        past = history(store, "loop")
        picks = [store.document("loop:curriculum", f"g{g:02d}") for g in (1, 2)]
        for g, pick in enumerate(picks, 1):
            assert len(pick["instances"]) == 2
            with RunStore(out / "runs" / f"g{g:02d}-rollouts", readonly=True) as roll:  # only the drawn instances ran
                ran = Counter(t["instance_id"] for t in roll.trajectory_summaries())
            assert ran == {i: 2 for i in pick["instances"]}
    assert [d["step"] for d in past] == [0, 1, 2]
    train_cats = {r.extra["category"] for r in train}
    assert past[0]["weights"] == pytest.approx({c: 1 / len(train_cats) for c in train_cats})
    drew_mixed = [any(pick["categories"][i] == mixed for i in pick["instances"]) for pick in picks]
    assert drew_mixed[0]  # two draws among the three training rows always reach the mixed category
    w = past[-1]["weights"]
    assert w[mixed] > 1 / len(train_cats) and all(w[mixed] > v for c, v in w.items() if c != mixed)
    assert past[1]["last_rewards"][mixed] > 0.5 and all(v == 0.0 for c, v in past[1]["last_rewards"].items()
                                                        if c != mixed)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.usefixtures("docker_ready")
def test_evolve_loop_runs_a_synthesised_suite_from_the_command_line(arith_suite, tmp_path):
    """`evolve tasks demos` then `evolve loop synth:FILE --curriculum sec` with the demonstrations replayed: a
    generation runs end to end (rollouts on the drawn instances, graded; a weight child the replay policy cannot
    train is rejected; the gate), and the curriculum's states are in the store."""
    import yaml

    from evolve.curriculum_log import history
    from evolve.store import RunStore
    from tasks.synth.suite import SynthSuite

    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}

    def evolve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "evolve.cli", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=900)

    ids = [r.instance_id for r in SynthSuite(arith_suite).instances()][:5]
    demos = evolve("tasks", "demos", str(arith_suite), "--out", str(tmp_path / "demos"), "--limit", "5")
    assert demos.returncode == 0 and "5/5 resolved" in demos.stdout, demos.stdout + demos.stderr
    cfg = tmp_path / "loop.yaml"
    cfg.write_text(yaml.safe_dump({
        "generations": 1, "splits": {"train": ids[:3], "search": [ids[3]], "held_out": [ids[4]]},
        "rollouts": {"attempts": 2, "max_steps": 8}, "evolution": {"agent_r": {"enabled": False}},
        "sft": {"enabled": True, "steps": 1}, "grpo": {"enabled": False}, "code": {"enabled": False},
        "search": {"budget": 1, "initial_expansions": 1, "max_expansions": 1, "workers": 1},
        "gate": {"min_held_out": 1}, "policies": {"rollout_backend": "as-is"}, "workers": 2}))
    scripts = tmp_path / "demos-scripts.jsonl"
    r = evolve("loop", f"synth:{arith_suite}", "--config", str(cfg), "--policy", f"replay:{scripts}",
               "--curriculum", "sec", "--out", str(tmp_path / "loop"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "curriculum sec" in r.stdout and "generation 1 done" in r.stdout
    with RunStore(tmp_path / "loop", readonly=True) as store:
        past = history(store, "loop")
        pick = store.document("loop:curriculum", "g01")
        rollouts = store.document("loop:stage", "g01/rollouts")
    assert [d["step"] for d in past] == [0, 1] and len(pick["instances"]) == 2  # null tasks: half of 3, rounded up
    assert rollouts["result"]["successes"] == 4 and rollouts["result"]["curriculum"]["instances"] == pick["instances"]
