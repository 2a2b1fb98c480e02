"""The run store: one SQLite database (WAL) per run directory holding every record of the run.

Every write is its own transaction, so a run killed with SIGKILL loses at most the write in flight and
never corrupts what is stored; another process (the TUI) can read while the run writes. Records are the
pydantic models of `records`, stored as JSON next to the few columns that queries need.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from collections.abc import MutableMapping
from typing import Any, Iterator

from pydantic import BaseModel

from evolve import store_tokens
from records import PolicyVersion, Reward, Step, TaskInstance, TestReport, TrainStep, Trajectory, TreeNode

log = logging.getLogger(__name__)

DB_NAME = "evolve.db"
SCHEMA_VERSION = 1
LOCK_NAME = "evolve.lock"
"""The file a run's process locks (`flock`) while it writes the run directory (see `run_lock`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    run_id TEXT NOT NULL, instance_id TEXT NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (run_id, instance_id));
CREATE TABLE IF NOT EXISTS trajectories (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, instance_id TEXT NOT NULL, status TEXT NOT NULL,
    parent_id TEXT, header TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL);
CREATE INDEX IF NOT EXISTS trajectories_by_instance ON trajectories (run_id, instance_id);
CREATE INDEX IF NOT EXISTS trajectories_by_run ON trajectories (run_id);
CREATE TABLE IF NOT EXISTS steps (
    trajectory_id TEXT NOT NULL, idx INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (trajectory_id, idx));
