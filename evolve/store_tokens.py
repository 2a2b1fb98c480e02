"""Per-trajectory token totals kept inside the run store, so a monitor sorts a run by tokens with one indexed read
instead of summing every step's JSON (seconds on a run of 300,000 steps): a sort reads each trajectory's total through
the table's primary key (about 20 ms for 10,000 trajectories; an index on (run id, tokens) with a join saved a few ms
more and was left out: every step written would update it).

The totals live in their own table, `trajectory_tokens` (trajectory id, prompt + completion tokens), kept
right by triggers inside the database: whatever writes a step (an insert, a replace of a step index, an update, a
delete; this version of Evolve, an older one still running, a test writing SQL) moves its trajectory's total in the
same transaction. Nothing about the older tables changes, so older readers and writers keep working on a store that
has them (the store's `schema_version` is not raised).

A store made before the totals existed is filled in once by `fill`, the first time a writer opens it: a batch of
trajectories per transaction, in rowid order, only those without a total yet, so a kill loses at most one batch and
the next open goes on where it stopped; the `meta` row `token_totals` says when every trajectory has one. Until then
readers fall back, per trajectory, to summing its steps (`sort_sql`).
"""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger(__name__)

META_KEY = "token_totals"
"""The `meta` row set to `filled` once every trajectory of the store has its total."""

BATCH = 100
"""Trajectories filled in per transaction (a writer waiting on the store waits for one batch at most)."""


def _tok(data: str) -> str:
    """SQL for the tokens (prompt + completion) of one step's JSON."""
    return (f"(COALESCE(json_extract({data}, '$.prompt_tokens'), 0) + "
            f"COALESCE(json_extract({data}, '$.completion_tokens'), 0))")


def _sum(trajectory_id: str) -> str:
    """SQL for the tokens of every stored step of one trajectory (the slow way: each step's JSON is read)."""
    return f"(SELECT COALESCE(SUM({_tok('s.data')}), 0) FROM steps s WHERE s.trajectory_id = {trajectory_id})"


_SAME_STEP = "FROM steps WHERE trajectory_id = NEW.trajectory_id AND idx = NEW.idx"

DDL = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS trajectory_tokens (
    trajectory_id TEXT PRIMARY KEY, tokens INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS trajectory_tokens_new AFTER INSERT ON trajectories BEGIN
    INSERT OR REPLACE INTO trajectory_tokens VALUES (NEW.id, {_sum('NEW.id')});
END;
CREATE TRIGGER IF NOT EXISTS trajectory_tokens_gone AFTER DELETE ON trajectories BEGIN
    DELETE FROM trajectory_tokens WHERE trajectory_id = OLD.id;
END;
CREATE TRIGGER IF NOT EXISTS step_tokens_replaced BEFORE INSERT ON steps BEGIN
    UPDATE trajectory_tokens SET tokens = tokens - (SELECT {_tok('data')} {_SAME_STEP})
    WHERE trajectory_id = NEW.trajectory_id AND EXISTS (SELECT 1 {_SAME_STEP});
END;
CREATE TRIGGER IF NOT EXISTS step_tokens_added AFTER INSERT ON steps BEGIN
    UPDATE trajectory_tokens SET tokens = tokens + {_tok('NEW.data')} WHERE trajectory_id = NEW.trajectory_id;
END;
CREATE TRIGGER IF NOT EXISTS step_tokens_changed AFTER UPDATE ON steps BEGIN
    UPDATE trajectory_tokens SET tokens = tokens - {_tok('OLD.data')} WHERE trajectory_id = OLD.trajectory_id;
    UPDATE trajectory_tokens SET tokens = tokens + {_tok('NEW.data')} WHERE trajectory_id = NEW.trajectory_id;
END;
CREATE TRIGGER IF NOT EXISTS step_tokens_removed AFTER DELETE ON steps BEGIN
    UPDATE trajectory_tokens SET tokens = tokens - {_tok('OLD.data')} WHERE trajectory_id = OLD.trajectory_id;
END;
COMMIT;
"""
"""The table and its triggers, made in one transaction (never a table without the triggers that keep it
right). A step written with `INSERT OR REPLACE` first gives back the replaced step's tokens (`step_tokens_replaced`:
SQLite runs no delete trigger for a replaced row while `recursive_triggers` is off, its default, which the store
keeps); the store never writes steps with `INSERT OR IGNORE` or an upsert, which these triggers would miscount."""

_LAST_TRIGGER = "step_tokens_removed"


def has_table(db: sqlite3.Connection) -> bool:
    """The store has the totals table (it may not be filled in yet: see `is_filled`)."""
    return db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='trajectory_tokens'").fetchone() is not None


def is_filled(db: sqlite3.Connection) -> bool:
    """Every trajectory of the store has its total (set by `fill` when it finishes)."""
    return db.execute("SELECT 1 FROM meta WHERE key=? AND value='filled'", (META_KEY,)).fetchone() is not None


def ensure(db: sqlite3.Connection) -> None:
    """Make the table and its triggers where they are missing (a writer's open; autocommit connection)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND name=?", (_LAST_TRIGGER,)).fetchone() is None:
        db.executescript(DDL)


def fill(db: sqlite3.Connection, batch: int = BATCH) -> int:
    """Give every trajectory without a total its total (the sum of its stored steps), `batch` trajectories per
    transaction, then mark the store filled. Resumable: a kill keeps every finished batch. Returns how many were
    filled in."""
    if is_filled(db):
        return 0
    todo = db.execute("SELECT COUNT(*) FROM trajectories t WHERE NOT EXISTS "
                      "(SELECT 1 FROM trajectory_tokens k WHERE k.trajectory_id = t.id)").fetchone()[0]
    if todo:
        log.info("run store: filling in the token totals of %d trajectories (once)", todo)
    done, last, t0 = 0, -1, time.monotonic()
    while True:
        rows = db.execute("SELECT rowid FROM trajectories WHERE rowid > ? ORDER BY rowid LIMIT ?",
                          (last, batch)).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        cur = db.execute(
            f"INSERT OR IGNORE INTO trajectory_tokens SELECT t.id, {_sum('t.id')} FROM trajectories t "
            f"WHERE t.rowid IN ({','.join('?' * len(rows))}) AND NOT EXISTS "
            "(SELECT 1 FROM trajectory_tokens k WHERE k.trajectory_id = t.id)", [r[0] for r in rows])
        done += max(cur.rowcount, 0)
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, 'filled')", (META_KEY,))
    if todo:
        log.info("run store: token totals filled in (%d trajectories, %.1f s)", done, time.monotonic() - t0)
    return done


def sort_sql(db: sqlite3.Connection, alias: str = "t") -> str:
    """SQL for a trajectory's tokens in a query over `trajectories` as `alias`: its stored total; where the store has
    no totals yet (an older store a reader opened), or this trajectory none (a fill under way), the sum of its steps."""
    slow = _sum(f"{alias}.id")
    if not has_table(db):
        return slow
    return f"COALESCE((SELECT k.tokens FROM trajectory_tokens k WHERE k.trajectory_id = {alias}.id), {slow})"
