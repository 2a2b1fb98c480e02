"""A screen that refreshes itself while it is on top and its stores changed (polled, cheap)."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen

from evolve.store import RunStore
from tui.widgets import resort, sort_by_header


class LiveScreen(Screen):
    """Polls `PRAGMA data_version` of its stores every `app.poll` seconds; calls `reload()` when any changed.

    The check is one tiny query per store, so polling twice a second costs nothing while nothing happens,
    and a screen that is not on top does not poll at all."""

    _seen: tuple[int, ...] | None = None

    @property
    def evolve(self) -> Any:
        """The `tui.app.EvolveApp` running this screen (a screen knows its app as `self.app`, never by importing
        it): its `poll` interval and run `source`."""
        return self.app

    def watched_stores(self) -> list[RunStore]:
        return []

    def reload(self) -> None:
        """Re-read what the screen shows: by default `fetch()` in a worker thread (on its own read-only
        connections) and `apply()` on the UI thread, so keys are never kept waiting behind a query."""
        self.run_worker(self._fetch_then_apply, thread=True, exclusive=True, group="reload")

    def _fetch_then_apply(self) -> None:
        data = self.fetch()
        self.app.call_from_thread(self.apply, data)

    def fetch(self) -> object:
        """Read the store(s) (worker thread: use `app.source.background_store`)."""

    def apply(self, data: object) -> None:
        """Show what `fetch` read (UI thread)."""

    def on_mount(self) -> None:
        self.set_interval(self.evolve.poll, self.poll)

    def poll(self, force: bool = False) -> None:
        if not self.is_current and not force:
            return
        version = tuple(s.data_version() for s in self.watched_stores())
        if force or version != self._seen:
            self._seen = version
            self.reload()

    _sorted: dict | None = None

    def on_data_table_header_selected(self, event) -> None:
        """A click on a column's header sorts that table by it (a second click reverses); screens whose tables
        are paged from the store sort there instead."""
        if self._sorted is None:
            self._sorted = {}
        sort_by_header(event.data_table, event.column_key, self._sorted.setdefault(event.data_table.id, {}))

    def resort(self, table) -> None:
        """Keep a refilled table in the order its header click chose."""
        resort(table, (self._sorted or {}).get(table.id))

    def on_screen_resume(self) -> None:
        self.poll()  # back on top: re-read only if something changed meanwhile
