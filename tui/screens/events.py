"""The event log of a run, in words (what the CLI prints: starting sandbox, step N, grading, retries, HGM's
decisions), followed live or scrolled back, filtered by any text."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, RichLog

from tui.events import event_line, event_matches, for_runs
from tui.screens.base import LiveScreen

KEEP = 20_000
"""Events held in memory (the newest); the store keeps them all."""


class EventsScreen(LiveScreen):
    BINDINGS = [
        Binding("f", "follow", "Follow"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("j,down", "scroll(1)", "Down", show=False),
        Binding("k,up", "scroll(-1)", "Up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("g,home", "top", "Top", show=False),
        Binding("G,end", "bottom", "Bottom", show=False),
        Binding("escape", "back", "Back"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self, store_dir: Path, run_ids: set[str] | None, what: str) -> None:
        super().__init__()
        self.store_dir, self.run_ids, self.what = store_dir, run_ids, what
        self.events: list[dict] = []
        self.last = 0
        self.needle = ""
        self.follow = True

    def compose(self) -> ComposeResult:
        yield Header()
        yield RichLog(id="event-log", max_lines=KEEP, wrap=True, markup=False, auto_scroll=True)
        yield Input(id="event-filter", placeholder="show events containing (enter: apply, esc: all)")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.title = f"events · {self.what}"
        super().on_mount()
        self.query_one("#event-log").focus()

    def watched_stores(self):
        return [self.evolve.source.store(self.store_dir)]

    def fetch(self) -> list[dict]:
        store = self.evolve.source.background_store(self.store_dir, lane="events")
        out, after = [], self.last
        while True:
            got = store.events(after_id=after, limit=5000)
            out += [e for e in got if for_runs(e, self.run_ids)]
            if len(got) < 5000:
                return out
            after = got[-1]["id"]

    def apply(self, new: list[dict]) -> None:
        new = [e for e in new if e["id"] > self.last]
        if not new:
            self.show_title()
            return
        self.last = new[-1]["id"]
        self.events = (self.events + new)[-KEEP:]
        log = self.query_one("#event-log", RichLog)
        for ev in new:
            if event_matches(ev, self.needle):
                log.write(event_line(ev), scroll_end=self.follow)
        self.show_title()

    def redraw(self) -> None:
        log = self.query_one("#event-log", RichLog)
        log.clear()
        for ev in self.events:
            if event_matches(ev, self.needle):
                log.write(event_line(ev), scroll_end=False)
        if self.follow:
            log.scroll_end(animate=False)
        self.show_title()

    def show_title(self) -> None:
        shown = sum(event_matches(e, self.needle) for e in self.events) if self.needle else len(self.events)
        self.sub_title = (f"{shown} of {len(self.events)} events" + (f" matching {self.needle!r}" if self.needle else "")
                          + (" · following" if self.follow else " · paused (f: follow)"))

    def action_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one("#event-log", RichLog)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self.show_title()

    def action_scroll(self, delta: int) -> None:
        self._pause()
        self.query_one("#event-log", RichLog).scroll_relative(y=delta, animate=False)

    def action_page(self, delta: int) -> None:
        self._pause()
        log = self.query_one("#event-log", RichLog)
        log.scroll_relative(y=delta * max(1, log.scrollable_content_region.height - 1), animate=False)

    def action_top(self) -> None:
        self._pause()
        self.query_one("#event-log", RichLog).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one("#event-log", RichLog).scroll_end(animate=False)

    def _pause(self) -> None:
        """Scrolling back stops following (new lines would pull the view away); `f` follows again."""
        if self.follow:
            self.follow = False
            self.query_one("#event-log", RichLog).auto_scroll = False
            self.show_title()

    def action_filter(self) -> None:
        box = self.query_one("#event-filter", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.needle = event.value.strip()
        event.input.display = False
        self.query_one("#event-log").focus()
        self.redraw()

    def action_back(self) -> None:
        box = self.query_one("#event-filter", Input)
        if box.display or self.needle:
            box.value, box.display, self.needle = "", False, ""
            self.query_one("#event-log").focus()
            self.redraw()
        else:
            self.app.pop_screen()
