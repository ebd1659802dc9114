"""SQLite result store: every result committed as it completes, found again by key.

A result row is immutable once written. A run links to the rows it measured or
reused, so the report of any run can be rebuilt from the store alone. Per-launch
samples are kept beside the results (table `samples`), so that two runs can later
be compared sample by sample.

Schema versions: 1 had no batch clock, no samples and no owner of a run; 2 adds
them; 3 adds `peaks`, each device's peak memory bandwidth where no API gives it
(measured once by peak.py); 4 adds `caches`, each device's last-level cache as
peak.py measured it (what cold mode sizes its copies by), with the curve behind it; 5
stamps both with the version of the probe that measured them (peak.method()).
An older store is upgraded in place when it is opened for writing, and read as it
is when opened read-only.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from .errors import InputError
from .results import Result, Run

__all__ = ["MissingRun", "Store", "StoreError"]

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY,
  started REAL NOT NULL,
  finished REAL,
  status TEXT NOT NULL,            -- running, complete, interrupted, abandoned
  suite TEXT NOT NULL,
  backend TEXT NOT NULL,
  device TEXT NOT NULL,            -- JSON of the device's info
  settings TEXT NOT NULL,          -- JSON of the measurement settings
  baseline TEXT,                   -- the variant ids tagged [baseline], ', '-separated (a spec's own is in specs)
  specs TEXT NOT NULL,             -- JSON list of the suite's specs, in order, each with its baseline
  host TEXT,                       -- where the run's process ran (v2)
  pid INTEGER                      -- and its process id, to tell a live run from a killed one (v2)
);
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY,
  key TEXT,                        -- NULL for pairs a manifest rules out (never reused)
  created REAL NOT NULL,
  variant TEXT NOT NULL,
  spec_key TEXT NOT NULL,
  status TEXT NOT NULL,            -- ok, wrong, failed, timeout, crashed, raced, unsupported
  category TEXT NOT NULL,          -- '', compile, launch, runtime, wrong, timeout, crashed, raced, unsupported
  message TEXT NOT NULL,
  log TEXT NOT NULL,
  gpu TEXT,                        -- JSON statistics of each clock, nanoseconds per launch
  cpu TEXT,
  checks TEXT,                     -- JSON of metrics.Check
  detail TEXT NOT NULL,            -- JSON: what the key was made of
  batch TEXT,                      -- (v2)
  measure TEXT                     -- JSON: batch size, copies, slots, clock range, mode (v2)
);
CREATE INDEX IF NOT EXISTS results_by_key ON results(key);
CREATE TABLE IF NOT EXISTS run_results (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  result_id INTEGER NOT NULL REFERENCES results(id),
  spec_index INTEGER NOT NULL,
  reused INTEGER NOT NULL,
  PRIMARY KEY (run_id, result_id, spec_index)
);
CREATE TABLE IF NOT EXISTS samples (
  result_id INTEGER NOT NULL REFERENCES results(id),
  clock TEXT NOT NULL,             -- gpu, batch or cpu
  ns BLOB NOT NULL,                -- little-endian uint64 nanoseconds per launch, in the order taken
  PRIMARY KEY (result_id, clock)
);
CREATE TABLE IF NOT EXISTS peaks (   -- (v3)
  device_key TEXT PRIMARY KEY,     -- roofline.device_key(): backend, vendor, name, driver
  bytes_per_s REAL NOT NULL,
  source TEXT NOT NULL,            -- how it was had, in words ("measured: ...")
  measured_at REAL NOT NULL,
  method TEXT                      -- (v5) peak.method() of the probe that measured it
);
CREATE TABLE IF NOT EXISTS caches (  -- (v4)
  device_key TEXT PRIMARY KEY,     -- roofline.device_key()
  bytes INTEGER NOT NULL,          -- the last-level cache cold mode sizes its copies by
  source TEXT NOT NULL,            -- how it was had ("measured: ..." or the driver's, and why)
  curve TEXT NOT NULL,             -- JSON [[footprint bytes, read bytes per second], ...] it came from
  measured_at REAL NOT NULL,
  method TEXT                      -- (v5) peak.method() of the probe that measured it
);
"""

# Columns later versions added to tables that earlier ones already had.
_ADDED = (("runs", "host", "TEXT"), ("runs", "pid", "INTEGER"), ("results", "batch", "TEXT"),
          ("results", "measure", "TEXT"), ("peaks", "method", "TEXT"), ("caches", "method", "TEXT"))