CREATE TABLE IF NOT EXISTS test_reports (
    trajectory_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, resolved INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rewards (
    trajectory_id TEXT NOT NULL, name TEXT NOT NULL, total REAL NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (trajectory_id, name));
CREATE TABLE IF NOT EXISTS policy_versions (
    id TEXT PRIMARY KEY, parent_id TEXT, data TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS train_steps (
    policy_version_id TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (policy_version_id, step));
CREATE TABLE IF NOT EXISTS tree_nodes (
    id TEXT PRIMARY KEY, parent_id TEXT, data TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, node_id TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL, resolved INTEGER, trajectory_id TEXT, data TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outcomes_by_node ON outcomes (run_id, node_id);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT NOT NULL, data TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (kind, key));
CREATE INDEX IF NOT EXISTS documents_by_run ON documents (run_id, kind);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL,
    data TEXT NOT NULL);
"""


class StoreError(RuntimeError):
    """The run directory is not a run store, is from a newer version of Evolve, or cannot be read or written."""


class StoreWriteError(StoreError):
    """A write to the run store failed for a reason outside Evolve (a full disk, a read-only or vanished
    directory, an I/O error). What was stored before it is intact; the same command resumes once it is fixed."""

    def __init__(self, path: Path, error: sqlite3.Error):
        self.error = error
        full = _errorname(error).startswith("SQLITE_FULL")
        super().__init__(f"cannot write the run store {path}: {error}; "
                         + ("free some disk space, then " if full else "fix that, then ")
                         + "run the same command to resume (what was stored before is kept)")


def _errorname(e: sqlite3.Error) -> str:
    return getattr(e, "sqlite_errorname", "") or ""


def _is_os_error(e: sqlite3.Error) -> bool:
    """The error is the file system's (cannot open, read-only, I/O, permissions), not the database's content."""
    name = _errorname(e)
    if name:
        return name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_FULL"))
    text = str(e)
    return any(t in text for t in ("unable to open", "readonly database", "disk I/O error", "disk is full"))


def check_run_dir(run_dir: Path, create: bool = True) -> None:
    """Create `run_dir` if needed and make sure this process can write there; `StoreError` says why not
    (a file in the way, a file above it, no permission, a read-only file system). With `create=False`
    only what can be told without creating anything is checked (a cheap early check)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise StoreError(f"{run_dir} is a file, not a run directory; give another --out directory")
    if not create:
        above = next((p for p in run_dir.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise StoreError(f"cannot create the run directory {run_dir}: {above} is a file")
        if above is not None and not run_dir.exists() and not os.access(above, os.W_OK | os.X_OK):
            raise StoreError(f"cannot create the run directory {run_dir}: {above} is not writable")
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise StoreError(f"{run_dir} is not writable; give another --out directory")


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """What the process that last took the run directory's lock wrote there (`pid`, `what`, `since`), or None."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def owner_alive(run_dir: str | Path) -> bool | None:
    """Whether a live process holds the run directory's lock (`LOCK_NAME`, taken by every command that writes a
    run): True or False, or None when no lock file is there (a command that takes none: unknown). A pure read:
    the kernel's table of `flock` locks (`/proc/locks`), else the pid the holder wrote into the file; it never
    takes the lock itself, so it can never keep a starting run out."""
    path = Path(run_dir) / LOCK_NAME
    try:
        st = path.stat()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            return any(line.split()[5:6] == [dev] or line.split()[6:7] == [dev]  # a blocked waiter has "->" first
                       for line in f if "FLOCK" in line)
    except OSError:
        pass
    try:
        pid = int(json.loads(path.read_text() or "{}")["pid"])
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunStore:
    """Read and write one run directory. Thread-safe; open read-only from other processes."""

    def __init__(self, run_dir: str | Path, readonly: bool = False):
        self.dir = Path(run_dir)
        self.path = self.dir / DB_NAME
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise StoreError(f"{self.dir} is not a run directory (no {DB_NAME}); "
                                 f"give the --out directory of an `evolve run`")
        else:
            check_run_dir(self.dir)
        self._lock = threading.RLock()
        try:
            self._db = self._connect_reader() if readonly else sqlite3.connect(
                self.path, check_same_thread=False, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise self._open_error(e) from None
        try:
            self._db.execute("PRAGMA busy_timeout=30000")
            if readonly:
                self._db.execute("PRAGMA query_only=1")
            else:
                self._refuse_foreign()
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                store_tokens.ensure(self._db)
                store_tokens.fill(self._db)  # once, for a store made before the totals (resumable)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise self._open_error(e) from None
        self._check_version()

    def _connect_reader(self) -> sqlite3.Connection:
        """A read-only connection that never writes to the run directory (`mode=ro`). Where SQLite cannot make
        the WAL index it needs beside the database (a read-only directory or file system, a full disk) and no
        write-ahead log holds data, the database file alone is the whole store: it is opened `immutable`."""
        base = f"file:{urllib.parse.quote(str(self.path.absolute()))}"
        db = sqlite3.connect(f"{base}?mode=ro", uri=True, check_same_thread=False, timeout=30, isolation_level=None)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the WAL and its index now
            return db
        except sqlite3.OperationalError as e:
            db.close()
            if not _is_os_error(e) or not self._cannot_write_here():
                raise
            wal = self.path.with_name(DB_NAME + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"cannot read {self.path} here ({e}): its directory cannot be written (read-only, "
                                 f"or a full disk) and its write-ahead log {wal.name} holds data SQLite can read "
                                 f"only with its index beside it; copy the run directory somewhere writable and "
                                 f"read the copy") from None
        return sqlite3.connect(f"{base}?immutable=1", uri=True, check_same_thread=False, timeout=30,
                               isolation_level=None)

    def _cannot_write_here(self) -> bool:
        """The run directory is read-only (a read-only file system, no permission) or its disk is full: only
        then may a reader take the database file alone (`immutable`), since no writer can be adding to it."""
        try:
            return not os.access(self.dir, os.W_OK) or os.statvfs(self.dir).f_bavail == 0
        except OSError:
            return True

    def _open_error(self, e: sqlite3.Error) -> StoreError:
        """What went wrong opening the store, said as it is: a full disk or an unwritable directory is not
        "not a run store"."""
        what = "read" if self.readonly else "open"
        if _errorname(e).startswith("SQLITE_FULL"):
            return StoreError(f"cannot {what} {self.path}: the disk is full ({e}); free some space and run the "
                              f"same command again")
        if _is_os_error(e):
            return StoreError(f"cannot {what} {self.path} ({e}): check that its directory exists, is readable"
                              + ("" if self.readonly else " and writable") + " and its disk is not full")
        return StoreError(f"{self.path} is not an Evolve run store ({e}); "
                          + ("give the --out directory of an `evolve run`" if self.readonly
                             else "give another --out directory"))

    def _refuse_foreign(self) -> None:
        """Never write Evolve's tables into someone else's database: a file with tables but no Evolve
        `meta` row is refused before anything is created."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return
        ours = "meta" in tables and self._db.execute(
            "SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
        if not ours:
            raise sqlite3.DatabaseError(f"it holds other tables ({', '.join(sorted(tables)[:3])})")

    def _check_version(self) -> None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise self._open_error(e) from None
        if row is None or int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {row and row[0]}, this Evolve reads "
                             f"up to {SCHEMA_VERSION}: upgrade Evolve")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- low level ------------------------------------------------------------------------------
    def _write(self, sql: str, args: tuple = ()) -> None:
        with self._lock, self._writing():
            self._db.execute(sql, args)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every write: a failed one leaves no transaction open, and an error of the disk or the
        directory (full, read-only, I/O) becomes a one-line `StoreWriteError` that says what to do."""
        try:
            yield
        except BaseException as e:
            if self._db.in_transaction:
                try:  # SQLite may have rolled back already (a full disk): the write's own error is the story
                    self._db.execute("ROLLBACK")
                except sqlite3.Error as again:
                    log.debug("rollback after a failed write of %s: %s", self.path, again)
            if isinstance(e, sqlite3.Error) and _is_os_error(e) and not self.readonly:  # (a reader never writes)
                raise StoreWriteError(self.path, e) from None
            raise

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- runs -----------------------------------------------------------------------------------
    def put_run(self, run_id: str, kind: str, config: dict[str, Any], status: str = "running") -> None:
        """Create the run or, when it exists (a resume), update its status and config."""
        now = time.time()
        self._write("INSERT INTO runs VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "config=excluded.config, status=excluded.status, updated_at=excluded.updated_at",
                    (run_id, kind, json.dumps(config), status, now, now))

    def set_run_status(self, run_id: str, status: str) -> None:
        self._write("UPDATE runs SET status=?, updated_at=? WHERE id=?", (status, time.time(), run_id))

    def runs(self) -> list[dict[str, Any]]:
        return [dict(id=r[0], kind=r[1], config=json.loads(r[2]), status=r[3], created_at=r[4],
                     updated_at=r[5]) for r in self._rows("SELECT * FROM runs ORDER BY created_at")]

    # --- instances ------------------------------------------------------------------------------
    def put_instance(self, run_id: str, instance: TaskInstance, status: str = "pending") -> None:
        """Record an instance of the run; an existing one keeps its status."""
        self._write("INSERT OR IGNORE INTO instances VALUES (?,?,?,?,?)",
                    (run_id, instance.instance_id, status, instance.model_dump_json(), time.time()))

    def set_instance_status(self, run_id: str, instance_id: str, status: str) -> None:
        self._write("UPDATE instances SET status=?, updated_at=? WHERE run_id=? AND instance_id=?",
                    (status, time.time(), run_id, instance_id))

    def instance_status(self, run_id: str) -> dict[str, str]:
        return dict(self._rows("SELECT instance_id, status FROM instances WHERE run_id=? ORDER BY rowid",
                               (run_id,)))

    def instances(self, run_id: str) -> list[TaskInstance]:
        return [TaskInstance.model_validate_json(r[0])
                for r in self._rows("SELECT data FROM instances WHERE run_id=? ORDER BY rowid", (run_id,))]

    # --- trajectories ---------------------------------------------------------------------------
    def put_trajectory(self, traj: Trajectory) -> None:
        """Insert or update a trajectory's header and every step it holds."""
        header = traj.model_dump_json(exclude={"steps"})
        with self._lock, self._writing():
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO trajectories (id, run_id, instance_id, status, parent_id, header, created_at, "
                "finished_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
                "status=excluded.status, header=excluded.header, finished_at=excluded.finished_at",
                (traj.id, traj.run_id, traj.instance_id, traj.status.value, traj.parent_id, header,
                 traj.created_at, traj.finished_at))
            self._db.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?)",
                                 [(traj.id, s.index, s.model_dump_json()) for s in traj.steps])
            self._db.execute("COMMIT")

    def append_step(self, trajectory_id: str, step: Step) -> None:
        """Store one step as soon as it is done (one transaction; the trajectory's token total moves with it, see
        `store_tokens`)."""
        self._write("INSERT OR REPLACE INTO steps VALUES (?,?,?)", (trajectory_id, step.index,
                                                                     step.model_dump_json()))

    def get_trajectory(self, trajectory_id: str) -> Trajectory:
        rows = self._rows("SELECT header FROM trajectories WHERE id=?", (trajectory_id,))
        if not rows:
            raise KeyError(f"no trajectory {trajectory_id!r} in {self.dir}")
        traj = Trajectory.model_validate_json(rows[0][0])
        traj.steps = [Step.model_validate_json(r[0]) for r in
                      self._rows("SELECT data FROM steps WHERE trajectory_id=? ORDER BY idx", (trajectory_id,))]
        return traj

    def trajectory_ids(self, run_id: str | None = None, instance_id: str | None = None,
                       status: str | None = None) -> list[str]:
        sql, args = "SELECT id FROM trajectories WHERE 1=1", []
        for col, val in (("run_id", run_id), ("instance_id", instance_id), ("status", status)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        return [r[0] for r in self._rows(sql + " ORDER BY created_at, rowid", tuple(args))]

    def trajectories(self, run_id: str | None = None, instance_id: str | None = None) -> Iterator[Trajectory]:
        for tid in self.trajectory_ids(run_id, instance_id):
            yield self.get_trajectory(tid)

    def trajectory_summaries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """One row per trajectory with its status, step count, and rewards: cheap, for dashboards."""
        sql = ("SELECT t.id, t.run_id, t.instance_id, t.status, t.parent_id, t.created_at, t.finished_at, "
               "(SELECT COUNT(*) FROM steps s WHERE s.trajectory_id=t.id), "
               "(SELECT resolved FROM test_reports r WHERE r.trajectory_id=t.id) FROM trajectories t")
        args: tuple = ()
        if run_id is not None:
            sql, args = sql + " WHERE t.run_id=?", (run_id,)
        out = []
        for r in self._rows(sql + " ORDER BY t.created_at, t.rowid", args):
            out.append(dict(id=r[0], run_id=r[1], instance_id=r[2], status=r[3], parent_id=r[4],
                            created_at=r[5], finished_at=r[6], steps=r[7],
                            resolved=None if r[8] is None else bool(r[8]),
                            rewards=self.rewards(r[0])))
        return out

    # --- grading and rewards --------------------------------------------------------------------
    def put_test_report(self, trajectory_id: str, report: TestReport) -> None:
        self._write("INSERT OR REPLACE INTO test_reports VALUES (?,?,?,?)",
                    (trajectory_id, report.instance_id, int(report.resolved), report.model_dump_json()))

    def test_report(self, trajectory_id: str) -> TestReport | None:
        rows = self._rows("SELECT data FROM test_reports WHERE trajectory_id=?", (trajectory_id,))
        return TestReport.model_validate_json(rows[0][0]) if rows else None

    def put_reward(self, trajectory_id: str, reward: Reward) -> None:
        """Store a reward; a non-finite total or part is refused (it would be stored as null and break
        every later read)."""
        if not math.isfinite(reward.total) or not all(math.isfinite(v) for v in reward.parts.values()):
            raise ValueError(f"refusing to store the non-finite reward {reward.name!r} "
                             f"(total {reward.total}) of trajectory {trajectory_id}")
        self._write("INSERT OR REPLACE INTO rewards VALUES (?,?,?,?)",
                    (trajectory_id, reward.name, reward.total, reward.model_dump_json()))

    def rewards(self, trajectory_id: str) -> dict[str, Reward]:
        return {r[0]: Reward.model_validate_json(r[1]) for r in
                self._rows("SELECT name, data FROM rewards WHERE trajectory_id=?", (trajectory_id,))}

    # --- evolution ------------------------------------------------------------------------------
    def put_policy_version(self, version: PolicyVersion) -> None:
        self._write("INSERT OR REPLACE INTO policy_versions VALUES (?,?,?,?)",
                    (version.id, version.parent_id, version.model_dump_json(), version.created_at))

    def policy_versions(self) -> list[PolicyVersion]:
        return [PolicyVersion.model_validate_json(r[0])
                for r in self._rows("SELECT data FROM policy_versions ORDER BY created_at")]

    def put_train_step(self, step: TrainStep) -> None:
        self._write("INSERT OR REPLACE INTO train_steps VALUES (?,?,?)",
                    (step.policy_version_id, step.step, step.model_dump_json()))

    def train_steps(self, policy_version_id: str) -> list[TrainStep]:
        return [TrainStep.model_validate_json(r[0]) for r in self._rows(
            "SELECT data FROM train_steps WHERE policy_version_id=? ORDER BY step", (policy_version_id,))]

    def put_tree_node(self, node: TreeNode) -> None:
        self._write("INSERT OR REPLACE INTO tree_nodes VALUES (?,?,?,?)",
                    (node.id, node.parent_id, node.model_dump_json(), node.created_at))

    def tree_nodes(self) -> list[TreeNode]:
        return [TreeNode.model_validate_json(r[0])
                for r in self._rows("SELECT data FROM tree_nodes ORDER BY created_at, rowid")]

    def tree(self, tree_id: str | None = None, kind: str | None = None) -> list[TreeNode]:
        """The nodes of one tree (or of every tree of a kind), oldest first."""
        return [n for n in self.tree_nodes()
                if (tree_id is None or n.tree_id == tree_id) and (kind is None or n.kind == kind)]

    # --- evaluation outcomes (HGM): immutable rows, every count is derived from them -------------
    def put_outcome(self, run_id: str, node_id: str, task_id: str, status: str, resolved: bool | None,
                    trajectory_id: str | None, started_at: float, finished_at: float, **data: Any) -> int:
        """Append one evaluation of `node_id` on `task_id`. `status` is `pass`, `fail`, `infra_error` or
        `timeout`; `resolved` is None when the agent was not judged (an infrastructure error). Returns its id."""
        with self._lock, self._writing():
            cur = self._db.execute("INSERT INTO outcomes (run_id, node_id, task_id, status, resolved, trajectory_id,"
                                   " data, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                   (run_id, node_id, task_id, status, None if resolved is None else int(resolved),
                                    trajectory_id, json.dumps(data), started_at, finished_at))
            return int(cur.lastrowid)

    def outcomes(self, run_id: str | None = None, node_id: str | None = None) -> list[dict[str, Any]]:
        """Outcome rows in the order they were stored."""
        sql, args = "SELECT id, run_id, node_id, task_id, status, resolved, trajectory_id, data, started_at, " \
                    "finished_at FROM outcomes WHERE 1=1", []
        for col, val in (("run_id", run_id), ("node_id", node_id)):
            if val is not None:
                sql += f" AND {col}=?"
                args.append(val)
        return [dict(id=r[0], run_id=r[1], node_id=r[2], task_id=r[3], status=r[4],
                     resolved=None if r[5] is None else bool(r[5]), trajectory_id=r[6], started_at=r[8],
                     finished_at=r[9], **json.loads(r[7])) for r in self._rows(sql + " ORDER BY id", tuple(args))]

    # --- documents: the evolution layer's other records (pools, operator outputs, pairs, splices) -
    def put_document(self, kind: str, key: str, data: dict[str, Any] | BaseModel, run_id: str = "") -> None:
        """Store (or replace) one JSON document under (`kind`, `key`), e.g. ("se-agent:summary", traj_id)."""
        text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
        self._write("INSERT OR REPLACE INTO documents VALUES (?,?,?,?,?)", (kind, key, run_id, text, time.time()))

    def document(self, kind: str, key: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT data FROM documents WHERE kind=? AND key=?", (kind, key))
        return json.loads(rows[0][0]) if rows else None

    def documents(self, kind: str, run_id: str | list[str] | None = None,
                  key_prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(key, document) pairs of one kind, oldest first; `key_prefix` narrows by key; `run_id` may be a list."""
        sql, args = "SELECT key, data FROM documents WHERE kind=? AND key LIKE ? ESCAPE '\\'", \
            [kind, key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"]
        if isinstance(run_id, (list, tuple)):
            sql += f" AND run_id IN ({','.join('?' * len(run_id))})"
            args += list(run_id)
        elif run_id is not None:
            sql += " AND run_id=?"
            args.append(run_id)
        return [(r[0], json.loads(r[1])) for r in self._rows(sql + " ORDER BY created_at, rowid", tuple(args))]

    def document_keys(self, kind: str, run_id: str | list[str] | None = None) -> list[tuple[str, float]]:
        """(key, stored at) of every document of one kind, oldest first (without reading the documents)."""
        sql, args = "SELECT key, created_at FROM documents WHERE kind=?", [kind]
        if run_id is not None:
            ids = [run_id] if isinstance(run_id, str) else list(run_id)
            sql += f" AND run_id IN ({','.join('?' * len(ids))})"
            args += ids
        return [(r[0], r[1]) for r in self._rows(sql + " ORDER BY created_at, rowid", tuple(args))]

    def document_kinds(self, run_id: str | list[str] | None = None) -> dict[str, int]:
        """How many documents of each kind are stored (for one run, or a run's family)."""
        sql, args = "SELECT kind, COUNT(*) FROM documents", []
        if run_id is not None:
            ids = [run_id] if isinstance(run_id, str) else list(run_id)
            sql += f" WHERE run_id IN ({','.join('?' * len(ids))})"
            args += ids
        return dict(self._rows(sql + " GROUP BY kind ORDER BY kind", tuple(args)))

    # --- requests from other processes (the TUI's stop button) -------------------------------------
    def request_stop(self, run_id: str, reason: str = "stop requested") -> None:
        """Ask the process running `run_id` to stop gracefully; it finishes what is in flight and can resume."""
        self._write("INSERT INTO requests (ts, run_id, kind, data) VALUES (?,?,?,?)",
                    (time.time(), run_id, "stop", json.dumps({"reason": reason})))

    def stop_requested(self, run_id: str, since: float = 0.0) -> bool:
        """True when a stop of `run_id` was requested after `since` (a run passes its own start time)."""
        return bool(self._rows("SELECT 1 FROM requests WHERE run_id=? AND kind='stop' AND ts>=? LIMIT 1",
                               (run_id, since)))

    # --- a key-value cache (judge replies by content hash) ---------------------------------------
    def cache(self) -> "StoreCache":
        return StoreCache(self)

    # --- events (the live log the TUI tails) ----------------------------------------------------
    def log_event(self, kind: str, **data: Any) -> None:
        self._write("INSERT INTO events (ts, kind, data) VALUES (?,?,?)", (time.time(), kind, json.dumps(data)))

    def events(self, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        return [dict(id=r[0], ts=r[1], kind=r[2], **json.loads(r[3])) for r in self._rows(
            "SELECT id, ts, kind, data FROM events WHERE id>? ORDER BY id LIMIT ?", (after_id, limit))]


    # --- cheap read-only queries for live monitors (the TUI): paged, one query per page, no N+1 ---------
    def data_version(self) -> int:
        """A number that changes whenever another connection commits: a free "anything new?" check."""
        return int(self._rows("PRAGMA data_version")[0][0])

    _SHOWN_STATUS = ("CASE WHEN t.status='error' AND json_extract(t.header, '$.error') LIKE 'interrupted%' "
                     "THEN 'interrupted' ELSE t.status END")
    """A trajectory's status as monitors show it: an episode cut by a stop (status `error`, error `interrupted
    ...`) is `interrupted`, not the agent's error."""

    def run_overview(self, run_id: str | list[str], recent: int = 20) -> dict[str, Any]:
        """Counts a dashboard needs, in a few aggregate queries, for one run (or the run ids of a run's family,
        `run_family`): instances and trajectories by status (`interrupted` apart from `error`), graded/resolved
        counts, the durations of the last `recent` completed episodes and the start times of the running ones
        (for an ETA: interrupted and infrastructure-failed episodes are not completed work), and the last
        activity time, new steps included."""
        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        marks = ",".join("?" * len(ids))
        inst = dict(self._rows(f"SELECT status, COUNT(*) FROM instances WHERE run_id IN ({marks}) GROUP BY status",
                               tuple(ids)))
        trajs = dict(self._rows(f"SELECT {self._SHOWN_STATUS} AS s, COUNT(*) FROM trajectories t "
                                f"WHERE t.run_id IN ({marks}) GROUP BY s", tuple(ids)))
        graded, resolved = self._rows(
            "SELECT COUNT(*), COALESCE(SUM(r.resolved), 0) FROM test_reports r JOIN trajectories t "
            f"ON t.id=r.trajectory_id WHERE t.run_id IN ({marks})", tuple(ids))[0]
        durations = [r[0] for r in self._rows(
            f"SELECT t.finished_at - t.created_at FROM trajectories t WHERE t.run_id IN ({marks}) "
            f"AND t.finished_at IS NOT NULL AND {self._SHOWN_STATUS} NOT IN ('running', 'interrupted', 'infra_error') "
            "ORDER BY t.finished_at DESC LIMIT ?", (*ids, recent))][::-1]
        running = [r[0] for r in self._rows(
            f"SELECT created_at FROM trajectories WHERE run_id IN ({marks}) AND status='running'", tuple(ids))]
        last = self._rows(
            f"SELECT MAX(x) FROM (SELECT MAX(updated_at) AS x FROM runs WHERE id IN ({marks}) UNION ALL "
            f"SELECT MAX(updated_at) FROM instances WHERE run_id IN ({marks}) UNION ALL "
            f"SELECT MAX(COALESCE(finished_at, created_at)) FROM trajectories WHERE run_id IN ({marks}) UNION ALL "
            "SELECT MAX(json_extract(s.data, '$.started_at') + json_extract(s.data, '$.policy_seconds') + "
            "json_extract(s.data, '$.tool_seconds')) FROM steps s JOIN trajectories t ON t.id=s.trajectory_id "
            f"WHERE t.run_id IN ({marks}) AND t.status='running')", tuple(ids) * 4)[0][0]
        run = self._rows(f"SELECT status, config FROM runs WHERE id=?", (ids[0],))
        return dict(instances=inst, trajectories=trajs, graded=graded, resolved=resolved, durations=durations,
                    running_since=running, last_update=last, status=run[0][0] if run else None,
                    workers=(json.loads(run[0][1]).get("workers") if run else None))

    def trajectory_costs(self, ids: list[str]) -> dict[str, tuple[int, int, float, float]]:
        """(prompt tokens, completion tokens, policy seconds, sandbox seconds) of each trajectory in `ids`, summed over
        its steps (sandbox seconds: the time its tools ran in the sandbox)."""
        out: dict[str, tuple[int, int, float, float]] = {}
        for k in range(0, len(ids), 500):
            chunk = ids[k:k + 500]
            for tid, p, c, ps, ts in self._rows(
                    "SELECT trajectory_id, SUM(COALESCE(json_extract(data, '$.prompt_tokens'), 0)), "
                    "SUM(COALESCE(json_extract(data, '$.completion_tokens'), 0)), "
                    "SUM(COALESCE(json_extract(data, '$.policy_seconds'), 0)), "
                    "SUM(COALESCE(json_extract(data, '$.tool_seconds'), 0)) FROM steps "
                    f"WHERE trajectory_id IN ({','.join('?' * len(chunk))}) GROUP BY trajectory_id", tuple(chunk)):
                out[tid] = (int(p or 0), int(c or 0), float(ps or 0.0), float(ts or 0.0))
        return out

    def finished_ids(self, run_ids: list[str]) -> list[str]:
        """Ids of the run's trajectories that are no longer running (their costs no longer change)."""
        return [r[0] for r in self._rows(f"SELECT id FROM trajectories WHERE run_id IN ({','.join('?' * len(run_ids))}) "
                                         "AND status != 'running'", tuple(run_ids))]

    def running_ids(self, run_ids: list[str]) -> list[str]:
        return [r[0] for r in self._rows(f"SELECT id FROM trajectories WHERE run_id IN ({','.join('?' * len(run_ids))}) "
                                         "AND status = 'running'", tuple(run_ids))]

    def recent_completion_tokens(self, run_ids: list[str], since: float) -> int:
        """Completion tokens of the steps of the run's trajectories that started after `since` (for tokens/s)."""
        return int(self._rows(
            "SELECT COALESCE(SUM(json_extract(s.data, '$.completion_tokens')), 0) FROM steps s JOIN trajectories t "
            f"ON t.id=s.trajectory_id WHERE t.run_id IN ({','.join('?' * len(run_ids))}) "
            "AND (t.status='running' OR t.finished_at >= ?) AND json_extract(s.data, '$.started_at') >= ?",
            (*run_ids, since, since))[0][0])

    def run_family(self, run_id: str) -> list[str]:
        """`run_id` and the run ids its command stored trajectories under (`RUN-it1`, `RUN-eval0`, ...: Agent-R's
        iterations and evaluations), except those that are runs of their own in this store."""
        own = {r[0] for r in self._rows("SELECT id FROM runs")}
        like = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"
        found = [r[0] for r in self._rows("SELECT DISTINCT run_id FROM trajectories WHERE run_id LIKE ? ESCAPE '\\'",
                                          (like,))]
        return [run_id] + sorted(r for r in found if r not in own)

    PAGE_SORTS = {
        "instance": "t.instance_id", "status": _SHOWN_STATUS, "time": "COALESCE(t.finished_at, 1e18) - t.created_at",
        "res": "(SELECT resolved FROM test_reports r WHERE r.trajectory_id=t.id)",
        "steps": "(SELECT COUNT(*) FROM steps s WHERE s.trajectory_id=t.id)",
        "tokens": None,  # the stored totals (`store_tokens.sort_sql`): summing every step's JSON took seconds
        "reward": "(SELECT w.total FROM rewards w WHERE w.trajectory_id=t.id ORDER BY w.name != 'combined', w.name "
                  "LIMIT 1)",
        "run": "t.run_id", "started": "t.created_at"}
    """Orders `trajectory_page` can sort by (a column of the TUI's trajectory table)."""

    def trajectory_page(self, run_id: str | list[str] | None = None, *, parent_id: str | None = None,
                        search: str = "", status: str | None = None, sort: str | None = None, descending: bool = False,
                        offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """(total, rows): one page of trajectories, in the order they were stored unless `sort` names one of
        `PAGE_SORTS`; each row with its step count, tokens, time, resolution, rewards (`{name: {"total", "parts"}}`),
        its error and `shown` (the status as monitors show it: `interrupted` apart). `run_id` may be a list (a run's
        family); `search` matches the instance id or trajectory id; `status` keeps one shown status."""
        where, args = " WHERE 1=1", []
        if isinstance(run_id, (list, tuple)):
            where += f" AND t.run_id IN ({','.join('?' * len(run_id))})"
            args += list(run_id)
        elif run_id is not None:
            where += " AND t.run_id=?"
            args.append(run_id)
        if parent_id is not None:
            where += " AND t.parent_id=?"
            args.append(parent_id)
        if search:
            where += " AND (t.instance_id LIKE ? OR t.id LIKE ?)"
            args += [f"%{search}%"] * 2
        if status:
            where += f" AND {self._SHOWN_STATUS}=?"
            args.append(status)
        total = self._rows("SELECT COUNT(*) FROM trajectories t" + where, tuple(args))[0][0]
        order = "t.rowid"
        if sort:
            if sort not in self.PAGE_SORTS:
                raise ValueError(f"cannot sort trajectories by {sort!r}: one of {', '.join(self.PAGE_SORTS)}")
            with self._lock:
                by = self.PAGE_SORTS[sort] or store_tokens.sort_sql(self._db)
            order = f"{by} {'DESC' if descending else 'ASC'}, t.rowid"
        rows = self._rows(
            "SELECT t.id, t.run_id, t.instance_id, t.status, t.parent_id, t.created_at, t.finished_at, "
            "(SELECT resolved FROM test_reports r WHERE r.trajectory_id=t.id), json_extract(t.header, '$.error'), "
            f"{self._SHOWN_STATUS} FROM trajectories t" + where + f" ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, limit, offset))
        out = {r[0]: dict(id=r[0], run_id=r[1], instance_id=r[2], status=r[3], parent_id=r[4], created_at=r[5],
                          finished_at=r[6], resolved=None if r[7] is None else bool(r[7]), error=r[8], shown=r[9],
                          steps=0, tokens=0, rewards={}) for r in rows}
        if out:
            marks = ",".join("?" * len(out))
            for tid, n, tok in self._rows(
                    "SELECT trajectory_id, COUNT(*), SUM(COALESCE(json_extract(data, '$.prompt_tokens'), 0) + "
                    f"COALESCE(json_extract(data, '$.completion_tokens'), 0)) FROM steps WHERE trajectory_id IN ({marks}) "
                    "GROUP BY trajectory_id", tuple(out)):
                out[tid].update(steps=n, tokens=int(tok or 0))
            for tid, name, total_, data in self._rows(
                    f"SELECT trajectory_id, name, total, data FROM rewards WHERE trajectory_id IN ({marks})", tuple(out)):
                out[tid]["rewards"][name] = dict(total=total_, parts=json.loads(data).get("parts", {}))
        return total, list(out.values())

    def step_totals(self, run_id: str | None = None, since: float = 0.0) -> dict[str, float]:
        """Sums over the steps of the trajectories of `run_id` (every run when None) created at or after `since`,
        in one query: `trajectories`, `tokens` (prompt + completion), `policy_seconds`, `tool_seconds`."""
        where, args = " WHERE t.created_at >= ?", [since]
        if run_id is not None:
            where += " AND t.run_id = ?"
            args.append(run_id)
        n = self._rows("SELECT COUNT(*) FROM trajectories t" + where, tuple(args))[0][0]
        tok, pol, tool = self._rows(
            "SELECT COALESCE(SUM(COALESCE(json_extract(s.data, '$.prompt_tokens'), 0) + "
            "COALESCE(json_extract(s.data, '$.completion_tokens'), 0)), 0), "
            "COALESCE(SUM(COALESCE(json_extract(s.data, '$.policy_seconds'), 0)), 0), "
            "COALESCE(SUM(COALESCE(json_extract(s.data, '$.tool_seconds'), 0)), 0) "
            "FROM steps s JOIN trajectories t ON t.id = s.trajectory_id" + where, tuple(args))[0]
        return {"trajectories": float(n), "tokens": float(tok), "policy_seconds": float(pol),
                "tool_seconds": float(tool)}

    def reward_totals(self, run_id: str | list[str]) -> dict[str, list[float]]:
        """Every stored reward total of the run's trajectories (or its family's), by reward name (for a histogram)."""
        ids = [run_id] if isinstance(run_id, str) else list(run_id)
        out: dict[str, list[float]] = {}
        for name, total in self._rows("SELECT r.name, r.total FROM rewards r JOIN trajectories t ON "
                                      f"t.id=r.trajectory_id WHERE t.run_id IN ({','.join('?' * len(ids))})",
                                      tuple(ids)):
            out.setdefault(name, []).append(total)
        return out

    def last_event_id(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    def train_step_count(self, policy_version_id: str) -> int:
        return int(self._rows("SELECT COUNT(*) FROM train_steps WHERE policy_version_id=?", (policy_version_id,))[0][0])


class StoreCache(MutableMapping[str, str]):
    """The store's `cache` table as a mapping, so a judge never judges the same content twice, even
    across a resumed run."""

    def __init__(self, store: RunStore):
        self.store = store

    def __getitem__(self, key: str) -> str:
        rows = self.store._rows("SELECT value FROM cache WHERE key=?", (key,))
        if not rows:
            raise KeyError(key)
        return rows[0][0]

    def __setitem__(self, key: str, value: str) -> None:
        self.store._write("INSERT OR REPLACE INTO cache VALUES (?,?)", (key, value))

    def __delitem__(self, key: str) -> None:
        self.store._write("DELETE FROM cache WHERE key=?", (key,))

    def __iter__(self) -> Iterator[str]:
        return iter([r[0] for r in self.store._rows("SELECT key FROM cache")])

    def __len__(self) -> int:
        return self.store._rows("SELECT COUNT(*) FROM cache")[0][0]
