"""What a synthesis has done, on disk as it happens, so a killed synthesis resumes where it stopped.

`OUT` (the suite, one SWE-bench row per line) and `OUT.attempts` (one line per bug tried: its key, source,
family and verdict) are appended and flushed line by line; a line torn by a kill is dropped when the files
are opened again. A bug whose attempt is recorded is never tried again; a row is written before its attempt,
so a row is never lost (a bug killed between the two is tried again and its row, the same, is not doubled).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from records import TaskInstance


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; a torn last line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    good_end, out = 0, []
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return out


class Journal:
    """The suite file and its attempts file, append-only and thread-safe."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.attempts_path = self.out.with_name(self.out.name + ".attempts")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {r["instance_id"]: r for r in _read_lines(self.out)}
        self.attempts: list[dict[str, Any]] = _read_lines(self.attempts_path)
        self.tried = {(a["source"], a["key"]) for a in self.attempts if a.get("kind") == "bug"}
        self.tried |= {(r["extra"]["source"], r["extra"]["bug_key"]) for r in self.rows.values()}

    def done(self, source: str, key: str) -> bool:
        return (source, key) in self.tried

    def rows_of(self, source: str) -> int:
        return sum(1 for r in self.rows.values() if r.get("extra", {}).get("source") == source)

    def total(self) -> int:
        return len(self.rows)

    def split_of(self, source: str) -> str | None:
        """The split this source's rows already have (resume keeps it)."""
        for r in self.rows.values():
            if r.get("extra", {}).get("source") == source:
                return r["extra"].get("split")
        return None

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_row(self, row: TaskInstance) -> bool:
        """Append a row unless one with its id is there; False when it was."""
        data = row.model_dump()
        with self._lock:
            if row.instance_id in self.rows:
                return False
            self._append(self.out, data)
            self.rows[row.instance_id] = data
            self.tried.add((data["extra"]["source"], data["extra"]["bug_key"]))
            return True

    def add_attempt(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._append(self.attempts_path, record)
            self.attempts.append(record)
            if record.get("kind") == "bug":
                self.tried.add((record["source"], record["key"]))

    def yields(self) -> dict[str, Counter]:
        """Tried and kept bugs per family and per source (the bench's yield table)."""
        out: dict[str, Counter] = {"tried_family": Counter(), "kept_family": Counter(), "tried_source": Counter(),
                                   "kept_source": Counter(), "reasons": Counter()}
        for a in self.attempts:
            if a.get("kind") != "bug":
                continue
            out["tried_family"][a["family"]] += 1
            out["tried_source"][a["source"]] += 1
            if a["verdict"] == "valid":
                out["kept_family"][a["family"]] += 1
                out["kept_source"][a["source"]] += 1
            else:
                out["reasons"][a.get("reason", "").split(":")[0].split(" (")[0]] += 1
        return out