class StoreError(RuntimeError):
    """The store cannot be opened, read or written; the message names the file and what to do."""


class MissingRun(InputError, LookupError):
    """The run, or the store, asked for does not exist."""


def _what_to_do(error: sqlite3.Error) -> str:
    text = str(error).lower()
    if "full" in text:
        return "the disk is full; free some space, then run again (results stored so far are kept)"
    if "readonly" in text or "read-only" in text:
        return "the store is read-only; give --db a writable path (METALBENCH_DB), or use `metalbench report`"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return ("the file is damaged; move it aside and run again to start a new store "
                "(sqlite3's .recover may save its results)")
    if "locked" in text or "busy" in text:
        return "another process holds it locked; wait for it, or give --db another store"
    return "check that it is a metalbench store and that its folder is writable"


class Store:
    """A result store. `readonly` opens an existing store without ever writing to it."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                self._db = self._open_readonly()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)  # explicit transactions
                self._db.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL keeps every committed result through a crash or a
                # kill of this process (only a power loss may cost the last few), and
                # saves an fsync per result: thousands of them in a sweep.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot use this store ({e}): {_what_to_do(e)}") from None
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the store's folder ({e.strerror})") from None

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise MissingRun(f"{self.path}: no store here (run `metalbench run` first, or give --db)")
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # A store on read-only media whose write-ahead log files cannot be created:
            # read it as it is on disk.
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _version(self, value: object) -> int:
        try:
            return int(str(value))
        except ValueError:
            raise StoreError(f"{self.path}: damaged: its schema version is {value!r}, not a number; move it aside "
                             "and run again to start a new store") from None

    def _check_schema(self) -> None:
        if self.readonly:
            row = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
            if row is None or not 1 <= self._version(row[0]) <= SCHEMA_VERSION:
                raise StoreError(f"{self.path}: store schema {row[0] if row else '?'}, this metalbench reads "
                                 f"1 to {SCHEMA_VERSION}")
            self.version = int(row[0])
            return
        found = self._db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        version = self._db.execute("SELECT value FROM meta WHERE name='schema'").fetchone() if found else None
        if version is not None and self._version(version[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {version[0]} is newer than this metalbench's "
                             f"({SCHEMA_VERSION}); upgrade metalbench or give --db another store")
        # Every statement is IF NOT EXISTS: creates what a new (or older) store lacks.
        self._db.executescript(_SCHEMA)
        with self._transaction() as db:
            for table, column, kind in _ADDED:
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        self.version = SCHEMA_VERSION

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as e:
            # SQLite has already rolled back after some errors (a full disk among them).
            if self._db.in_transaction:
                with suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot write ({e}): {_what_to_do(e)}") from None
            raise

    def begin_run(self, suite: str, backend: str, device: dict, settings: dict, baseline: str | None,
                  specs: list[dict]) -> int:
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO runs (started, status, suite, backend, device, settings, baseline, specs, host, pid) "
                "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), suite, backend, json.dumps(device), json.dumps(settings), baseline,
                 json.dumps(specs), socket.gethostname(), os.getpid()),
            )
            return int(cur.lastrowid)

    def plan_run(self, run_id: int, pairs: dict[int, int], to_measure: dict[int, int]) -> None:
        """Records in each of the run's specs the pairs it reports (`pairs`: measured, reused or
        failed before running) and how many of them it set out to measure (`to_measure`), by
        spec index: a report of an interrupted run tells from them a spec it never reached
        from one it finished."""
        with self._transaction() as db:
            row = db.execute("SELECT specs FROM runs WHERE id=?", (run_id,)).fetchone()
            specs = json.loads(row[0])
            for index, spec in enumerate(specs):
                spec["pairs"], spec["to_measure"] = int(pairs.get(index, 0)), int(to_measure.get(index, 0))
            db.execute("UPDATE runs SET specs=? WHERE id=?", (json.dumps(specs), run_id))

    def finish_run(self, run_id: int, status: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE runs SET finished=?, status=? WHERE id=?", (time.time(), status, run_id))

    def abandon_dead_runs(self) -> list[int]:
        """Marks `abandoned` every run still `running` whose process is gone (killed, or
        crashed), as far as this host can tell, and returns their ids."""
        host = socket.gethostname()
        rows = self._db.execute("SELECT id, host, pid FROM runs WHERE status='running'").fetchall()
        dead = [run_id for run_id, run_host, pid in rows if _dead(run_host, pid, host)]
        if dead:
            with self._transaction() as db:
                db.executemany("UPDATE runs SET status='abandoned' WHERE id=? AND status='running'",
                               [(i,) for i in dead])
        return dead

    def alive(self, run_id: int) -> bool:
        """Whether the process of a `running` run may still be at work (as far as this host can tell)."""
        row = self._db.execute("SELECT host, pid FROM runs WHERE id=?", (run_id,)).fetchone()
        return row is not None and not _dead(row[0], row[1], socket.gethostname())

    def find(self, key: str) -> int | None:
        """The newest stored result with this key."""
        row = self._db.execute("SELECT id FROM results WHERE key=? ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        return None if row is None else int(row[0])

    def add(self, run_id: int, spec_index: int, result: Result) -> int:
        """Stores a new result, its samples, and its link to the run, in one transaction."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO results (key, created, variant, spec_key, status, category, message, log, gpu, "
                "cpu, checks, detail, batch, measure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result.key, time.time(), result.variant, result.spec_key, result.status, result.category,
                 result.message, result.log, _dump(result.gpu), _dump(result.cpu), _dump(result.checks),
                 json.dumps(result.detail), _dump(result.batch), _dump(result.measure)),
            )
            result_id = int(cur.lastrowid)
            db.executemany("INSERT INTO samples VALUES (?, ?, ?)",
                           [(result_id, clock, np.asarray(ns, dtype="<u8").tobytes())
                            for clock, ns in result.samples.items()])
            db.execute("INSERT INTO run_results VALUES (?, ?, ?, 0)", (run_id, result_id, spec_index))
        return result_id

    def result(self, result_id: int) -> Result:
        """One stored result, outside any run."""
        r = self._db.execute("SELECT variant, spec_key, status, category, message, gpu, cpu, batch, key FROM results "
                             "WHERE id=?", (result_id,)).fetchone()
        if r is None:
            raise MissingRun(f"{self.path}: no result {result_id}")
        try:
            return Result(variant=_text(r[0], "variant"), spec_key=_text(r[1], "spec_key"), status=r[2],
                          category=r[3], message=str(r[4]), gpu=_load(r[5], "gpu"), cpu=_load(r[6], "cpu"),
                          batch=_load(r[7], "batch"), key=r[8], id=result_id)
        except (ValueError, TypeError) as e:
            raise StoreError(f"{self.path}: damaged: result {result_id}: {e}; run with --force, or move the store "
                             "aside (sqlite3's .recover may save the rest)") from None

    def reuse(self, run_id: int, spec_index: int, result_id: int) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO run_results VALUES (?, ?, ?, 1)", (run_id, result_id, spec_index))

    def samples(self, result_id: int) -> dict[str, np.ndarray]:
        """The per-launch samples stored with a result, by clock (none for version 1 results)."""
        if self.version < 2:
            return {}
        rows = self._db.execute("SELECT clock, ns FROM samples WHERE result_id=?", (result_id,)).fetchall()
        return {clock: np.frombuffer(blob, dtype="<u8").astype(np.uint64) for clock, blob in rows}

    def peak(self, device_key: str, method: str | None = None) -> tuple[float, str] | None:
        """The stored peak bandwidth of a device (bytes per second, and how it was had), or
        None; with `method`, None too where another version of the probe measured it."""
        if self.version < 3:
            return None
        row = self._db.execute("SELECT bytes_per_s, source, " + self._method_column() +
                               " FROM peaks WHERE device_key=?", (device_key,)).fetchone()
        if row is None or (method is not None and row[2] != method):
            return None
        return float(row[0]), str(row[1])

    def peaks(self) -> dict[str, tuple[float, str]]:
        """Every stored peak bandwidth, by device key (bytes per second, and how it was had)."""
        if self.version < 3:
            return {}
        return {str(k): (float(b), str(src)) for k, b, src in
                self._db.execute("SELECT device_key, bytes_per_s, source FROM peaks").fetchall()}

    def put_peak(self, device_key: str, bytes_per_s: float, source: str, method: str | None = None) -> None:
        """Stores (or replaces) a device's peak bandwidth, as the probe of version `method` measured it."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO peaks (device_key, bytes_per_s, source, measured_at, method) "
                       "VALUES (?, ?, ?, ?, ?)", (device_key, float(bytes_per_s), source, time.time(), method))

    def cache(self, device_key: str, method: str | None = None) -> tuple[int, str] | None:
        """The stored last-level cache of a device (bytes, and how it was had), or None; with
        `method`, None too where another version of the probe measured it."""
        if self.version < 4:
            return None
        row = self._db.execute("SELECT bytes, source, " + self._method_column() +
                               " FROM caches WHERE device_key=?", (device_key,)).fetchone()
        if row is None or (method is not None and row[2] != method):
            return None
        return int(row[0]), str(row[1])

    def put_cache(self, device_key: str, nbytes: int, source: str, curve: list[tuple[int, float]],
                  method: str | None = None) -> None:
        """Stores (or replaces) a device's last-level cache and the bandwidth curve it was read
        from, as the probe of version `method` measured them."""
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO caches (device_key, bytes, source, curve, measured_at, method) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (device_key, int(nbytes), source, json.dumps([[int(f), float(b)] for f, b in curve]),
                        time.time(), method))

    def _method_column(self) -> str:
        # A store read as it is (read-only, older than 5) has no stamp: no version matches it.
        return "method" if self.version >= 5 else "NULL"

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
        if not 0 < run_id < 2**63:  # SQLite's integers: a larger id is no run, not an OverflowError
            raise MissingRun(f"{self.path}: no run {run_id}")
        try:
            return self._load_run(run_id)
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read run {run_id} ({e}): {_what_to_do(e)}") from None

    def _load_run(self, run_id: int) -> Run:
        row = self._db.execute(
            "SELECT id, started, finished, status, suite, backend, device, settings, baseline, specs "
            "FROM runs WHERE id=?", (run_id,)
        ).fetchone()
        if row is None:
            raise MissingRun(f"{self.path}: no run {run_id}")
        v2 = self.version >= 2
        extra = ", r.batch, r.measure" if v2 else ""
        results = []
        for r in self._db.execute(
                "SELECT r.variant, r.spec_key, r.status, r.category, r.message, r.log, r.gpu, r.cpu, r.checks, "
                f"r.key, r.detail, r.id, rr.spec_index, rr.reused{extra} FROM run_results rr "
                "JOIN results r ON r.id = rr.result_id WHERE rr.run_id=? ORDER BY rr.spec_index, r.id",
                (run_id,)):
            where = f"run {run_id}: result {r[11]}"
            try:
                results.append(Result(
                    variant=_text(r[0], "variant"), spec_key=_text(r[1], "spec_key"), status=r[2], category=r[3],
                    message=str(r[4]), log=str(r[5]), gpu=_load(r[6], "gpu"), cpu=_load(r[7], "cpu"),
                    checks=_load(r[8], "checks"), key=r[9], detail=_load(r[10], "detail") or {}, id=r[11],
                    spec_index=int(r[12]), reused=bool(r[13]), batch=_load(r[14], "batch") if v2 else None,
                    measure=_load(r[15], "measure") if v2 else None))
            except (ValueError, TypeError) as e:
                raise StoreError(f"{self.path}: damaged: {where}: {e}; `metalbench run --db` another store, or "
                                 "move this one aside (sqlite3's .recover may save the rest)") from None
        try:
            return Run(id=row[0], started=row[1], finished=row[2], status=_text(row[3], "status"),
                       suite=_text(row[4], "suite"), backend=_text(row[5], "backend"),
                       device=_load(row[6], "device") or {}, settings=_load(row[7], "settings") or {},
                       baseline=row[8], specs=_specs(row[9]), results=results)
        except (ValueError, TypeError) as e:
            raise StoreError(f"{self.path}: damaged: run {run_id}: {e}; move the store aside and run again") from None


def _dead(run_host: str | None, pid: int | None, host: str) -> bool:
    """Whether the process of a `running` run is known to be gone: one on this host
    that no longer exists. A version 1 run records no process; a run of another
    host cannot be checked from here, so it is left alone."""
    if run_host is None or pid is None:
        return True
    if run_host != host:
        return False
    if pid == os.getpid():  # this process has begun no run yet: an earlier one's pid, reused
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _dump(value: dict | None) -> str | None:
    return None if value is None else json.dumps(value)


def _load(text: str | None, column: str = "") -> dict | None:
    """A JSON object column (None stays None); ValueError naming the column when it is not one."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise ValueError(f"column {column} is not JSON ({str(text)[:40]!r})") from None
    if not isinstance(value, dict):
        raise ValueError(f"column {column} is {type(value).__name__} JSON, not an object")
    return value


def _text(value: object, column: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"column {column} is {value!r}, not text")
    return value


def _specs(text: str) -> list[dict]:
    try:
        specs = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise ValueError("column specs is not JSON") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) and "key" in s and "label" in s for s in specs):
        raise ValueError("column specs is not a list of specs (each with a key and a label)")
    return specs
