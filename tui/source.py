"""Where the TUI reads from: every run store under a root, opened read-only and kept open.

A path is either one run directory (it holds `evolve.db`) or a root whose subdirectories are run
directories; the stores a run keeps below its own directory (Agent-R's `it1/data` and `it1/sft`) are found too.
A run whose store says `running` while no process holds its lock (killed, crashed) is shown `dead`. Stores are opened with `RunStore(dir, readonly=True)`: SQLite WAL readers never block the
processes writing them. The only write the TUI ever makes is a stop request (`request_stop`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.store import DB_NAME, RunStore, StoreError, owner_alive


@dataclass
class RunRef:
    """One run inside one store (a store may hold several runs, e.g. a resumed training and its base)."""

    store_dir: Path
    run_id: str
    kind: str
    status: str
    config: dict[str, Any]
    created_at: float
    updated_at: float
    root: Path | None = None
    """The path the TUI was opened on (to name the store directory relative to it)."""

    @property
    def place(self) -> str:
        """The store directory relative to the opened path (`.` for the path itself)."""
        if self.root is None:
            return str(self.store_dir)
        try:
            return str(self.store_dir.relative_to(self.root)) or "."
        except ValueError:
            return str(self.store_dir)

    @property
    def key(self) -> str:
        return f"{self.store_dir}::{self.run_id}"


class Source:
    """The run stores under one path, opened lazily and cached; rescanned for new run directories."""

    def __init__(self, path: str | Path, depth: int = 3):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path} does not exist: give a run directory or a directory of runs")
        self.depth = depth
        self._stores: dict[Path, RunStore] = {}
        self._background: dict[tuple[Path, str], RunStore] = {}
        self._scanned = 0.0
        self._dirs: list[Path] = []

    def run_dirs(self, max_age: float = 2.0) -> list[Path]:
        """Run directories under the path (rescanned at most every `max_age` seconds)."""
        if time.monotonic() - self._scanned > max_age:
            found = [self.path] if (self.path / DB_NAME).exists() else []
            for level in range(1, self.depth + 1):
                found += [p.parent for p in self.path.glob("/".join(["*"] * level) + "/" + DB_NAME)]
            self._dirs = sorted(set(found))
            self._scanned = time.monotonic()
        return self._dirs

    def store(self, run_dir: Path) -> RunStore:
        st = self._stores.get(run_dir)
        if st is None:
            st = self._stores[run_dir] = RunStore(run_dir, readonly=True)
        return st

    def stores(self) -> list[RunStore]:
        """Every store that opens now; one still being created (no schema yet) is skipped until it does."""
        out = []
        for d in self.run_dirs():
            try:
                out.append(self.store(d))
            except (StoreError, sqlite3.Error):
                continue
        return out

    def background_store(self, run_dir: Path, lane: str = "") -> RunStore:
        """Another read-only connection for worker threads, so their queries never hold up a key; each
        `lane` (e.g. "pages" for reading ahead) has its own, so one worker never waits for another's query."""
        st = self._background.get((run_dir, lane))
        if st is None:
            st = self._background[(run_dir, lane)] = RunStore(run_dir, readonly=True)
        return st

    def runs(self) -> list[RunRef]:
        out = []
        for d in self.run_dirs():
            try:
                rows = self.background_store(d).runs()
            except (StoreError, sqlite3.Error):
                continue
            alive = owner_alive(d) if any(r["status"] == "running" for r in rows) else None
            out += [RunRef(d, r["id"], r["kind"], "dead" if r["status"] == "running" and alive is False else r["status"],
                           r["config"], r["created_at"], r["updated_at"], self.path) for r in rows]
        return sorted(out, key=lambda r: r.created_at)

    def main_run(self) -> RunRef | None:
        """The run to open straight away when the path is one run directory: the only run of its own store (the
        stores below it belong to it), else None."""
        own = [r for r in self.runs() if r.store_dir == self.path]
        return own[0] if len(own) == 1 else None

    def request_stop(self, run: RunRef, reason: str = "stop requested from evolve tui") -> None:
        """The one write the TUI makes: a stop request the run polls for (it stops gracefully, resumable)."""
        with RunStore(run.store_dir) as writable:
            writable.request_stop(run.run_id, reason)

    def close(self) -> None:
        for st in [*self._stores.values(), *self._background.values()]:
            st.close()
        self._stores.clear()
        self._background.clear()
