"""`evolve tui`: one Textual App over the run stores under a path (a run directory or a root of runs)."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Callable

from textual import events
from textual.app import App
from textual.binding import Binding

from tui.screens.dashboard import DashboardScreen
from tui.screens.dialogs import ConfirmScreen
from tui.screens.documents import DocumentsScreen
from tui.screens.help import HelpScreen
from tui.screens.loop import LoopScreen
from tui.screens.resources import ResourcesScreen
from tui.screens.runs import RunsScreen
from tui.screens.training import TrainingScreen
from tui.screens.tree import TreeScreen
from tui.source import RunRef, Source


class EvolveApp(App):
    """Runs → dashboard → trajectory inspector; tree and training screens; stop a run."""

    CSS_PATH = "evolve.tcss"
    TITLE = "Evolve"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", show=False),
                Binding("question_mark,f1", "help", "Help", key_display="?"),
                Binding("R", "resources", "Resources", show=False)]

    def __init__(self, path: str | Path, poll: float = 0.5, export_dir: str | Path = "evolve-exports",
                 open_single: bool = True, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.clock = clock
        """The time "now" for ages and running durations (a fixed one makes screenshots reproducible)."""
        self.source = Source(path)
        self.poll = poll
        """Seconds between checks for new data."""
        self.export_dir = Path(export_dir)
        self.open_single = open_single

    IDLE_GC_AFTER = 0.5
    """Seconds without input after which the full (oldest-generation) garbage collection runs."""
    GC_BACKLOG = 250
    """Young collections after which a full collection runs even while keys keep coming (bounds memory)."""

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            self._last_input = time.monotonic()
        await super().on_event(event)

    def _idle_collect(self) -> None:
        """A full collection scans every live object (~100 ms here with a large store open); Python would
        start one in the middle of whichever key happens to allocate past its threshold. It runs here
        instead, once the user pauses, or when the backlog grows past `GC_BACKLOG` young collections."""
        pending = gc.get_count()[2]
        if pending and (time.monotonic() - self._last_input > self.IDLE_GC_AFTER or pending > self.GC_BACKLOG):
            gc.collect()

    def on_mount(self) -> None:
        gc.freeze()  # the app's long-lived objects leave the collector's young generations: shorter GC pauses
        self._last_input = time.monotonic()
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(*self._gc_threshold[:2], 1_000_000)  # no automatic full collection: `_idle_collect` runs it
        self.set_interval(0.25, self._idle_collect)
        self.push_screen(RunsScreen())
        main = self.source.main_run() if self.open_single else None
        if main is not None:  # `evolve tui RUN_DIR` opens the run straight away
            self.open_run(main)

    def open_run(self, run: RunRef) -> None:
        if run.kind in ("train", "training"):
            self.open_training(run.store_dir)
            return
        if run.kind == "loop":
            self.push_screen(LoopScreen(run))
            return
        self.push_screen(DashboardScreen(run))

    def open_tree(self, store_dir: Path) -> None:
        self._push_kept(f"tree:{store_dir}", lambda: TreeScreen(store_dir))

    def open_training(self, under: Path | None = None) -> None:
        """The policy versions of every store under the opened path, or of the stores at and below `under` (a
        run's own: Agent-R keeps each iteration's training in `it<K>/sft`)."""
        self._push_kept(f"training:{under or ''}", lambda: TrainingScreen(under))

    def open_documents(self, run: RunRef) -> None:
        self.push_screen(DocumentsScreen(run))

    def _push_kept(self, name: str, make) -> None:
        """Screens that are costly to build are built once and kept (installed), then shown again."""
        if not self.is_screen_installed(name):
            self.install_screen(make(), name)
        self.push_screen(name)

    def confirm_stop(self, run: RunRef, status: str | None = None) -> None:
        status = status or run.status
        if status != "running":
            self.notify(f"{run.run_id} is {status}: nothing to stop"
                        + (" (its process is gone; rerun its command to resume it)" if status == "dead" else ""),
                        timeout=4)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.source.request_stop(run)
                self.notify(f"stop requested for {run.run_id}: it finishes what is in flight; "
                            "rerun the same command to resume", timeout=5)

        self.push_screen(ConfirmScreen(f"Stop run {run.run_id} ({run.kind}, {run.status}) gracefully?"), answered)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_resources(self) -> None:
        if not isinstance(self.screen, ResourcesScreen):
            self.push_screen(ResourcesScreen())

    def on_unmount(self) -> None:
        gc.set_threshold(*self._gc_threshold)
        self.source.close()
