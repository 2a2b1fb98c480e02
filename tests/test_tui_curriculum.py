"""The Training screen shows the Self-Evolving Curriculum's category weights over time (issue 21, from the TUI side):
a real `train_grpo` with `curriculum="sec"` on the tiny test model, paced step by step from the test, stores the
bandit's state after every step; the screen (`w`) draws each category's weight against the step and lists the
categories with their weight, change, value and last reward, live while the training runs, the same numbers the
store holds (evolve/curriculum_log.history)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.curriculum_log import history  # noqa: E402
from evolve.store import RunStore  # noqa: E402
from evolve.train.grpo import GRPOConfig, train_grpo  # noqa: E402
from records import Message, Reward, Step, TaskInstance, Trajectory, TrajectoryStatus  # noqa: E402
from tests.tui_fixtures import settle  # noqa: E402
from tui.app import EvolveApp  # noqa: E402
from tui.screens.training import TrainingScreen  # noqa: E402

torch.set_num_threads(1)
STEPS = 6


def write_rollouts(run: Path) -> None:
    """Four instances of two categories, two trajectories each: `src/signal`'s rewards differ within a group (GRPO
    learns from them), `src/flat`'s are all equal (nothing to learn: the curriculum should move away from it)."""
    with RunStore(run) as store:
        store.put_run("synth", "run", {})
        for g in range(4):
            cat = "src/signal" if g < 2 else "src/flat"
            store.put_instance("synth", TaskInstance(instance_id=f"i{g}", extra={"category": cat}))
            for k in range(2):
                traj = Trajectory(run_id="synth", instance_id=f"i{g}", status=TrajectoryStatus.submitted,
                                  prompt=[Message(role="user", content=f"task {g}")],
                                  steps=[Step(index=0, response=Message(role="assistant", content=f"answer {k}"))])
                store.put_trajectory(traj)
                store.put_reward(traj.id, Reward(name="swe", total=float(k) if g < 2 else 1.0))


class Paced:
    """`should_stop` for a training in a thread: before each step it waits until the test lets it go on."""

    def __init__(self) -> None:
        self.go = threading.Semaphore(0)

    def __call__(self) -> str | None:
        return None if self.go.acquire(timeout=180) else "the test gave up"


def test_training_screen_draws_the_curriculum_weights_live(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    root = tmp_path / "runs"
    write_rollouts(root / "synth")
    out = root / "grpo"
    cfg = GRPOConfig(policy=f"hf:{model}", lora=None, device="cpu", batch_size=2, micro_batch_size=2, max_len=128,
                     max_steps=STEPS, save_every=100, curriculum="sec")
    paced = Paced()
    result: dict = {}
    training = threading.Thread(target=lambda: result.update(v=train_grpo(cfg, [root / "synth"], out,
                                                                          should_stop=paced)), daemon=True)
    training.start()

    def stored() -> list[dict]:
        try:
            with RunStore(out, readonly=True) as store:
                return history(store, "train")
        except Exception:  # noqa: BLE001 - the store is still being created
            return []

    async def go():
        app = EvolveApp(root, poll=0.2, open_single=False)
        app.animation_level = "none"
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)

            async def until(cond, what, timeout=180.0):
                end = time.time() + timeout
                while time.time() < end:
                    if cond():
                        return
                    await pilot.pause(0.1)
                raise AssertionError(f"timed out waiting for {what}")

            await pilot.press("v")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, TrainingScreen)
            await until(lambda: screen.selected and screen.versions[screen.selected].status == "training",
                        "the GRPO version being trained")
            plot, table = screen.query_one("#curriculum-plot"), screen.query_one("#curriculum-table")
            await pilot.press("w")
            await settle(app, pilot)
            assert screen.query_one("#curriculum").display and not screen.query_one("#plots").display
            for k in range(1, 4):  # each step's update drawn while the training waits before the next
                paced.go.release()
                await until(lambda: len(stored()) == k and len(plot.lines.get("src/signal", ([], []))[0]) == k,
                            f"the curriculum's update {k} on screen")
            past = stored()
            assert [int(x) for x in plot.lines["src/signal"][0]] == [p["step"] for p in past] == [0, 1, 2]
            for cat in ("src/signal", "src/flat"):
                assert plot.lines[cat][1] == [p["weights"][cat] for p in past]  # the stored weights, drawn
            rows = {str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)] for i in range(table.row_count)}
            assert set(rows) == {"src/signal", "src/flat"}
            assert rows["src/signal"][1] == f"{past[-1]['weights']['src/signal']:.3f}"
            assert rows["src/signal"][3] == f"{past[-1]['q']['src/signal']:.3f}"
            assert "curriculum of 2 categories, 3 updates" in str(screen.query_one("#version-detail").render())
            await pilot.press("x")  # against the seconds since the first update
            assert plot.lines["src/signal"][0][0] == 0.0 and screen.by_time
            for _ in range(STEPS - 3):
                paced.go.release()
            training.join(300)
            await until(lambda: screen.versions[screen.selected].status == "ready"
                        and len(plot.lines["src/signal"][0]) == STEPS, "the finished training")
            final = stored()[-1]
            assert final["weights"]["src/signal"] > final["weights"]["src/flat"]  # the bandit favours signal
            assert str(table.get_row_at(0)[0]) == "src/signal"  # heaviest first
            await pilot.press("w")
            await settle(app, pilot)
            assert screen.query_one("#plots").display and not screen.query_one("#curriculum").display
    asyncio.run(go())
    assert result["v"] is not None and result["v"].status == "ready"
