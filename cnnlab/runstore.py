"""The run store: one SQLite database of runs, their metrics and log lines, shared by the dashboard, the
CLI and workers. WAL mode and a busy timeout let many readers and writers share it; every write is one
`BEGIN IMMEDIATE` transaction, so writers queue instead of failing with 'database is locked'.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cnnlab.paths import data_dir

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "failed", "cancelled")  # what `resume` queues again
BUSY_TIMEOUT_MS = 30_000
QUEUE = "SELECT id FROM runs WHERE status = 'queued' ORDER BY COALESCE(queued_at, created_at)"  # oldest wait first

STOPPED_WORKER = "The worker stopped while the run was going"
STOPPED_COMMAND = "The `cnnlab train` process that ran it stopped (killed, or its terminal closed)"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    request_key TEXT UNIQUE,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    heartbeat_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    checkpoint TEXT,
    checkpoint_at REAL,
    queued_at REAL,
    earlier_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(id),
    kind TEXT NOT NULL,
    step INTEGER NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id, kind, step);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL REFERENCES runs(id),
    line TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs(run_id, at);
"""


@dataclass(frozen=True)
class Run:
    """One row of the runs table, with its JSON columns decoded; `result` is what the run last ended with (none
    while it is queued or running); `earlier_s` the time its earlier attempts ran, before it was resumed."""

    id: str
    config: dict
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    error: str | None
    result: dict | None
    checkpoint: str | None
    checkpoint_at: float | None
    earlier_s: float = 0.0

    @property
    def shown_status(self) -> str:
        """The status as a person should read it: 'cancelling' for a running run asked to stop, which it does at
        its next step; else the status."""
        return "cancelling" if self.status == "running" and self.cancel_requested else self.status

    @property
    def duration_s(self) -> float | None:
        """Seconds the run has run, over all its attempts (a resumed run's earlier ones too); None before any."""
        if self.started_at is None:
            return self.earlier_s or None
        return self.earlier_s + (self.finished_at or time.time()) - self.started_at


def _set_write_ahead_log(connection: sqlite3.Connection) -> None:
    """Switch the database to write-ahead logging (it stays so): readers never wait for the writer. The switch
    needs the database alone and does not wait on its own, so another process opening it at once is waited for."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


_READY: set[Path] = set()  # databases this process has created or upgraded


def default_path() -> Path:
    """`runs.sqlite3` in cnnlab's data directory."""
    return data_dir() / "runs.sqlite3"


