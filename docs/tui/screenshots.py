"""Screenshots of every `evolve tui` screen for the README, from real runs (Docker needed):

    .venv/bin/python docs/tui/screenshots.py [ROOT]

Without ROOT it makes one with tests/tui_fixtures.real_runs (evolve run bundled with a scripted policy,
evolve run toolcall, HGM/MCTS/SE-Agent trees and a training run through the store API). Writes SVG
(Textual's own screenshots) and PNG (cairosvg, `pip install .[docs]`) files beside this script.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tui.app import EvolveApp  # noqa: E402


async def shoot(root: Path, size=(100, 30)) -> list[Path]:
    app = EvolveApp(root, open_single=False)
    app.animation_level = "none"
    shots = []
    async with app.run_test(size=size) as pilot:
        async def settle():
            for _ in range(3):
                await pilot.pause()
                await app.workers.wait_for_complete()
            await pilot.pause()

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
        await pilot.press("enter")
        await settle()
        await pilot.press("l")
        await settle()
        save("inspector")
        await pilot.press("v", "v")
        await settle()
        save("inspector-tests")
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
        save("training")
    return shots


def main() -> None:
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        from tests.tui_fixtures import real_runs

        root = Path(tempfile.mkdtemp(prefix="evolve-tui-shots-"))
        real_runs(root)
    import cairosvg

    for svg in asyncio.run(shoot(root)):
        cairosvg.svg2png(url=str(svg), write_to=str(svg.with_suffix(".png")))
        print(svg.with_suffix(".png"))


if __name__ == "__main__":
    main()
