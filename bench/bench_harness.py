"""Harness overhead: the same recorded 30-step trajectory replayed through Evolve and through mini-swe-agent.

Both sides replay the same 30 bash commands (ls, cat, grep -rn, sed -n, python -c, pytest on one small test
file twice, a sed edit and a python edit, git diff, ...) and then submit, on the same image
(`evolve-base:latest`), with the same container limits (no network, 1 CPU, 2 GiB, 512 pids), starting from
the same small git repository at `/testbed`, in one run:

- Evolve: `Agent(ScriptedPolicy(responses), variant, on_step=store.append_step)` in a `DockerSandbox`
  (commands through the in-sandbox server; a persistent bash session). Responses use Evolve's text protocol
  (`<think>` + `<tool_call>` JSON); the scripted policy submits after the last one, and the submit step takes
  the patch (`git add -A && git diff --cached`).
- mini-swe-agent 2.4.6: its `DefaultAgent` with its `DockerEnvironment` (one `docker exec ... bash -lc CMD`
  through the CLI per command) and the templates of its text-based config (`mini_textbased.yaml`: one
  ```mswea_bash_command fenced block per response). Its `DeterministicModel` takes pre-parsed actions, so a
  thin subclass parses each response's text with mini-swe-agent's own `parse_regex_actions` at query time,
  as its `LitellmTextbasedModel` does, instead of calling an LM. The 31st response is
  `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached`, which makes its
  environment raise `Submitted` with the same patch Evolve's submit step takes.

Each side records its trajectory as it does in a real run: Evolve writes each step to its run store (SQLite)
and the trajectory header at the end; mini-swe-agent saves its trajectory JSON after every step
(`output_path`, what its run scripts set). `--no-record` turns recording off on both sides.

Timing. "episode" is `agent.run` from a ready container holding the repository at `/testbed` until the
submitted patch is back (container start and teardown are not timed on either side; mini-swe-agent's
container is removed synchronously outside the timing). One untimed warm-up episode per side, then
`--reps` timed repetitions per side, interleaved (the side that goes first alternates); medians.

What it prints, and the targets:

1. Overhead per step beyond the commands' own time, Evolve vs mini-swe-agent, and their ratio. Evolve's =
   (episode wall time - the sum of `ExecResult.seconds` of the trajectory's commands, the submit diff
   included) / steps; a thin `DockerSandbox` subclass adds up `seconds` (the time each ran inside the
   sandbox) and changes nothing else. Commands Evolve runs for its own bookkeeping (the per-step workspace
   snapshot behind the `undo` tool) count as overhead; their in-sandbox time is shown in brackets. mini-swe-agent reports no in-container
   command time, so its figure subtracts Evolve's measured command time for the same commands: an estimate
   (≈) that counts its per-command `docker exec ... bash -lc` start as overhead.
2. Evolve's episode against the commands' own time: target within 10% (episode <= 1.10 x command time).
   mini-swe-agent's episode against the same command time is shown beside it.

The outputs of the 30 commands on both sides are compared after masking durations, and the two submitted
patches must be identical (the run fails otherwise).

    .venv/bin/python bench/bench_harness.py [--reps 3] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.graph import Agent
from agent.tools.bash import SESSION as BASH_SESSION
from agent.replay import ScriptedPolicy
from agent.variant import AgentVariant
from evolve.store import RunStore
from records import TaskInstance, Trajectory, TrajectoryStatus
from sandbox import BASE_IMAGE, SandboxConfig
from sandbox.base import WORKDIR
from sandbox.docker import DockerSandbox

PROBLEM = ("apply_discount(100, 10) returns 10.0, the discount itself, instead of the discounted price 90.0. "
           "It should also reject percentages outside 0..100 with a ValueError.")

# --- the task repository ------------------------------------------------------------------------------------
REPO_FILES = {
    ".gitignore": "__pycache__/\n.pytest_cache/\n*.pyc\n",
    "README.md": "# inventory\n\nA tiny inventory and pricing library.\n\n"
                 "Run the tests with `python -m pytest -q`.\n",
    "pyproject.toml": '[project]\nname = "inventory"\nversion = "0.1.0"\nrequires-python = ">=3.9"\n\n'
                      '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "inventory/__init__.py": '"""A tiny inventory and pricing library."""\n\n'
                             "from inventory.models import Item\nfrom inventory.pricing import add_tax, "
                             "apply_discount, total\nfrom inventory.stock import Stock\n\n"
                             '__all__ = ["Item", "Stock", "add_tax", "apply_discount", "total"]\n',
    "inventory/models.py": '"""Data records."""\n\nfrom dataclasses import dataclass\n\n\n@dataclass\n'
                           "class Item:\n    sku: str\n    name: str\n    price: float\n    quantity: int = 1\n\n"
                           "    def value(self) -> float:\n        return self.price * self.quantity\n",
    "inventory/pricing.py": '"""Prices, discounts and taxes."""\n\nfrom inventory.utils import to_cents\n\n\n'
                            "def apply_discount(price: float, percent: float) -> float:\n"
                            '    """The price after taking percent off."""\n'
                            "    return round(price * percent / 100, 2)\n\n\n"
                            "def add_tax(price: float, rate: float = 0.2) -> float:\n"
                            "    return round(price * (1 + rate), 2)\n\n\n"
                            "def total(items) -> float:\n"
                            "    return round(sum(item.value() for item in items), 2)\n\n\n"
                            "def price_in_cents(price: float) -> int:\n    return to_cents(price)\n",
    "inventory/stock.py": '"""Stock levels."""\n\nfrom inventory.models import Item\n\n\nclass Stock:\n'
                          "    def __init__(self):\n        self.items: dict[str, Item] = {}\n\n"
                          "    def add(self, item: Item) -> None:\n        if item.sku in self.items:\n"
                          "            self.items[item.sku].quantity += item.quantity\n        else:\n"
                          "            self.items[item.sku] = item\n\n"
                          "    def remove(self, sku: str, quantity: int = 1) -> None:\n"
                          "        item = self.items[sku]\n        if quantity > item.quantity:\n"
                          '            raise ValueError(f"only {item.quantity} of {sku} in stock")\n'
                          "        item.quantity -= quantity\n\n"
                          "    def value(self) -> float:\n"
                          "        return sum(item.value() for item in self.items.values())\n",
    "inventory/utils.py": '"""Small helpers."""\n\n\ndef to_cents(price: float) -> int:\n'
                          "    return int(round(price * 100))\n\n\ndef parse_price(text: str) -> float:\n"
                          '    return float(text.strip().lstrip("$").replace(",", ""))\n',
    "tests/__init__.py": "",
    "tests/test_pricing.py": "from inventory.models import Item\n"
                             "from inventory.pricing import add_tax, apply_discount, price_in_cents, total\n\n\n"
                             "def test_discount():\n    assert apply_discount(100, 10) == 90\n\n\n"
                             "def test_no_discount():\n    assert apply_discount(80, 0) == 80\n\n\n"
                             "def test_tax():\n    assert add_tax(100) == 120\n\n\n"
                             "def test_total():\n"
                             '    assert total([Item("a", "A", 1.5, 2), Item("b", "B", 2.25)]) == 5.25\n\n\n'
                             "def test_cents():\n    assert price_in_cents(1.99) == 199\n",
    "tests/test_stock.py": "import pytest\n\nfrom inventory import Item, Stock\n\n\ndef test_add_and_remove():\n"
                           '    s = Stock()\n    s.add(Item("a", "A", 2.0, 3))\n    s.remove("a", 2)\n'
                           '    assert s.items["a"].quantity == 1\n    with pytest.raises(ValueError):\n'
                           '        s.remove("a", 5)\n',
    "tests/test_utils.py": "from inventory.utils import parse_price, to_cents\n\n\ndef test_parse_price():\n"
                           '    assert parse_price(" $1,234.50 ") == 1234.5\n\n\n'
                           "def test_to_cents():\n    assert to_cents(0.1 + 0.2) == 30\n",
}

EDIT_SCRIPT = """python3 - <<'EOF'
from pathlib import Path
p = Path("inventory/pricing.py")
s = p.read_text()
doc = '    \"\"\"The price after taking percent off.\"\"\"\\n'
check = '    if not 0 <= percent <= 100:\\n        raise ValueError(f"percent must be in 0..100, got {percent}")\\n'
assert doc in s
p.write_text(s.replace(doc, doc + check, 1))
print("edited", p)
EOF"""

# --- the recorded trajectory: (thought, command) --------------------------------------------------------------
STEPS: list[tuple[str, str]] = [
    ("Look at the repository layout first.", "ls -la"),
    ("See the package and the tests.", "ls inventory tests"),
    ("Read the README for how to run tests.", "cat README.md"),
    ("The issue is about apply_discount; read pricing.py.", "cat inventory/pricing.py"),
    ("Find every use of apply_discount.", "grep -rn apply_discount --include=*.py ."),
    ("Read the pricing tests.", "sed -n 1,40p tests/test_pricing.py"),
    ("Run the pricing tests to see the failure.", "python3 -m pytest -q tests/test_pricing.py 2>&1 | tail -15"),
    ("Reproduce directly.", 'python3 -c "from inventory.pricing import apply_discount; print(apply_discount(100, 10))"'),
    ("Check the Item model used by total().", "cat inventory/models.py"),
    ("List the functions in the package.", "grep -rn 'def ' inventory/"),
    ("Line numbers of pricing.py.", "nl -ba inventory/pricing.py | sed -n 1,25p"),
    ("Check the history.", "git log --oneline | head -5"),
    ("Check the working tree is clean.", "git status --short"),
    ("All Python files.", "find . -name '*.py' -not -path './.git/*' | sort"),
    ("How big is the code?", "wc -l inventory/*.py tests/*.py"),
    ("Where is rounding done?", "grep -n round inventory/*.py"),
    ("Read the helpers.", "cat inventory/utils.py"),
    ("A small repro over several inputs.",
     "python3 -c \"from inventory.pricing import apply_discount as d; print([d(100, p) for p in (0, 10, 25, 100)])\""),
    ("Fix: return the price minus the discount.",
     "sed -i 's|price \\* percent / 100|price * (1 - percent / 100)|' inventory/pricing.py"),
    ("Check the edit.", "git diff"),
    ("Repro again.",
     "python3 -c \"from inventory.pricing import apply_discount as d; print([d(100, p) for p in (0, 10, 25, 100)])\""),
    ("Run the pricing tests again.", "python3 -m pytest -q tests/test_pricing.py 2>&1 | tail -5"),
    ("Other places that use percent?", "grep -rn percent inventory/ tests/"),
    ("Edge cases: 0 and 100 percent, fractional prices.",
     'python3 -c "from inventory.pricing import apply_discount as d; print(d(80, 0), d(80, 100), d(19.99, 15))"'),
    ("Reject percentages outside 0..100.", EDIT_SCRIPT),
    ("Check the function now.", "sed -n 6,12p inventory/pricing.py"),
    ("Does the check work?",
     'python3 -c "from inventory.pricing import apply_discount as d\ntry:\n    d(10, 150)\nexcept ValueError as e:\n'
     '    print(\'ValueError:\', e)"'),
    ("Look at the other tests for style.", "head -20 tests/test_utils.py"),
    ("Summary of the change.", "git diff --stat"),
    ("Nothing else changed?", "git status --short"),
]
MINI_SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached"
LIMITS = ["--network", "none", "--init", "--cpus", "1", "--memory", "2g", "--memory-swap", "2g", "--pids-limit", "512"]
"""mini-swe-agent's `docker run` arguments: the limits Evolve's `SandboxConfig()` defaults give its containers."""


def evolve_response(thought: str, command: str) -> str:
    call = json.dumps({"name": "bash", "parameters": {"command": command}})
    return f"<think>{thought}</think>\n<tool_call>\n{call}\n</tool_call>"


def mini_response(thought: str, command: str) -> str:
    return f"THOUGHT: {thought}\n\n```mswea_bash_command\n{command}\n```"


def make_repo(path: Path) -> Path:
    for name, text in REPO_FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "Inventory: items, stock and pricing"]):
        subprocess.run([*git, *args], cwd=path, check=True)
    return path


MASK = re.compile(r"\d+\.\d+s\b|\b[0-9a-f]{7,40}\b")


def masked(text: str) -> str:
    return MASK.sub("#", text).strip()


# --- Evolve ------------------------------------------------------------------------------------------------
class TimedDockerSandbox(DockerSandbox):
    """`DockerSandbox` that adds up the in-sandbox time (`ExecResult.seconds`) of the trajectory's own commands:
    the agent's bash commands (its `agent` session) and the submit step's `git add -A && git diff --cached`.
    Other commands Evolve runs for itself (e.g. the per-step workspace snapshot that `undo` restores) are
    overhead, as is everything outside the sandbox."""

    def __init__(self, *args, **kwargs):
        self.clear()
        super().__init__(*args, **kwargs)

    def exec(self, command, timeout=None, **kwargs):
        r = super().exec(command, timeout, **kwargs)
        if kwargs.get("session") == BASH_SESSION or "diff --cached" in command:
            self.exec_seconds += r.seconds
            self.outputs.append(r.output)
        else:
            self.bookkeeping_seconds += r.seconds
        return r

    def clear(self) -> None:
        self.exec_seconds, self.bookkeeping_seconds, self.outputs = 0.0, 0.0, []


def run_evolve(repo: Path, store: RunStore | None, variant_dir: str | None = None) -> dict:
    variant = AgentVariant.load(variant_dir) if variant_dir else AgentVariant.load()
    variant.budget.max_steps = 100
    variant.budget.max_tokens = 10_000_000
    instance = TaskInstance(instance_id="inventory-discount", problem_statement=PROBLEM)
    t0 = time.perf_counter()
    sb = TimedDockerSandbox.start(SandboxConfig(), workspace=repo)
    t1 = time.perf_counter()
    try:
        sb.clear()
        policy = ScriptedPolicy([evolve_response(t, c) for t, c in STEPS])
        if store is not None:
            traj = Trajectory(run_id="bench", instance_id=instance.instance_id)
            store.put_trajectory(traj)
            agent = Agent(policy, variant, on_step=lambda t, s: store.append_step(t.id, s))
        else:
            traj, agent = None, Agent(policy, variant)
        t2 = time.perf_counter()
        traj = agent.run(instance, sb, traj)
        if store is not None:
            store.put_trajectory(traj)
        t3 = time.perf_counter()
    finally:
        sb.stop()
    assert traj.status == TrajectoryStatus.submitted, (traj.status, traj.error)
    assert len(traj.steps) == len(STEPS) + 1, len(traj.steps)
    return {"start": t1 - t0, "episode": t3 - t2, "exec": sb.exec_seconds, "steps": len(traj.steps),
            "bookkeeping": sb.bookkeeping_seconds,
            "patch": traj.patch, "outputs": sb.outputs[:len(STEPS)]}


# --- mini-swe-agent ----------------------------------------------------------------------------------------
def mini_side(out_dir: Path):
    """mini-swe-agent's classes, imported quietly with its global config dir kept in `out_dir`."""
    os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
    os.environ.setdefault("MSWEA_GLOBAL_CONFIG_DIR", str(out_dir / "mswea-config"))
    from minisweagent.agents.default import DefaultAgent
    from minisweagent.config import get_config_from_spec
    from minisweagent.environments.docker import DockerEnvironment
    from minisweagent.models import GLOBAL_MODEL_STATS
    from minisweagent.models.test_models import DeterministicModel
    from minisweagent.models.utils.actions_text import parse_regex_actions

    logging.getLogger("minisweagent").setLevel(logging.WARNING)  # its container start/stop notices
    config = get_config_from_spec("mini_textbased")
    action_regex = r"```mswea_bash_command\s*\n(.*?)\n```"  # LitellmTextbasedModelConfig.action_regex

    class ReplayTextModel(DeterministicModel):
        """`DeterministicModel` that parses each recorded text response at query time, as
        `LitellmTextbasedModel.query` does with an LM's reply."""

        def query(self, messages, **kwargs):
            self.current_index += 1
            content = self.config.outputs[self.current_index]["content"]
            GLOBAL_MODEL_STATS.add(0.0)
            actions = parse_regex_actions(content, action_regex=action_regex,
                                          format_error_template=config["model"]["format_error_template"])
            return {"role": "assistant", "content": content,
                    "extra": {"actions": actions, "cost": 0.0, "timestamp": time.time()}}

    def run(repo: Path, record: Path | None) -> dict:
        responses = [mini_response(t, c) for t, c in STEPS] + [mini_response("Submit.", MINI_SUBMIT)]
        model = ReplayTextModel(outputs=[{"role": "assistant", "content": r} for r in responses],
                                observation_template=config["model"]["observation_template"])
        t0 = time.perf_counter()
        env = DockerEnvironment(image=BASE_IMAGE, cwd=WORKDIR, env=config["environment"]["env"],
                                run_args=["--rm", *LIMITS])
        try:
            subprocess.run(["docker", "cp", f"{repo}/.", f"{env.container_id}:{WORKDIR}"], check=True,
                           capture_output=True)
            t1 = time.perf_counter()
            agent = DefaultAgent(model, env, system_template=config["agent"]["system_template"],
                                 instance_template=config["agent"]["instance_template"], step_limit=0,
                                 cost_limit=0.0, output_path=record)
            t2 = time.perf_counter()
            result = agent.run(PROBLEM)
            t3 = time.perf_counter()
        finally:
            subprocess.run(["docker", "rm", "-f", env.container_id], capture_output=True)
            env.container_id = None  # removed: nothing left for its background `cleanup`
        assert result.get("exit_status") == "Submitted", result
        outputs = [m["extra"]["raw_output"] for m in agent.messages
                   if m.get("role") == "user" and "raw_output" in m.get("extra", {})]
        return {"start": t1 - t0, "episode": t3 - t2, "steps": agent.n_calls, "patch": result["submission"],
                "outputs": outputs[:len(STEPS)]}

    return run


