"""SQLite result store: every result committed as it completes, found again by key.

A result row is immutable once written. A run links to the rows it measured or
reused, so the report of any run can be rebuilt from the store alone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Result", "Run", "Store", "StoreError"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  started REAL NOT NULL,
  finished REAL,
  status TEXT NOT NULL,            -- running, complete, interrupted, failed
  suite TEXT NOT NULL,
  backend TEXT NOT NULL,
  device TEXT NOT NULL,            -- JSON of the device's info
  settings TEXT NOT NULL,          -- JSON of the measurement settings
  baseline TEXT,                   -- variant id tagged [baseline]
  specs TEXT NOT NULL              -- JSON list of the suite's specs, in order
);
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY,
  key TEXT,                        -- NULL for unsupported pairs, which are never reused
  created REAL NOT NULL,
  variant TEXT NOT NULL,
  spec_key TEXT NOT NULL,
  status TEXT NOT NULL,            -- ok, wrong, failed, unsupported
  category TEXT NOT NULL,          -- '', compile, launch, runtime, wrong, unsupported
  message TEXT NOT NULL,
  log TEXT NOT NULL,
  gpu TEXT,                        -- JSON statistics, nanoseconds
  cpu TEXT,
  checks TEXT,                     -- JSON of metrics.Check
  detail TEXT NOT NULL             -- JSON: what the key was made of
);
CREATE INDEX IF NOT EXISTS results_by_key ON results(key);
CREATE TABLE IF NOT EXISTS run_results (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  result_id INTEGER NOT NULL REFERENCES results(id),
  spec_index INTEGER NOT NULL,
  reused INTEGER NOT NULL,
  PRIMARY KEY (run_id, result_id, spec_index)
);
"""


class StoreError(RuntimeError):
    """The store file cannot be opened or is not a metalbench store."""


@dataclass
class Result:
    """One variant on one spec, as measured (or judged unsupported)."""

    variant: str
    spec_key: str
    status: str
    category: str = ""
    message: str = ""
    log: str = ""
    gpu: dict | None = None
    cpu: dict | None = None
    checks: dict | None = None
    key: str | None = None
    detail: dict = field(default_factory=dict)
    # Filled in when read back from a run:
    id: int | None = None
    spec_index: int = -1
    reused: bool = False


@dataclass
class Run:
    id: int
    started: float
    finished: float | None
    status: str
    suite: str
    backend: str
    device: dict
    settings: dict
    baseline: str | None
    specs: list[dict]
    results: list[Result]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)  # explicit transactions only
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if version is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: store schema {version[0]}, this metalbench reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a usable metalbench store ({e})") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def begin_run(self, suite: str, backend: str, device: dict, settings: dict, baseline: str | None,
                  specs: list[dict]) -> int:
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (started, status, suite, backend, device, settings, baseline, specs) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                (time.time(), suite, backend, json.dumps(device), json.dumps(settings), baseline,
                 json.dumps(specs)),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (time.time(), status, run_id))

    def find(self, key: str) -> int | None:
        """The newest stored result with this key."""
        row = self._db.execute("SELECT id FROM results WHERE key=? ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        return None if row is None else int(row[0])

    def add(self, run_id: int, spec_index: int, result: Result) -> int:
        """Stores a new result and links it to the run, in one transaction."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO results (key, created, variant, spec_key, status, category, message, log, gpu, "
                "cpu, checks, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result.key, time.time(), result.variant, result.spec_key, result.status, result.category,
                 result.message, result.log, _dump(result.gpu), _dump(result.cpu), _dump(result.checks),
                 json.dumps(result.detail)),
            )
            result_id = int(cur.lastrowid)
            db.execute("INSERT INTO run_results VALUES (?, ?, ?, 0)", (run_id, result_id, spec_index))
        return result_id

    def reuse(self, run_id: int, spec_index: int, result_id: int) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO run_results VALUES (?, ?, ?, 1)", (run_id, result_id, spec_index))

    def latest_run(self) -> int | None:
        row = self._db.execute("SELECT max(id) FROM runs").fetchone()
        return None if row[0] is None else int(row[0])

    def runs(self, limit: int = 20) -> list[tuple[int, float, str, str, str, str]]:
        """(id, started, status, suite, backend, device name) of the newest runs."""
        rows = self._db.execute(
            "SELECT id, started, status, suite, backend, device FROM runs ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]).get("name", "?")) for r in rows]

    def load_run(self, run_id: int) -> Run:
        row = self._db.execute(
            "SELECT id, started, finished, status, suite, backend, device, settings, baseline, specs "
            "FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no run {run_id}")
        results = [
            Result(variant=r[0], spec_key=r[1], status=r[2], category=r[3], message=r[4], log=r[5],
                   gpu=_load(r[6]), cpu=_load(r[7]), checks=_load(r[8]), key=r[9], detail=json.loads(r[10]),
                   id=r[11], spec_index=r[12], reused=bool(r[13]))
            for r in self._db.execute(
                "SELECT r.variant, r.spec_key, r.status, r.category, r.message, r.log, r.gpu, r.cpu, r.checks, "
                "r.key, r.detail, r.id, rr.spec_index, rr.reused FROM run_results rr "
                "JOIN results r ON r.id = rr.result_id WHERE rr.run_id=? ORDER BY rr.spec_index, r.id",
                (run_id,),
            )
        ]
        return Run(id=row[0], started=row[1], finished=row[2], status=row[3], suite=row[4], backend=row[5],
                   device=json.loads(row[6]), settings=json.loads(row[7]), baseline=row[8],
                   specs=json.loads(row[9]), results=results)


def _dump(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


def _load(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def result_fields(result: Result) -> dict:
    """A result as plain data, for JSON output."""
    return asdict(result)
