"""The Training screen is live (issue 22, items 7 and 16): a training with a tiny real model stores its version when
it starts, so its curves are watched while it learns, and the screen moves to a newer version when one appears
(it stayed on the first). Smoothing, overlaid versions and a time axis redraw the curves."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_model import build_tiny_model  # noqa: E402

from evolve.train.sft import SFTConfig, train_sft  # noqa: E402
from records import Message, Step, Trajectory, TrajectoryStatus  # noqa: E402
from tests.tui_fixtures import settle  # noqa: E402
from tui.app import EvolveApp  # noqa: E402
from tui.screens.training import TrainingScreen  # noqa: E402
from tui.widgets import smooth  # noqa: E402

torch.set_num_threads(1)


def items(n: int = 8) -> list[tuple[Trajectory, None]]:
    return [(Trajectory(run_id="gold", instance_id=f"i{k}", status=TrajectoryStatus.submitted,
                        prompt=[Message(role="user", content=f"say {k}")],
                        steps=[Step(index=0, response=Message(role="assistant", content=f"<think>ok</think> {k}"))]),
             None) for k in range(n)]


def config(model: Path, policy: str | None = None, steps: int = 6) -> SFTConfig:
    return SFTConfig(policy=policy or f"hf:{model}", lora=None, lr=1e-3, batch_size=2, micro_batch_size=2,
                     max_steps=steps, max_len=128, save_every=100, device="cpu")


class Paced:
    """`should_stop` for a training in a thread: before each step it waits until the test lets it go on."""

    def __init__(self) -> None:
        self.go = threading.Semaphore(0)
        self.at = -1

    def __call__(self) -> None:
        self.at += 1
        if not self.go.acquire(timeout=120):
            return "the test gave up"
        return None


def test_training_screen_follows_a_new_version_and_draws_it_while_it_trains(tmp_path: Path):
    model = build_tiny_model(tmp_path / "tiny")
    root = tmp_path / "runs"
    first = train_sft(config(model), [], root / "sft-1", items=items())
    assert first.status == "ready"
    paced = Paced()
    result: dict = {}
    second = threading.Thread(target=lambda: result.update(v=train_sft(
        config(model, f"version:{first.id}"), [], root / "sft-2", items=items(), should_stop=paced)), daemon=True)

    async def go():
        app = EvolveApp(root, poll=0.2, open_single=False)
        app.animation_level = "none"
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            await pilot.press("v")
            await settle(app, pilot)
            screen = app.screen
            assert isinstance(screen, TrainingScreen)
            assert screen.selected == first.id
            second.start()

            async def until(cond, what, timeout=120.0):
                end = time.time() + timeout
                while time.time() < end:
                    if cond():
                        return
                    await pilot.pause(0.1)
                raise AssertionError(f"timed out waiting for {what}")

            def live():
                v = screen.versions.get(screen.selected)
                return v is not None and v.id != first.id and v.status == "training"

            await until(live, "the version being trained to appear and be followed")
            trained = screen.selected
            for k in range(1, 4):  # three steps, each drawn while the training waits before the next
                paced.go.release()
                await until(lambda: len(screen.query_one("#plot-loss").series[0][1]) == k, f"{k} loss points")
                assert "training" in str(screen.widgets[trained].label)
            plot = screen.query_one("#plot-loss")
            raw = plot.series[0][2]
            await pilot.press("s", "s")  # smoothing 0.9: the smoothed curve is TensorBoard's EMA of the raw one
            assert screen.smoothing == 0.9 and plot.series[0][2] == raw and plot.drawn[0] == smooth(raw, 0.9)
            await pilot.press("x")
            assert screen.by_time and plot.series[0][1][0] == 0.0
            screen.query_one("#versions").move_cursor(screen.widgets[first.id])
            await pilot.pause()
            await pilot.press("a")  # the first version overlaid on the one being trained
            await settle(app, pilot)
            assert screen.overlay == [first.id] and [s[0] for s in plot.series] == [trained, first.id]
            for _ in range(3):
                paced.go.release()
            second.join(120)
            await until(lambda: screen.versions[trained].status == "ready", "the finished version")
            assert result["v"].id == trained
    asyncio.run(go())


def test_smoothing_is_an_unbiased_moving_average():
    assert smooth([1.0, 1.0, 1.0], 0.9) == [1.0, 1.0, 1.0]  # no start-up bias towards 0
    s = smooth([0.0, 10.0], 0.5)
    assert abs(s[1] - (0.5 * 0.0 * 0.5 + 0.5 * 10.0) / (1 - 0.25)) < 1e-9
    assert smooth([3.0, 5.0], 0.0) == [3.0, 5.0]