# --- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="no trajectory recording on either side")
    parser.add_argument("--variant", default=None, help="Evolve's agent variant directory (default: the default one)")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 150))
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp_name:
        tmp = Path(tmp_name)
        repo = make_repo(tmp / "repo")
        run_mini = mini_side(tmp)
        store = None if args.no_record else RunStore(tmp / "evolve-run")
        mini_record = None if args.no_record else tmp / "mini" / "trajectory.json"
        runs: dict[str, list[dict]] = {"evolve": [], "mini": []}

        def one(side: str) -> dict:
            return run_evolve(repo, store, args.variant) if side == "evolve" else run_mini(repo, mini_record)

        warm = {side: one(side) for side in ("evolve", "mini")}  # untimed warm-up
        for rep in range(args.reps):
            for side in (("evolve", "mini") if rep % 2 == 0 else ("mini", "evolve")):
                r = one(side)
                runs[side].append(r)
                logging.info("rep %d %s: episode %.2f s, start %.2f s", rep + 1, side, r["episode"], r["start"])
        if store is not None:
            store.close()

    # the two sides did the same work
    ev, mi = warm["evolve"], warm["mini"]
    same = sum(masked(a) == masked(b) for a, b in zip(ev["outputs"], mi["outputs"]))
    differ = [i + 1 for i, (a, b) in enumerate(zip(ev["outputs"], mi["outputs"])) if masked(a) != masked(b)]
    assert ev["patch"].strip() and ev["patch"].strip() == mi["patch"].strip(), "the submitted patches differ"

    steps = ev["steps"]
    assert mi["steps"] == steps
    ev_episode = statistics.median(r["episode"] for r in runs["evolve"])
    mi_episode = statistics.median(r["episode"] for r in runs["mini"])
    exec_s = statistics.median(r["exec"] for r in runs["evolve"])
    ev_over = statistics.median((r["episode"] - r["exec"]) / r["steps"] for r in runs["evolve"]) * 1000
    mi_over = (mi_episode - exec_s) / steps * 1000
    ev_within = statistics.median(r["episode"] / r["exec"] for r in runs["evolve"])
    ev_books = statistics.median(r["bookkeeping"] / r["steps"] for r in runs["evolve"]) * 1000
    mi_within = mi_episode / exec_s

    table = Table(title=f"replay of a {len(STEPS)}-step trajectory + submit ({steps} steps), median of {args.reps}"
                        f"{'' if args.no_record else ', recording on'}; commands' own time {exec_s:.3f} s")
    for col in ("measure", "Evolve", "mini-swe-agent 2.4.6", "ratio", "target"):
        table.add_column(col, justify="right")
    table.add_row("overhead per step beyond command time",
                  f"{ev_over:.2f} ms (in-sandbox bookkeeping {ev_books:.2f} ms)", f"≈{mi_over:.1f} ms",
                  f"{mi_over / ev_over:.0f}x less", "")
    table.add_row("episode / commands' own time", f"{ev_episode:.3f} s / {exec_s:.3f} s = {ev_within:.3f}",
                  f"≈{mi_episode:.3f} s / {exec_s:.3f} s = {mi_within:.2f}", "",
                  f"<= 1.10: {'met' if ev_within <= 1.10 else 'NOT met'}")
    console.print(table)
    console.print(f"same work on both sides: command outputs identical (durations masked) {same}/{len(STEPS)}"
                  f"{f' (differ: steps {differ})' if differ else ''}, submitted patches identical")


if __name__ == "__main__":
    main()
