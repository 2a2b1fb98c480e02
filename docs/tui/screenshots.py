"""Screenshots of the `evolve tui` screens for the README, from real runs (Docker needed); anyone can rerun it:

    .venv/bin/python docs/tui/screenshots.py [ROOT]

Without ROOT it makes one: tests/tui_fixtures.real_runs (`evolve run bundled` with a scripted policy in Docker
sandboxes, graded in fresh ones; `evolve run toolcall` with scripted answers; an SE-Agent revision, HGM, MCTS and
SE-Agent trees through the store API), then a real SFT of the tiny test model (tests/tiny_model.py) on the toolcall
run's trajectories, so the training curves are a real training's, and a real GRPO of it with the Self-Evolving
Curriculum over the toolcall categories (two runs of eight training prompts, two per category; the second answers
two categories wrong, so their groups' rewards differ and the others' do not), whose category weights the Training
screen draws (`w`). Writes SVG (Textual's own
screenshots) and PNG (cairosvg, `pip install .[docs]`) files beside this script.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tui.app import EvolveApp  # noqa: E402


def make_root(root: Path) -> Path:
    """The runs the screenshots show (see the module docstring); about three minutes on two cores."""
    from agent.replay import ScriptedPolicy
    from evolve.store import RunStore
    from evolve.toolcall_eval import run_toolcall
    from evolve.train.grpo import GRPOConfig, train_grpo
    from evolve.train.sft import SFTConfig, train_sft
    from records import Message
    from tasks.registry import get_suite
    from tests.tiny_model import build_tiny_model
    from tests.tui_fixtures import real_runs

    real_runs(root)
    model = build_tiny_model(root.parent / f"{root.name}-tiny-model")
    with RunStore(root / "toolcall", readonly=True) as store:
        items = [(t, None) for t in store.trajectories()]
    train_sft(SFTConfig(policy=f"hf:{model}", lora=None, lr=1e-3, batch_size=2, micro_batch_size=2, max_steps=30,
                        max_len=4096, device="cpu"), [], root / "sft-toolcall", items=items)
    pool = get_suite("toolcall").select(None, None, split="train")
    cats = sorted({i.extra["category"] for i in pool})  # single, multiple, nested, no_call: two instances each
    tc = [i for c in cats for i in [j for j in pool if j.extra["category"] == c][:2]]
    signal = set(cats[:2])  # the second run answers these categories wrong: their groups' rewards differ

    class Scripted(ScriptedPolicy):  # each prompt gets its right answer, or a refusal
        def __init__(self, wrong: set[str]) -> None:
            super().__init__([])
            self.wrong = wrong

        def responses_for(self, conversation):
            inst = next(i for i in tc if i.problem_statement in conversation[-1].content)
            bad = inst.extra["category"] in self.wrong
            return [Message(role="assistant", content="<think>no</think>\nI cannot." if bad else inst.extra["answer"])]

    for name, wrong in (("toolcall-train-a", set()), ("toolcall-train-b", signal)):
        run_toolcall(tc, Scripted(wrong), root / name, {"suite": "toolcall", "policy": "replay", "split": "train"})
    train_grpo(GRPOConfig(policy=f"hf:{model}", lora=None, lr=1e-4, batch_size=2, micro_batch_size=2, max_steps=16,
                          max_len=2048, device="cpu", curriculum="sec"),
               [root / "toolcall-train-a", root / "toolcall-train-b"], root / "grpo-curriculum")
    return root


async def shoot(root: Path, size=(100, 30)) -> list[Path]:
    app = EvolveApp(root, open_single=False)
    app.animation_level = "none"
    shots = []
    async with app.run_test(size=size) as pilot:
        async def settle():
            for _ in range(3):
                await pilot.pause()
                await app.workers.wait_for_complete()
            await pilot.pause(0.3)

        def save(name: str):
            app.save_screenshot(f"{name}.svg", str(HERE))
            shots.append(HERE / f"{name}.svg")

        await settle()
        save("runs")
        runs = app.screen
        runs.query_one("#runs").move_cursor(row=[r.run_id for r in runs.runs].index("swe"))
        await pilot.press("enter")
        await settle()
        save("dashboard")
        await pilot.press("e")
        await settle()
        save("events")
        await pilot.press("escape", "question_mark")
        await settle()
        save("help")
        await pilot.press("escape", "enter")
        await settle()
        await pilot.press("l")
        await settle()
        save("inspector")
        await pilot.press("v", "v")
        await settle()
        save("inspector-tests")
        await pilot.press("v")
        await settle()
        save("inspector-patch")
        await pilot.press("escape", "t")
        await settle()
        tree = app.screen
        tree.query_one("#tree").move_cursor(tree.widgets["n-a"])
        await settle()
        save("tree")
        await pilot.press("v")
        await settle()
        save("tree-diff")
        await pilot.press("escape", "escape", "v")
        await settle()
        await pilot.press("s", "s")  # smoothing 0.9
        await settle()
        save("training")
        await pilot.press("w")  # the GRPO version's curriculum: its category weights over the steps
        await settle()
        save("training-curriculum")
    return shots


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        root = make_root(Path(tempfile.mkdtemp(prefix="evolve-tui-shots-")) / "runs")
    import cairosvg

    for svg in asyncio.run(shoot(root)):
        cairosvg.svg2png(url=str(svg), write_to=str(svg.with_suffix(".png")))
        print(svg.with_suffix(".png"))


if __name__ == "__main__":
    main()