class RunStore:
    """Access to the run database at `path`, created or upgraded on first use in a process; one connection per
    call."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path not in _READY or not self.path.exists():  # the pages make one every few seconds
            self._create_or_upgrade()
            _READY.add(self.path)

    def _create_or_upgrade(self) -> None:
        with self._connect() as connection:
            _set_write_ahead_log(connection)
            connection.executescript(SCHEMA)
        with self._write() as db:  # one process adds the columns; another opening it at once waits, then sees them
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if "queued_at" not in columns:  # a database from before resumes kept their creation time
                db.execute("ALTER TABLE runs ADD COLUMN queued_at REAL")
            if "earlier_s" not in columns:  # from before durations counted a resumed run's earlier attempts
                db.execute("ALTER TABLE runs ADD COLUMN earlier_s REAL NOT NULL DEFAULT 0")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.row_factory = sqlite3.Row
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def submit(self, config: dict, request_key: str | None = None) -> str:
        """Queue a run and return its id. Submitting again with the same `request_key` (one click on
        Launch) returns the first run's id instead of creating a second run."""
        run_id = uuid.uuid4().hex[:12]
        with self._write() as db:
            if request_key is not None:
                existing = db.execute("SELECT id FROM runs WHERE request_key = ?", (request_key,)).fetchone()
                if existing:
                    return existing["id"]
            now = time.time()
            db.execute("INSERT INTO runs (id, config, status, request_key, created_at, queued_at) "
                       "VALUES (?, ?, 'queued', ?, ?, ?)", (run_id, json.dumps(config), request_key, now, now))
        return run_id

    def start(self, config: dict, worker: str) -> str:
        """Record a run that `worker` starts at once, without queueing it (`cnnlab train`); returns its id."""
        run_id, now = uuid.uuid4().hex[:12], time.time()
        with self._write() as db:
            db.execute("INSERT INTO runs (id, config, status, created_at, started_at, worker, heartbeat_at) "
                       "VALUES (?, ?, 'running', ?, ?, ?, ?)", (run_id, json.dumps(config), now, now, worker, now))
        return run_id

    def delete(self, run_id: str, only: tuple[str, ...] | None = None) -> None:
        """Forget a run: its row, metrics and log lines. With `only`, a run in another status is refused (ValueError)
        in the same transaction, so a worker cannot take it meanwhile; KeyError for no such run."""
        with self._write() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"no run {run_id!r}")
            if only is not None and row["status"] not in only:
                raise ValueError(f"run {run_id} is {row['status']}: cancel it first, then delete it")
            for table, column in (("metrics", "run_id"), ("logs", "run_id"), ("runs", "id")):
                db.execute(f"DELETE FROM {table} WHERE {column} = ?", (run_id,))

    def claim_next(self, worker: str) -> Run | None:
        """Atomically move the oldest queued run to running for `worker`; None when the queue is empty."""
        now = time.time()
        with self._write() as db:
            row = db.execute(f"{QUEUE} LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE runs SET status = 'running', worker = ?, started_at = ?, heartbeat_at = ?, "
                       "finished_at = NULL, error = NULL WHERE id = ?", (worker, now, now, row["id"]))
        return self.get(row["id"])

    def heartbeat(self, run_id: str) -> None:
        """Record that the run's worker is alive."""
        with self._write() as db:
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time(), run_id))

    def add_metrics(self, run_id: str, kind: str, step: int, values: dict) -> None:
        """Append one row of metrics ('epoch' or 'step') and beat the heart."""
        now = time.time()
        with self._write() as db:
            db.execute("INSERT INTO metrics (run_id, kind, step, data, at) VALUES (?, ?, ?, ?, ?)",
                       (run_id, kind, step, json.dumps(values), now))
            db.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (now, run_id))

    def forget_metrics(self, run_id: str, kind: str, after_step: int) -> None:
        """Drop a run's metric rows of one kind past `after_step`: what an earlier attempt measured and a resume
        from that step does again."""
        with self._write() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ? AND kind = ? AND step > ?", (run_id, kind, after_step))

    def log(self, run_id: str, line: str) -> None:
        """Append a log line."""
        with self._write() as db:
            db.execute("INSERT INTO logs (run_id, line, at) VALUES (?, ?, ?)", (run_id, line, time.time()))

    def set_checkpoint(self, run_id: str, path: str, worker: str | None = None) -> None:
        """Record the run's latest checkpoint (what a resume starts from); with `worker`, only while that worker
        still runs it, as `finish`."""
        owned = " AND status = 'running' AND worker = ?" if worker is not None else ""
        with self._write() as db:
            db.execute(f"UPDATE runs SET checkpoint = ?, checkpoint_at = ? WHERE id = ?{owned}",
                       (path, time.time(), run_id, *([worker] if worker is not None else [])))

    def finish(self, run_id: str, status: str, result: dict | None = None, error: str | None = None,
               worker: str | None = None) -> bool:
        """Close a run as succeeded, failed or cancelled. With `worker`, only if that worker still runs it (a run
        marked interrupted and resumed elsewhere is not overwritten); returns whether the run was closed. Without
        `result` the run keeps the one it had, if any (a resumed run that fails again keeps its earlier result)."""
        if status not in FINISHED:
            raise ValueError(f"a run finishes as one of {sorted(FINISHED)}, not {status!r}")
        owned = " AND status = 'running' AND worker = ?" if worker is not None else ""
        with self._write() as db:
            changed = db.execute("UPDATE runs SET status = ?, result = COALESCE(?, result), error = ?, finished_at = ? "
                                 f"WHERE id = ?{owned}",
                                 (status, json.dumps(result) if result is not None else None, error, time.time(), run_id,
                                  *([worker] if worker is not None else []))).rowcount
        return changed == 1

    def request_cancel(self, run_id: str) -> str:
        """Cancel a queued run at once, or ask a running one to stop at its next step; returns its status."""
        with self._write() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"no run {run_id!r}")
            if row["status"] in ("queued", "interrupted"):
                db.execute("UPDATE runs SET status = 'cancelled', finished_at = ? WHERE id = ?", (time.time(), run_id))
                return "cancelled"
            if row["status"] == "running":
                db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return row["status"]

    def mark_interrupted(self, run_ids: list[str] | tuple[str, ...], why: str | None = None,
                         started_at: dict[str, float] | None = None) -> list[str]:
        """Mark those of `run_ids` that are still running as interrupted (their worker, or the `cnnlab train` that ran
        one never queued, is gone: `why`, by default which of the two stopped), naming the time of their last
        checkpoint; returns the ids that changed. With `started_at` (run id: the start time seen when the worker was
        found gone), a run resumed and taken by another worker since is left alone."""
        changed = []
        with self._write() as db:
            for run_id in run_ids:
                row = db.execute("SELECT status, started_at, heartbeat_at, checkpoint_at, queued_at FROM runs "
                                 "WHERE id = ?", (run_id,)).fetchone()
                if row is None or row["status"] != "running":
                    continue
                if started_at is not None and row["started_at"] != started_at.get(run_id):
                    continue
                at = time.strftime("%H:%M:%S", time.localtime(row["checkpoint_at"] or 0))
                saved = (f". Resume (`cnnlab resume {run_id}`) continues it from its last checkpoint, saved {at}"
                         if row["checkpoint_at"] else ". It saved no checkpoint: Resume starts it over")
                last_alive = row["heartbeat_at"] or row["started_at"]  # not when its end was noticed
                stopped = why or (STOPPED_COMMAND if row["queued_at"] is None else STOPPED_WORKER)
                db.execute("UPDATE runs SET status = 'interrupted', error = ?, finished_at = ? WHERE id = ?",
                           (stopped + saved, last_alive, run_id))
                changed.append(run_id)
        return changed

    def requeue(self, run_id: str) -> None:
        """Put an interrupted, failed or cancelled run back at the end of the queue (it resumes from its checkpoint);
        it keeps its creation time, and its duration goes on from the earlier attempts' when a worker takes it. Its
        earlier result is kept, unseen while the run is queued or running, for the case that it ends again without
        a new one."""
        with self._write() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"no run {run_id!r}")
            if row["status"] not in RESUMABLE:
                raise ValueError(f"run {run_id} {status_phrase(row['status'])}; only interrupted, failed or cancelled "
                                 "runs resume")
            db.execute("UPDATE runs SET status = 'queued', cancel_requested = 0, error = NULL, "
                       "earlier_s = earlier_s + COALESCE(finished_at - started_at, 0), "
                       "started_at = NULL, finished_at = NULL, queued_at = ? WHERE id = ?", (time.time(), run_id))

    def queue_position(self, run_id: str) -> tuple[int, int]:
        """Where a queued run waits: (its place, counting from 1, the number of runs queued)."""
        with self._connect() as db:
            queued = [r["id"] for r in db.execute(QUEUE)]
        return queued.index(run_id) + 1 if run_id in queued else 0, len(queued)

    def resolve(self, text: str) -> str:
        """The id of the run `text` names: its whole id, or the start of one only it has (4 characters at least,
        as git takes a commit's); else `text` as it is. ValueError when several runs' ids start so, or when fewer
        than 4 characters start any."""
        if not re.fullmatch(r"[0-9a-f]+", text):
            return text
        with self._connect() as db:
            ids = [row["id"] for row in db.execute("SELECT id FROM runs WHERE id LIKE ? ORDER BY created_at DESC",
                                                   (text + "%",))]
        if text in ids or not ids:
            return text
        if len(text) < 4:
            raise ValueError(f"{text} is too short to name a run: give at least 4 characters of its id")
        if len(ids) > 1:
            raise ValueError(f"{text} starts the ids of {len(ids)} runs ({', '.join(ids[:4])}"
                             f"{', ...' if len(ids) > 4 else ''}); give more of the id")
        return ids[0]

    def get(self, run_id: str) -> Run:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return _run(row)

    def runs(self, statuses: tuple[str, ...] = STATUSES) -> list[Run]:
        """Runs with any of `statuses`, newest first."""
        marks = ",".join("?" * len(statuses))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created_at DESC",
                              statuses).fetchall()
        return [_run(r) for r in rows]

    def metrics(self, run_id: str, kind: str = "epoch", since: float | None = None, timed: bool = False) -> list[dict]:
        """Metric rows of one kind, in step order, each with its 'step'; with `since`, only those written then or
        later; `timed` adds when each was written ('at', seconds since the epoch)."""
        with self._connect() as db:
            rows = db.execute("SELECT step, at, data FROM metrics WHERE run_id = ? AND kind = ? AND at >= ? "
                              "ORDER BY step, rowid", (run_id, kind, since or 0.0)).fetchall()
        return [{"step": r["step"], **json.loads(r["data"]), **({"at": r["at"]} if timed else {})} for r in rows]

    def last_metric(self, run_id: str, kind: str = "step", since: float | None = None) -> dict | None:
        """The metric row of one kind written last (the live progress of a run), or None; with `since` (a time),
        only a row written then or later (a resumed run's own, not its earlier attempt's)."""
        with self._connect() as db:
            row = db.execute("SELECT step, data FROM metrics WHERE run_id = ? AND kind = ? AND at >= ? "
                             "ORDER BY rowid DESC LIMIT 1", (run_id, kind, since or 0.0)).fetchone()
        return {"step": row["step"], **json.loads(row["data"])} if row else None

    def logs(self, run_id: str, limit: int = 200) -> list[str]:
        """The run's last `limit` log lines, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT line FROM logs WHERE run_id = ? ORDER BY rowid DESC LIMIT ?",
                              (run_id, limit)).fetchall()
        return [r["line"] for r in reversed(rows)]


def _run(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"], config=json.loads(row["config"]), status=row["status"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], worker=row["worker"],
        heartbeat_at=row["heartbeat_at"], cancel_requested=bool(row["cancel_requested"]), error=row["error"],
        result=json.loads(row["result"]) if row["result"] and row["status"] not in ACTIVE else None,
        checkpoint=row["checkpoint"],
        checkpoint_at=row["checkpoint_at"],
        earlier_s=row["earlier_s"],
    )



STATUS_PHRASES = {"queued": "is queued", "running": "is running", "succeeded": "succeeded", "failed": "failed",
                  "cancelled": "was cancelled", "interrupted": "was interrupted"}


def status_phrase(status: str) -> str:
    """A status as a sentence says it of a run: 'is running', 'was cancelled', 'succeeded'."""
    return STATUS_PHRASES.get(status, f"is {status}")
