"""The campaign state file ``ari.db``: schema, migrations and every query.

This is the only module that speaks SQL. The database runs in WAL mode, so
readers (``ari status``, the TUI) never block the engine and never see a torn
state: every multi-row write happens inside one transaction (``with
transaction(db):``), and every read that spans tables runs in one.

Times are Unix epoch seconds (REAL); callers pass ``now`` so that pure code and
tests control the clock.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypedDict

from .errors import UserError

if TYPE_CHECKING:  # a hint only: `ari status --json` never compiles alma's patterns
    from .alma import DataSet

DATASET_STATES = ("queued", "running", "succeeded", "review", "failed", "held", "excluded", "skipped")
ATTEMPT_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "lost")
ACTIVE_ATTEMPT_STATES = ("pending", "running")


class Database:
    """The campaign database: one sqlite3 connection in autocommit mode; transactions are explicit.

    (Not sqlite-utils: importing it loads numpy, click and pluggy, which every
    `ari status` would pay; docs/design.md, "The store", says why in full.)
    """

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None, readonly: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly

    def close(self) -> None:
        """Close the connection (what every reader and writer does when done)."""
        self.conn.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


# -- schema and migrations ---------------------------------------------------

def _v1(conn: sqlite3.Connection) -> None:
    """The first schema: data sets, nodes, attempts, events, offsets, products, QA2."""
    _execute_script(conn, """
        CREATE TABLE datasets (
            uid TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            array TEXT,
            band INTEGER,
            size_gb REAL,
            mem_gb REAL,
            hours REAL,
            casa_version TEXT,
            state TEXT NOT NULL DEFAULT 'queued',
            reason TEXT,
            overrides TEXT NOT NULL DEFAULT '{}',
            accepted_attempt INTEGER,
            extra TEXT NOT NULL DEFAULT '{}',
            source TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX datasets_state ON datasets(state);
        CREATE INDEX datasets_project ON datasets(project);

        CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            transport TEXT NOT NULL,
            batch TEXT NOT NULL,
            host TEXT,
            slots INTEGER NOT NULL,
            mem_gb REAL NOT NULL,
            walltime_h REAL,
            speed REAL NOT NULL,
            in_config INTEGER NOT NULL DEFAULT 1,
            drained INTEGER NOT NULL DEFAULT 0,
            drained_reason TEXT,
            probe TEXT,
            probed_at REAL,
            probe_error TEXT,
            updated_at REAL NOT NULL
        );

        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL REFERENCES datasets(uid),
            node TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            stage TEXT,
            handle TEXT,
            work_dir TEXT,
            mem_gb REAL,
            walltime_h REAL,
            created_at REAL NOT NULL,
            started_at REAL,
            heartbeat_at REAL,
            ended_at REAL,
            exit_code INTEGER,
            peak_mem_gb REAL,
            category TEXT,
            signature TEXT,
            decisive_line INTEGER,
            excerpt TEXT,
            status TEXT
        );
        CREATE INDEX attempts_uid ON attempts(uid);
        CREATE INDEX attempts_state ON attempts(state);

        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            uid TEXT,
            attempt_id INTEGER,
            node TEXT,
            kind TEXT NOT NULL,
            old TEXT,
            new TEXT,
            detail TEXT
        );
        CREATE INDEX events_uid ON events(uid);
        CREATE INDEX events_attempt ON events(attempt_id);

        CREATE TABLE log_offsets (
            attempt_id INTEGER NOT NULL,
            path TEXT NOT NULL,
            offset INTEGER NOT NULL DEFAULT 0,
            mirror TEXT,
            PRIMARY KEY (attempt_id, path)
        );

        CREATE TABLE products (
            id INTEGER PRIMARY KEY,
            attempt_id INTEGER NOT NULL,
            uid TEXT NOT NULL,
            path TEXT NOT NULL,
            kind TEXT,
            sha256 TEXT,
            size INTEGER
        );
        CREATE INDEX products_attempt ON products(attempt_id);

        CREATE TABLE qa2_results (
            id INTEGER PRIMARY KEY,
            attempt_id INTEGER,
            uid TEXT NOT NULL,
            pl TEXT,
            qa2 TEXT,
            field TEXT,
            spw TEXT,
            specmode TEXT,
            peak_ratio REAL,
            flux_ratio REAL,
            rms_ratio REAL,
            beam_ratio REAL,
            verdict TEXT,
            detail TEXT
        );
        CREATE INDEX qa2_uid ON qa2_results(uid);
        """)


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL inside the current transaction (executescript would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2_verdict_rules(conn: sqlite3.Connection) -> None:
    """Verdicts remember the rules that made them: an attempt's triage, a QA2 pair's verdict."""
    _execute_script(conn, """
        ALTER TABLE attempts ADD COLUMN triage_rules TEXT;
        ALTER TABLE qa2_results ADD COLUMN rules_version TEXT;
        """)




def _revisions(conn: sqlite3.Connection) -> None:
    """Row revisions: every insert or update of a data set or an attempt stamps the row with
    the next number of ``revision``, so a reader that keeps a copy (the console) re-reads only
    the rows newer than the last revision it saw (``datasets_since``, ``attempts_since``)."""
    conn.execute("CREATE TABLE revision (n INTEGER NOT NULL)")
    conn.execute("INSERT INTO revision VALUES (0)")
    for table, key in (("datasets", "uid"), ("attempts", "id")):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN rev INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"CREATE INDEX {table}_rev ON {table}(rev)")
        stamp = (f"BEGIN UPDATE revision SET n = n + 1;"
                 f" UPDATE {table} SET rev = (SELECT n FROM revision) WHERE {key} = NEW.{key}; END")
        conn.execute(f"CREATE TRIGGER {table}_rev_insert AFTER INSERT ON {table} {stamp}")
        # WHEN: the trigger's own UPDATE changes rev and must not stamp again
        conn.execute(f"CREATE TRIGGER {table}_rev_update AFTER UPDATE ON {table} WHEN NEW.rev = OLD.rev {stamp}")


def _first_outcomes(conn: sqlite3.Connection) -> None:
    """Each data set's first finished attempt's state (succeeded, failed or lost), kept by
    trigger: ``ari status`` reads success rates from 100,000 data sets instead of a million attempts."""
    conn.execute("ALTER TABLE datasets ADD COLUMN first_outcome TEXT")
    conn.execute("UPDATE datasets SET first_outcome = (SELECT a.state FROM attempts a WHERE a.uid = datasets.uid"
                 " AND a.state IN ('succeeded','failed','lost') ORDER BY a.id LIMIT 1)")
    for event in ("INSERT", "UPDATE OF state"):
        name = event.split()[0].lower()
        conn.execute(f"CREATE TRIGGER attempts_first_outcome_{name} AFTER {event} ON attempts"
                     " WHEN NEW.state IN ('succeeded','failed','lost') BEGIN"
                     " UPDATE datasets SET first_outcome = NEW.state WHERE uid = NEW.uid AND first_outcome IS NULL;"
                     " END")


def _tally(conn: sqlite3.Connection) -> None:
    """Data sets counted by (state, first outcome), kept by trigger: ``ari status`` reads totals and
    success rates from a dozen rows instead of scanning 100,000 data sets (``tally``); and the data
    sets of one state in the order they entered it (the held and review lists) from an index.

    ``outcome`` is ``''`` for a data set not tried yet (NULL would never meet its row again).
    """
    conn.execute("CREATE INDEX datasets_state_updated ON datasets(state, updated_at, uid)")
    conn.execute("CREATE TABLE dataset_tally (state TEXT NOT NULL, outcome TEXT NOT NULL,"
                 " n INTEGER NOT NULL, PRIMARY KEY (state, outcome))")
    conn.execute("INSERT INTO dataset_tally SELECT state, COALESCE(first_outcome, ''), COUNT(*) FROM datasets"
                 " GROUP BY 1, 2")
    add = ("INSERT INTO dataset_tally VALUES (NEW.state, COALESCE(NEW.first_outcome, ''), 1)"
           " ON CONFLICT (state, outcome) DO UPDATE SET n = n + 1;")
    drop = "UPDATE dataset_tally SET n = n - 1 WHERE state = OLD.state AND outcome = COALESCE(OLD.first_outcome, '');"
    conn.execute(f"CREATE TRIGGER datasets_tally_insert AFTER INSERT ON datasets BEGIN {add} END")
    conn.execute(f"CREATE TRIGGER datasets_tally_delete AFTER DELETE ON datasets BEGIN {drop} END")
    conn.execute("CREATE TRIGGER datasets_tally_update AFTER UPDATE OF state, first_outcome ON datasets"
                 " WHEN OLD.state IS NOT NEW.state OR OLD.first_outcome IS NOT NEW.first_outcome"
                 f" BEGIN {drop} {add} END")


def _archive_metadata(conn: sqlite3.Connection) -> None:
    """What runtime predictions learn from beside size, array and band: spectral windows,
    channels per window, mosaic, execution blocks (NULL: unknown, never a guessed 0).

    Data sets imported before keep NULL unless their catalogue row carried the column
    (kept in ``extra`` then): an import of the same catalogue or archive query fills the rest.
    """
    for column, kind in META_TYPES.items():
        conn.execute(f"ALTER TABLE datasets ADD COLUMN {column} {kind}")
    named = " OR ".join(f"instr(extra, '\"{c}\"') > 0" for c in META_TYPES)  # only rows whose extra names one
    rows = conn.execute(f"SELECT uid, extra FROM datasets WHERE {named}").fetchall()
    for uid, extra in rows:
        values = _metadata_of_extra(json.loads(extra or "{}"))
        if values:
            sets = ", ".join(f"{c} = ?" for c in values)
            conn.execute(f"UPDATE datasets SET {sets} WHERE uid = ?", (*values.values(), uid))


META_TYPES = {"n_spw": "INTEGER", "n_chan": "INTEGER", "is_mosaic": "INTEGER", "n_eb": "INTEGER"}
"""The archive's metadata columns of ``datasets`` (``_archive_metadata``); is_mosaic is 0/1."""


def _metadata_of_extra(extra: dict) -> dict:
    """The metadata columns a catalogue row kept in ``extra`` before they were columns (valid ones only)."""
    from .alma import _PARSERS

    out = {}
    for column in META_TYPES:
        raw = extra.get(column)
        if raw in (None, ""):
            continue
        try:
            out[column] = _PARSERS[column][0](str(raw))
        except ValueError:
            continue
    return out


ARCHIVE_GUESSES = {"archive_hours": "REAL", "archive_mem_gb": "REAL"}
"""The archive's guess of a data set's hours (speed 1.0) and peak memory (``_archive_guesses``):
where its prediction starts, and a feature the history fit learns from; never an explicit value."""


def _archive_guesses(conn: sqlite3.Connection) -> None:
    """The archive's predicted hours and memory move out of ``hours``/``mem_gb`` (explicit values:
    a catalogue's columns, which win over any prediction) into columns of their own, which
    predictions start from and learn past. Rows an archive query imported (``extra.source``) move.
    Running it again changes nothing (a test re-runs the steps after the status tally)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(datasets)")}
    for column, kind in ARCHIVE_GUESSES.items():
        if column not in have:
            conn.execute(f"ALTER TABLE datasets ADD COLUMN {column} {kind}")
    conn.execute("UPDATE datasets SET archive_hours = hours, archive_mem_gb = mem_gb, hours = NULL, mem_gb = NULL"
                 " WHERE json_extract(extra, '$.source') = 'archive' AND archive_hours IS NULL"
                 " AND archive_mem_gb IS NULL")


_STATS_OF_UID = ("INSERT INTO attempt_stats SELECT uid, COUNT(*), MIN(id), MAX(id),"
                 " MIN(CASE WHEN state = 'succeeded' THEN COALESCE(ended_at, created_at) END)"
                 " FROM attempts WHERE uid = {uid} GROUP BY uid;")
_FAILED = "('failed','lost')"


def _attempt_stats(conn: sqlite3.Connection) -> None:
    """Each data set's attempts in one row (count, first and newest id, first success's end) and the
    failed or lost attempts per category, kept by trigger: the console's first read of a campaign
    with a million attempts reads 100,000 rows and a dozen instead of aggregating the history.

    A data set never tried has no ``attempt_stats`` row; a failure without a category counts as
    ``unknown``. Launches (insert) cost one upsert each; a heartbeat costs nothing. Running it
    again (a file whose version was set back) counts afresh.
    """
    for table in ("attempt_stats", "failure_tally"):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    for name in ("attempt_stats_insert", "attempt_stats_delete", "attempt_stats_move", "attempt_stats_success",
                 "attempt_failures_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    conn.execute("CREATE TABLE attempt_stats (uid TEXT PRIMARY KEY, n INTEGER NOT NULL, first_id INTEGER NOT NULL,"
                 " latest_id INTEGER NOT NULL, success_at REAL)")
    conn.execute("INSERT INTO attempt_stats SELECT uid, COUNT(*), MIN(id), MAX(id),"
                 " MIN(CASE WHEN state = 'succeeded' THEN COALESCE(ended_at, created_at) END) FROM attempts GROUP BY uid")
    conn.execute("CREATE TABLE failure_tally (category TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute(f"INSERT INTO failure_tally SELECT COALESCE(category, 'unknown'), COUNT(*) FROM attempts"
                 f" WHERE state IN {_FAILED} GROUP BY 1")
    success = "CASE WHEN NEW.state = 'succeeded' THEN COALESCE(NEW.ended_at, NEW.created_at) END"
    conn.execute(
        "CREATE TRIGGER attempt_stats_insert AFTER INSERT ON attempts BEGIN"
        f" INSERT INTO attempt_stats VALUES (NEW.uid, 1, NEW.id, NEW.id, {success})"
        " ON CONFLICT (uid) DO UPDATE SET n = n + 1, first_id = MIN(first_id, excluded.first_id),"
        " latest_id = MAX(latest_id, excluded.latest_id),"
        " success_at = COALESCE(MIN(success_at, excluded.success_at), success_at, excluded.success_at);"
        f" INSERT INTO failure_tally SELECT COALESCE(NEW.category, 'unknown'), 1 WHERE NEW.state IN {_FAILED}"
        " ON CONFLICT (category) DO UPDATE SET n = n + 1; END")
    # a data set's row again from its attempts (a delete, or an attempt moved to another id or uid)
    again = "DELETE FROM attempt_stats WHERE uid = {uid}; " + _STATS_OF_UID
    conn.execute(f"CREATE TRIGGER attempt_stats_delete AFTER DELETE ON attempts BEGIN {again.format(uid='OLD.uid')}"
                 f" UPDATE failure_tally SET n = n - 1 WHERE OLD.state IN {_FAILED}"
                 " AND category = COALESCE(OLD.category, 'unknown'); END")
    conn.execute("CREATE TRIGGER attempt_stats_move AFTER UPDATE OF id, uid ON attempts"
                 f" WHEN OLD.id IS NOT NEW.id OR OLD.uid IS NOT NEW.uid BEGIN {again.format(uid='OLD.uid')}"
                 f" {again.format(uid='NEW.uid')} END")
    conn.execute("CREATE TRIGGER attempt_stats_success AFTER UPDATE OF state, ended_at ON attempts"
                 " WHEN (OLD.state = 'succeeded' OR NEW.state = 'succeeded') AND (OLD.state IS NOT NEW.state"
                 " OR OLD.ended_at IS NOT NEW.ended_at) BEGIN UPDATE attempt_stats SET success_at ="
                 " (SELECT MIN(COALESCE(ended_at, created_at)) FROM attempts WHERE uid = NEW.uid AND state = 'succeeded')"
                 " WHERE uid = NEW.uid; END")
    conn.execute("CREATE TRIGGER attempt_failures_update AFTER UPDATE OF state, category ON attempts"
                 " WHEN OLD.state IS NOT NEW.state OR OLD.category IS NOT NEW.category BEGIN"
                 f" UPDATE failure_tally SET n = n - 1 WHERE OLD.state IN {_FAILED}"
                 " AND category = COALESCE(OLD.category, 'unknown');"
                 f" INSERT INTO failure_tally SELECT COALESCE(NEW.category, 'unknown'), 1 WHERE NEW.state IN {_FAILED}"
                 " ON CONFLICT (category) DO UPDATE SET n = n + 1; END")


def _peak_scratch(conn: sqlite3.Connection) -> None:
    """Each attempt's peak scratch use (GB, the runner's ``peak_scratch_gb``: its work dir measured after
    each stage); NULL for attempts recorded before, or by a runner that did not measure. Running it
    again changes nothing (a test re-runs the steps after the status tally)."""
    if "peak_scratch_gb" not in {r[1] for r in conn.execute("PRAGMA table_info(attempts)")}:
        conn.execute("ALTER TABLE attempts ADD COLUMN peak_scratch_gb REAL")
    # what a disk_full retry needs (``disk_full_scratch``), found without a scan of a million attempts
    conn.execute("CREATE INDEX IF NOT EXISTS attempts_disk_full ON attempts(uid) WHERE category = 'disk_full'")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2_verdict_rules, _revisions, _first_outcomes,
                                                          _archive_metadata,
                                                          _tally, _archive_guesses, _attempt_stats,
                                                          _peak_scratch]
SCHEMA_VERSION = len(MIGRATIONS)


def open_db(path: Path | str, create: bool = True) -> Database:
    """The campaign database at ``path``, created and migrated to the current schema.

    A state file that cannot serve (0 bytes, not a database, truncated,
    unreadable) is a UserError naming the file, what is wrong and what to do;
    on a read-only mount (or a file we may not write) it opens read-only, so
    every read works.

    >>> with open_db(":memory:") as db:
    ...     schema_version(db) == SCHEMA_VERSION
    True
    """
    if str(path) == ":memory:":
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        db = Database(conn)
        _migrate(db)
        return db
    path = Path(path)
    global _last_path
    _last_path = path
    if not path.exists():
        if not create:
            raise UserError(f"{path}: no campaign database yet — run `ari datasets import` first")
        path.parent.mkdir(parents=True, exist_ok=True)
    elif path.stat().st_size == 0:
        raise UserError(f"{path}: the campaign state file is empty (0 bytes), not a new campaign — "
                        f"{restore_hint(path)}, or move it away to start an empty campaign")
    elif not os.access(path, os.R_OK):
        raise UserError(f"{path}: cannot read the campaign state file (permission denied) — "
                        f"check its owner and mode (`ls -l {path}`)")
    readonly = path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
    try:
        db = _connect(path, readonly)
        _migrate(db)
    except sqlite3.DatabaseError as exc:
        if readonly or not _is_readonly_error(exc):
            raise db_error(path, exc) from None
        db = _connect(path, readonly=True)  # a read-only mount that access() did not see
        try:
            _migrate(db)
        except sqlite3.DatabaseError as exc2:
            raise db_error(path, exc2) from None
    return db


_last_path: Path | None = None


def last_path() -> Path | None:
    """The state file opened last in this process (to name it when SQLite fails later)."""
    return _last_path


def verify(db: Database) -> None:
    """Read every page of the state file once (``PRAGMA quick_check``); a UserError saying what to do if damaged.

    For long-lived openers (the engine, the TUI): a damaged file is named at
    the start, not as an empty dashboard or a traceback an hour later.
    """
    try:
        rows = [r[0] for r in db.conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise db_error(db.path, exc) from None
    if rows != ["ok"]:
        raise db_error(db.path, sqlite3.DatabaseError("; ".join(rows)[:200]))


def _connect(path: Path, readonly: bool) -> Database:
    """A connection to ``path``: read-write in WAL mode, or read-only (immutable when even -shm cannot be made)."""
    if not readonly:
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return Database(conn, path)
    from urllib.parse import quote

    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.OperationalError:
        # WAL on a read-only mount without a -shm file: read the file as it is (no writer can run there).
        conn.close()
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    return Database(conn, path, readonly=True)


def _is_readonly_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def backup_path(path: Path) -> Path:
    """Where the rolling online backup of the state file ``path`` lives.

    >>> backup_path(Path("/c/ari.db"))
    PosixPath('/c/ari.db.backup')
    """
    return path.with_name(path.name + ".backup")


def restore_hint(path: Path) -> str:
    """What to do about a broken state file: restore the backup if there is one."""
    backup = backup_path(path)
    if backup.exists():
        return f"restore the automatic backup (`cp {backup} {path}`, with the engine stopped)"
    return "restore it from your own backup (no automatic backup exists yet)"


def db_error(path: Path | None, exc: BaseException) -> UserError:
    """One line for a state file SQLite cannot use: the file, what is wrong, what to do."""
    text = str(exc)
    low = text.lower()
    where = path or "ari.db"
    if "readonly" in low or "read-only" in low:
        return UserError(f"{where}: the campaign state file is read-only ({text}) — reads work; to run the "
                         f"engine or change anything, check the mount (`findmnt -T {where}`) and the file's mode")
    if "locked" in low or "busy" in low:
        return UserError(f"{where}: the campaign state file stays locked ({text}) — another process holds it; "
                         f"wait, or stop it (`fuser {where}`)")
    if "disk i/o" in low or "unable to open" in low:
        return UserError(f"{where}: cannot read or write the campaign state file ({text}) — "
                         f"check the disk and the mount, then {restore_hint(Path(where))}")
    return UserError(f"{where}: the campaign state file is damaged ({text}) — {restore_hint(Path(where))}")


def backup(db: Database, dest: Path | None = None) -> Path:
    """Copy the live state file to ``dest`` (default: its rolling backup) with SQLite's online backup API.

    Readers and the engine go on meanwhile; the copy is written beside the
    target and renamed over it, so a crash mid-backup leaves the previous backup.
    """
    dest = Path(dest or backup_path(db.path))
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    target = sqlite3.connect(str(tmp))
    try:
        db.conn.backup(target, pages=4096)
    finally:
        target.close()
    os.replace(tmp, dest)
    return dest


def schema_version(db: Database) -> int:
    """The schema version ``db`` is at (0 for an empty file)."""
    return db.conn.execute("PRAGMA user_version").fetchone()[0]


def _migrate(db: Database) -> None:
    if schema_version(db) == SCHEMA_VERSION:
        return  # the usual case: no write lock for a read-only command
    if db.readonly:
        raise UserError(f"{db.path}: the campaign state file is read-only and needs an upgrade of its schema "
                        f"(v{schema_version(db)} -> v{SCHEMA_VERSION}) — open it once where it is writable")
    with transaction(db, immediate=True):
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise UserError(f"ari.db has schema v{current}, newer than this ari-console knows "
                            f"(v{SCHEMA_VERSION}) — upgrade ari-console")
        for version in range(current, SCHEMA_VERSION):
            MIGRATIONS[version](db.conn)
            db.conn.execute(f"PRAGMA user_version = {version + 1}")


@contextmanager
def transaction(db: Database, immediate: bool = False) -> Iterator[Database]:
    """All writes (or reads) inside happen at once or not at all.

    ``immediate`` takes the write lock at the start, so read-modify-write
    sequences cannot interleave with another writer. Nested use joins the
    outer transaction.
    """
    conn = db.conn
    if conn.in_transaction:
        yield db
        return
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


KILL_IN_ENV = "ARI_TEST_KILL_IN"
DECISION_WINDOWS = ("finish", "deliver", "launch-failed", "launch-interrupted", "hold", "reconcile")


def crash_window(name: str) -> None:
    """A fault-injection hook: with ``ARI_TEST_KILL_IN=<name>`` in its environment, the process is
    SIGKILLed here (inside decision ``name``'s transaction, or at the named point of a launch).

    The fault tests run an engine with it to stop it at every moment where a
    decision is half-written; a real campaign never sets it.
    """
    if os.environ.get(KILL_IN_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def decision(db: Database, name: str) -> Iterator[Database]:
    """One engine decision (finish, deliver, retry, hold, launch failure): every write inside, or none.

    ``name`` is the decision's window for :func:`crash_window`, called after the
    last write and before the commit.
    """
    with transaction(db, immediate=True):
        yield db
        crash_window(name)


# -- events ------------------------------------------------------------------

def record_event(db: Database, kind: str, now: float, *, uid: str | None = None,
                 attempt_id: int | None = None, node: str | None = None, old: str | None = None,
                 new: str | None = None, detail: dict | None = None) -> None:
    """Append one timestamped event (every state transition is one)."""
    db.conn.execute(
        "INSERT INTO events (ts, uid, attempt_id, node, kind, old, new, detail) VALUES (?,?,?,?,?,?,?,?)",
        (now, uid, attempt_id, node, kind, old, new, json.dumps(detail) if detail else None),
    )


def events(db: Database, uid: str | None = None, limit: int = 1000) -> list[dict]:
    """The most recent events, oldest first (of one data set when ``uid`` is given)."""
    where, args = ("WHERE uid = ?", [uid]) if uid else ("", [])
    rows = _dicts(db, f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?", [*args, limit])
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return rows[::-1]


# -- data sets ---------------------------------------------------------------

@dataclass(frozen=True)
class ImportResult:
    """What an import changed: uids added, updated (metadata changed) and unchanged."""

    added: list[str]
    updated: list[str]
    unchanged: list[str]


_META_COLUMNS = ("project", "array", "band", "size_gb", "mem_gb", "hours", "casa_version", *META_TYPES,
                 *ARCHIVE_GUESSES)


def import_datasets(db: Database, datasets: Iterable[DataSet], source: str,
                    now: float, excluded: dict[str, str] | None = None, dry_run: bool = False) -> ImportResult:
    """Add new data sets as ``queued`` and refresh the metadata of known ones, atomically.

    Importing the same catalogue twice changes nothing; the state and history of
    a known data set are never touched by an import. ``excluded`` maps uids the
    selection rules turned away to their reason: they are kept as ``excluded``
    with it, never silently dropped. ``dry_run`` decides every row the same way
    and writes nothing (what ``ari datasets import --dry-run`` counts).
    """
    excluded = excluded or {}
    added, updated, unchanged = [], [], []
    with transaction(db, immediate=not dry_run):
        known = {r["uid"]: r for r in _dicts(db, f"SELECT uid, {', '.join(_META_COLUMNS)}, extra FROM datasets")}
        for ds in datasets:
            row = ds.row()
            extra = json.dumps(ds.extra, sort_keys=True)
            old = known.get(ds.uid)
            if old is None:
                added.append(ds.uid)
                if dry_run:
                    continue
                state = "excluded" if ds.uid in excluded else "queued"
                db.conn.execute(
                    f"INSERT INTO datasets (uid, {', '.join(_META_COLUMNS)}, extra, source, state, reason,"
                    f" created_at, updated_at) VALUES ({', '.join('?' * (len(_META_COLUMNS) + 7))})",
                    (*[row[c] for c in ("uid", *_META_COLUMNS)], extra, source, state, excluded.get(ds.uid),
                     now, now),
                )
                record_event(db, "imported", now, uid=ds.uid, new=state,
                             detail={"source": source, **({"reason": excluded[ds.uid]} if ds.uid in excluded else {})})
                continue
            changes = {c: row[c] for c in _META_COLUMNS if row[c] is not None and row[c] != old[c]}
            if extra != old["extra"] and ds.extra:
                changes["extra"] = extra
            if not changes:
                unchanged.append(ds.uid)
                continue
            updated.append(ds.uid)
            if dry_run:
                continue
            sets = ", ".join(f"{c} = ?" for c in changes)
            db.conn.execute(f"UPDATE datasets SET {sets}, updated_at = ? WHERE uid = ?",
                            (*changes.values(), now, ds.uid))
            record_event(db, "metadata", now, uid=ds.uid, detail={"changed": sorted(changes)})
    return ImportResult(added, updated, unchanged)


def datasets(db: Database, state: str | None = None, project: str | None = None) -> list[DataSetRow]:
    """Data sets in queue order (oldest first), optionally of one state and/or project."""
    clauses, args = [], []
    if state:
        clauses.append("state = ?")
        args.append(state)
    if project:
        clauses.append("project = ?")
        args.append(project)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return [_decode_dataset(row) for row in _dicts(db, f"SELECT * FROM datasets {where} ORDER BY created_at, uid", args)]


class Handle(TypedDict, total=False):
    """How a new console finds an attempt's job again (``nodes.batch``: one per batch system)."""

    batch: str            # none, slurm, pbs (or gone: the job is unknown, only status.json speaks)
    work_dir: str
    node: str
    pid: int              # batch none
    job_id: str           # slurm, pbs


class DataSetRow(TypedDict, total=False):
    """A ``datasets`` row as the store's readers return it (JSON columns decoded)."""

    uid: str
    project: str
    array: str | None
    band: int | None
    size_gb: float | None
    mem_gb: float | None
    hours: float | None
    casa_version: str | None
    state: str
    reason: str | None
    overrides: dict       # mem_gb, walltime_h, hours, node, casa_version, params, not_before
    accepted_attempt: int | None
    extra: dict           # archive metadata and files, CSV columns
    source: str | None
    created_at: float
    updated_at: float
    rev: int                     # the revision of its last write (``_revisions``)
    first_outcome: str | None    # its first finished attempt's state (``_first_outcomes``)
    n_spw: int | None            # spectral windows (None: unknown; ``_archive_metadata``)
    n_chan: int | None           # channels per window, their mean
    is_mosaic: int | None        # 1 mosaic, 0 single field, None unknown
    n_eb: int | None             # execution blocks
    archive_hours: float | None  # the archive's guess (``_archive_guesses``): a prior, not an explicit value
    archive_mem_gb: float | None


class AttemptRow(TypedDict, total=False):
    """An ``attempts`` row as the store's readers return it (JSON columns decoded)."""

    id: int
    uid: str
    node: str
    state: str
    stage: str | None
    handle: Handle | None
    work_dir: str | None
    mem_gb: float | None
    walltime_h: float | None
    created_at: float
    started_at: float | None
    heartbeat_at: float | None
    ended_at: float | None
    exit_code: int | None
    peak_mem_gb: float | None
    category: str | None
    signature: str | None
    decisive_line: int | None
    excerpt: str | None
    status: dict | None   # the last status.json
    triage_rules: str | None
    rev: int              # the revision of its last write (``_revisions``)
    peak_scratch_gb: float | None  # the most scratch its work dir used, GB (``_peak_scratch``)


def _decode_dataset(row: dict) -> DataSetRow:
    """A datasets row with its JSON columns (``overrides``, ``extra``) decoded: the one place that does it."""
    if "overrides" in row:
        raw = row["overrides"]
        row["overrides"] = json.loads(raw) if raw and raw != "{}" else {}
    if "extra" in row:
        row["extra"] = json.loads(row["extra"]) if row["extra"] else {}
    return row


_QUEUE_COLUMNS = (f"uid, state, array, band, size_gb, mem_gb, hours, casa_version, {', '.join(META_TYPES)}, "
                  f"{', '.join(ARCHIVE_GUESSES)}, overrides")


def queue(db: Database) -> list[DataSetRow]:
    """Queued data sets with just what placement needs (cheap at 10,000 rows: no ``extra``)."""
    return [_decode_dataset(row) for row in _dicts(
        db, f"SELECT {_QUEUE_COLUMNS} FROM datasets WHERE state = 'queued' ORDER BY created_at, uid")]


def queue_changes(db: Database, rev: int) -> tuple[int, list[DataSetRow]]:
    """(the revision now, the data sets written after revision ``rev`` in any state), with what
    :func:`queue` gives: a reader that keeps the queue updates it from these alone.

    >>> from ari_console.alma import DataSet
    >>> with open_db(":memory:") as db:
    ...     _ = import_datasets(db, [DataSet("uid://A001/X1/X1", "2016.1.00123.S")], "a.csv", now=1.0)
    ...     rev, rows = queue_changes(db, 0)
    ...     rev, [(r["uid"], r["state"]) for r in rows], queue_changes(db, rev)[1]
    (1, [('uid://A001/X1/X1', 'queued')], [])
    """
    with transaction(db):
        now_rev = revision(db)
        rows = _dicts(db, f"SELECT {_QUEUE_COLUMNS} FROM datasets WHERE rev > ? ORDER BY created_at, uid", [rev])
    return now_rev, [_decode_dataset(row) for row in rows]


def failed_tries(db: Database, uids: Iterable[str] | None = None) -> dict[str, int]:
    """uid -> attempts that failed, were lost or cancelled (of ``uids``, or of every data set)."""
    return _per_uid(db, "SELECT uid, COUNT(*) FROM attempts WHERE state IN ('failed', 'lost', 'cancelled')", uids)


def disk_full_scratch(db: Database, uids: Iterable[str] | None = None) -> dict[str, float]:
    """uid -> the most scratch (GB) an attempt of it had used when it failed for a full scratch
    (``disk_full`` with a measured peak), of ``uids`` or of every data set: what its retry needs more than."""
    return _per_uid(db, "SELECT uid, MAX(peak_scratch_gb) FROM attempts WHERE category = 'disk_full'"
                        " AND peak_scratch_gb > 0", uids)


def _per_uid(db: Database, sql: str, uids: Iterable[str] | None) -> dict:
    """``sql`` (``SELECT uid, <aggregate> FROM attempts WHERE ...``) grouped by uid, of ``uids`` (in
    chunks of 500: SQLite's variable limit) or of every data set."""
    if uids is None:
        return dict(db.conn.execute(sql + " GROUP BY uid").fetchall())
    uids, out = list(uids), {}
    for i in range(0, len(uids), 500):
        chunk = uids[i:i + 500]
        out.update(db.conn.execute(sql + f" AND uid IN ({', '.join('?' * len(chunk))}) GROUP BY uid",
                                   chunk).fetchall())
    return out


def queue_signature(db: Database) -> tuple[int, float | None, int]:
    """(queued data sets, latest change among them, attempts ended): what a kept plan depends on.

    Cheap at 100,000 rows (the state index), so the engine can check it every
    tick and re-read the queue only when it changed other than by its own launches.
    """
    count, latest = db.conn.execute(
        "SELECT COUNT(*), MAX(updated_at) FROM datasets WHERE state = 'queued'").fetchone()
    ended = db.conn.execute("SELECT COUNT(*) FROM attempts WHERE ended_at IS NOT NULL").fetchone()[0]
    return count, latest, ended


def data_version(db: Database) -> int:
    """A number that changes whenever another connection commits (readers re-read only then)."""
    return db.conn.execute("PRAGMA data_version").fetchone()[0]


def revision(db: Database) -> int:
    """The revision of the newest data-set or attempt write (see ``_revisions``)."""
    return db.conn.execute("SELECT n FROM revision").fetchone()[0]


DATASET_VIEW_COLUMNS = ("uid", "project", "array", "band", "size_gb", "mem_gb", "hours", "casa_version", "state",
                        "reason", "overrides", "accepted_attempt", "created_at", "first_outcome")
ATTEMPT_VIEW_COLUMNS = ("id", "uid", "node", "state", "stage", "mem_gb", "walltime_h", "created_at", "started_at",
                        "heartbeat_at", "ended_at", "exit_code", "peak_mem_gb", "category", "signature",
                        "decisive_line", "excerpt", "work_dir", "handle", "peak_scratch_gb")


def datasets_since(db: Database, rev: int) -> list[dict]:
    """Data sets written after revision ``rev`` (all for -1), without ``extra``: what the console shows."""
    return _dataset_views(db, "WHERE rev > ? ORDER BY created_at, uid", [rev])


def datasets_in_states(db: Database, states: Iterable[str]) -> list[dict]:
    """The data sets in ``states`` (as ``datasets_since`` rows), oldest first: found by the state index."""
    states = list(states)
    return _dataset_views(db, f"WHERE state IN ({', '.join('?' * len(states))}) ORDER BY created_at, uid", states)


def _dataset_views(db: Database, where: str, args: list) -> list[dict]:
    rows = _dicts(db, f"SELECT {', '.join(DATASET_VIEW_COLUMNS)} FROM datasets {where}", args)
    for row in rows:
        raw = row["overrides"]
        row["overrides"] = json.loads(raw) if raw != "{}" else {}
    return rows


def attempts_since(db: Database, rev: int) -> list[dict]:
    """Attempts written after revision ``rev``, in id order, without handle and status."""
    # INDEXED BY: without statistics SQLite walks the whole table in id order (to skip the
    # sort) instead of the few new revisions: 580 ms instead of 1 ms at a million attempts
    return _attempt_views(db, "INDEXED BY attempts_rev WHERE rev > ? ORDER BY id", [rev])


def _attempt_views(db: Database, where: str, args: list, alias: str = "",
                   columns: Iterable[str] = ATTEMPT_VIEW_COLUMNS) -> list[dict]:
    """``columns`` (of ``ATTEMPT_VIEW_COLUMNS``) of ``attempts {where}``, the handle decoded
    (``alias``: the attempts table's name in ``where``)."""
    cols = ", ".join(f"{alias}.{c}" if alias else c for c in (_known(c, ATTEMPT_VIEW_COLUMNS) for c in columns))
    rows = _dicts(db, f"SELECT {cols} FROM attempts {alias} {where}", args)
    if rows and "handle" in rows[0]:
        for row in rows:
            row["handle"] = json.loads(row["handle"]) if row["handle"] else None
    return rows


def dataset_summaries(db: Database, dataset_columns: Iterable[str], attempt_columns: Iterable[str],
                      limit: int | None = None) -> list[tuple]:
    """Every data set (or the ``limit`` oldest), oldest first, as one tuple: its ``dataset_columns``, then
    its number of attempts, its first attempt's id and its first success's end (``attempt_stats``), then
    its newest attempt's ``attempt_columns`` (None for a data set never tried).

    One pass over the data sets and one lookup each, whatever the length of the attempt history:
    what a console needs to open a campaign (``limit``: its first page, before the rest is read).

    >>> db = open_db(":memory:"); dataset_summaries(db, ["uid", "state"], ["id", "state"], limit=10)
    []
    """
    d_cols = [f"d.{_known(c, DATASET_VIEW_COLUMNS)}" for c in dataset_columns]
    a_cols = [f"a.{_known(c, ATTEMPT_VIEW_COLUMNS)}" for c in attempt_columns]
    # the page is cut before the joins: only its rows are looked up in attempt_stats and attempts
    source = "datasets" if limit is None else "(SELECT * FROM datasets ORDER BY created_at, uid LIMIT ?)"
    return db.conn.execute(
        f"SELECT {', '.join([*d_cols, 's.n', 's.first_id', 's.success_at', *a_cols])} FROM {source} d"
        " LEFT JOIN attempt_stats s ON s.uid = d.uid LEFT JOIN attempts a ON a.id = s.latest_id"
        " ORDER BY d.created_at, d.uid", [] if limit is None else [limit]).fetchall()


def _known(column: str, columns: tuple[str, ...]) -> str:
    if column not in columns:
        raise ValueError(f"{column!r} is not one of {columns}")
    return column


def newest_attempts_open(db: Database, columns: Iterable[str] = ATTEMPT_VIEW_COLUMNS) -> list[dict]:
    """The newest attempt of each data set whose newest attempt failed or was lost while the data set
    neither succeeded nor runs (the open failures), as ``attempts_since`` rows (their ``columns``) in id order."""
    return _attempt_views(db, "JOIN attempt_stats s ON a.id = s.latest_id JOIN datasets d ON d.uid = s.uid"
                              f" WHERE a.state IN {_FAILED} AND d.state NOT IN ('succeeded', 'running')"
                              " ORDER BY a.id", [], alias="a", columns=columns)


def newest_attempts_active(db: Database) -> list[dict]:
    """The attempts pending or running that are their data set's newest, as ``attempts_since`` rows."""
    return _attempt_views(db, "JOIN attempt_stats s ON a.id = s.latest_id WHERE a.state IN ('pending', 'running')"
                              " ORDER BY a.id", [], alias="a")


def recent_attempts(db: Database, limit: int = 200) -> list[dict]:
    """The ``limit`` newest ended attempts, oldest first, as ``attempts_since`` rows."""
    return _attempt_views(db, "WHERE state IN ('succeeded','failed','cancelled','lost') ORDER BY id DESC LIMIT ?",
                          [limit])[::-1]


def attempt_summary_failures(db: Database) -> dict[str, int]:
    """category -> failed or lost attempts (``unknown`` for those without a category), from the tally
    the triggers keep (``_attempt_stats``).

    >>> db = open_db(":memory:"); attempt_summary_failures(db)
    {}
    """
    return dict(db.conn.execute("SELECT category, n FROM failure_tally WHERE n > 0").fetchall())


def newest_attempts_in_state(db: Database, state: str, limit: int | None = None) -> list[dict]:
    """The data sets in ``state`` (least recently changed first; the first ``limit``) with their reason and newest
    attempt's node, category, signature, excerpt."""
    # Why the inner SELECT: it picks the ``limit`` data sets along the (state, updated_at, uid) index
    # before any attempt is looked up, so 5,000 held data sets cost 100 lookups, not 5,000.
    return _dicts(db, "SELECT d.uid, d.project, d.reason, d.updated_at, a.id AS attempt_id, a.node, a.category,"
                      " a.signature, a.excerpt FROM (SELECT uid, project, reason, updated_at FROM datasets"
                      " INDEXED BY datasets_state_updated WHERE state = ? ORDER BY updated_at, uid LIMIT ?) d LEFT JOIN attempts a ON a.id ="
                      " (SELECT MAX(id) FROM attempts WHERE uid = d.uid) ORDER BY d.updated_at, d.uid",
                  [state, -1 if limit is None else limit])


def qa2_mark(db: Database) -> tuple:
    """(count, newest id) of the QA2 pairs: changes whenever a comparison is saved or replaced."""
    return tuple(db.conn.execute("SELECT COUNT(*), MAX(id) FROM qa2_results").fetchone())


def counts(db: Database) -> dict[str, int]:
    """Data sets per state (from the tally the triggers keep: a dozen rows at any size).

    >>> db = open_db(":memory:"); counts(db)["queued"]
    0
    """
    found = dict(db.conn.execute("SELECT state, SUM(n) FROM dataset_tally GROUP BY state").fetchall())
    return {state: found.get(state, 0) for state in DATASET_STATES}


def tally(db: Database) -> dict[tuple[str, str | None], int]:
    """(state, first outcome) -> data sets; the outcome None for data sets never tried.

    >>> db = open_db(":memory:"); tally(db)
    {}
    """
    return {(state, outcome or None): n for state, outcome, n in
            db.conn.execute("SELECT state, outcome, n FROM dataset_tally WHERE n > 0")}


def dataset(db: Database, uid: str) -> DataSetRow | None:
    """One data set by canonical uid, or None."""
    rows = _dicts(db, "SELECT * FROM datasets WHERE uid = ?", [uid])
    return _decode_dataset(rows[0]) if rows else None


def set_dataset_state(db: Database, uid: str, state: str, now: float,
                      reason: str | None = None) -> None:
    """Move a data set to ``state`` and record the transition as an event."""
    if state not in DATASET_STATES:
        raise ValueError(f"unknown data-set state {state!r}")
    with transaction(db, immediate=True):
        old = db.conn.execute("SELECT state FROM datasets WHERE uid = ?", (uid,)).fetchone()
        if old is None:
            raise UserError(f"{uid}: no such data set in this campaign — see `ari datasets list`")
        if old[0] == state:
            return
        db.conn.execute("UPDATE datasets SET state = ?, reason = ?, updated_at = ? WHERE uid = ?",
                        (state, reason, now, uid))
        record_event(db, "state", now, uid=uid, old=old[0], new=state,
                     detail={"reason": reason} if reason else None)


# -- nodes -------------------------------------------------------------------

def sync_nodes(db: Database, nodes: Iterable, now: float) -> None:
    """Make the nodes table match the config; keep drain state, mark removed nodes.

    Writes nothing when the table already matches (so reads like `ari status` take no write lock).
    """
    nodes = list(nodes)
    want = {(n.name, n.transport, n.batch, n.host, n.slots, float(n.mem_gb),
             None if n.walltime_h is None else float(n.walltime_h), float(n.speed), 1) for n in nodes}
    have = set(db.conn.execute("SELECT name, transport, batch, host, slots, mem_gb, walltime_h, speed, in_config"
                               " FROM nodes WHERE in_config = 1").fetchall())
    if want == have or db.readonly:
        return  # a read-only state file shows the nodes it knows
    with transaction(db, immediate=True):
        names = []
        for n in nodes:
            names.append(n.name)
            db.conn.execute(
                "INSERT INTO nodes (name, transport, batch, host, slots, mem_gb, walltime_h, speed,"
                " in_config, updated_at) VALUES (?,?,?,?,?,?,?,?,1,?)"
                " ON CONFLICT(name) DO UPDATE SET transport=excluded.transport, batch=excluded.batch,"
                " host=excluded.host, slots=excluded.slots, mem_gb=excluded.mem_gb,"
                " walltime_h=excluded.walltime_h, speed=excluded.speed, in_config=1,"
                " updated_at=excluded.updated_at",
                (n.name, n.transport, n.batch, n.host, n.slots, n.mem_gb, n.walltime_h, n.speed, now),
            )
        marks = ",".join("?" * len(names))
        db.conn.execute(f"UPDATE nodes SET in_config = 0 WHERE name NOT IN ({marks})", names)


def nodes(db: Database, include_removed: bool = False) -> list[dict]:
    """Nodes with their running-attempt counts, in name order."""
    where = "" if include_removed else "WHERE n.in_config = 1"
    rows = _dicts(
        db,
        "SELECT n.*, (SELECT COUNT(*) FROM attempts a WHERE a.node = n.name"
        f" AND a.state IN ('pending','running')) AS running FROM nodes n {where} ORDER BY n.name",
    )
    for row in rows:
        row["probe"] = json.loads(row["probe"]) if row["probe"] else None
        row["drained"] = bool(row["drained"])
        row["in_config"] = bool(row["in_config"])
    return rows


def node_row(db: Database, name: str) -> dict | None:
    """One node's row (probe decoded, running count), configured or not; None if unknown."""
    for row in nodes(db, include_removed=True):
        if row["name"] == name:
            return row
    return None


# -- attempts ----------------------------------------------------------------

class AlreadyRunning(Exception):
    """A data set already has an active attempt; a second one would run it twice at once."""


def create_attempt(db: Database, uid: str, node: str, now: float, *,
                   mem_gb: float | None = None, walltime_h: float | None = None) -> int:
    """A new pending attempt of ``uid`` on ``node`` (the data set turns running); its id.

    Raises AlreadyRunning when the data set has an active attempt: no data set
    ever runs twice at once, whatever two consoles do.
    """
    with transaction(db, immediate=True):
        active = db.conn.execute("SELECT id FROM attempts WHERE uid = ? AND state IN ('pending','running')",
                                 (uid,)).fetchone()
        if active:
            raise AlreadyRunning(f"{uid} already has attempt {active[0]} running")
        # Never reuse the id of an undone launch (its events, and maybe a spec on the node, carry it).
        attempt_id = db.conn.execute("SELECT MAX(x) FROM (SELECT MAX(id) AS x FROM attempts"
                                     " UNION ALL SELECT MAX(attempt_id) FROM events)").fetchone()[0] or 0
        attempt_id += 1
        db.conn.execute(
            "INSERT INTO attempts (id, uid, node, state, mem_gb, walltime_h, created_at) VALUES (?,?,?,?,?,?,?)",
            (attempt_id, uid, node, "pending", mem_gb, walltime_h, now))
        record_event(db, "attempt", now, uid=uid, attempt_id=attempt_id, node=node, new="pending")
        set_dataset_state(db, uid, "running", now)
        return attempt_id


def undo_launch(db: Database, attempt_id: int, now: float, *, kind: str, reason: str,
                detail: dict | None = None) -> None:
    """A launch that never started a job: its pending attempt goes, the data set is queued again.

    A launch is not a try: nothing ran, so nothing counts toward
    ``max_attempts``; the event ``kind`` (``launch-failed``,
    ``launch-interrupted``) keeps the node's side of the story. One decision.
    """
    with decision(db, kind):
        row = db.conn.execute("SELECT uid, node, state FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None or row[2] not in ACTIVE_ATTEMPT_STATES:
            return
        uid, node, _ = row
        db.conn.execute("DELETE FROM log_offsets WHERE attempt_id = ?", (attempt_id,))
        db.conn.execute("DELETE FROM attempts WHERE id = ?", (attempt_id,))
        record_event(db, kind, now, uid=uid, attempt_id=attempt_id, node=node, detail=detail)
        set_dataset_state(db, uid, "queued", now, reason=reason)


def launch_failures_in_a_row(db: Database, node: str) -> int:
    """Launches on ``node`` that failed since its last started attempt (or its last undrain).

    >>> db = open_db(":memory:"); record_event(db, "launch-failed", 1.0, node="n")
    >>> launch_failures_in_a_row(db, "n")
    1
    """
    return db.conn.execute(
        "SELECT COUNT(*) FROM events WHERE node = ? AND kind = 'launch-failed' AND id > COALESCE("
        "(SELECT MAX(id) FROM events WHERE node = ? AND ((kind = 'attempt' AND new = 'running')"
        " OR kind = 'undrain')), 0)", (node, node)).fetchone()[0]


def reconcile(db: Database, now: float) -> list[str]:
    """Repair what a crash between two writes of one decision could leave (older consoles wrote them apart).

    - an accepted attempt not marked succeeded: marked, the data set succeeds;
    - a delivered data set queued again (its accepted attempt finished as a
      failure afterwards, no operator asked for a re-run): succeeded again;
    - a running data set without an active attempt: queued.

    One line per repair, for the engine to report.
    """
    fixed = []
    if db.readonly:
        return fixed
    with decision(db, "reconcile"):
        rows = db.conn.execute(
            "SELECT d.uid, d.state, a.id, a.state FROM datasets d JOIN attempts a ON a.id = d.accepted_attempt"
            " WHERE a.state != 'succeeded' OR d.state IN ('queued', 'running', 'held', 'failed')").fetchall()
        for uid, ds_state, attempt_id, a_state in rows:
            accepted_at = db.conn.execute("SELECT MAX(id) FROM events WHERE uid = ? AND kind = 'accepted'",
                                          (uid,)).fetchone()[0] or 0
            asked = db.conn.execute("SELECT COUNT(*) FROM events WHERE uid = ? AND id > ? AND kind IN"
                                    " ('operator', 'retry', 'overrides')", (uid, accepted_at)).fetchone()[0]
            later = db.conn.execute("SELECT COUNT(*) FROM attempts WHERE uid = ? AND id > ?",
                                    (uid, attempt_id)).fetchone()[0]
            if asked or later:
                continue  # an operator's re-run, or a newer attempt: not a crash's leftover
            if a_state != "succeeded":
                db.conn.execute("UPDATE attempts SET state = 'succeeded', category = NULL, signature = NULL,"
                                " excerpt = NULL, ended_at = COALESCE(ended_at, ?) WHERE id = ?", (now, attempt_id))
                record_event(db, "reconciled", now, uid=uid, attempt_id=attempt_id, old=a_state, new="succeeded",
                             detail={"reason": "accepted attempt not marked succeeded"})
                fixed.append(f"{uid}: accepted attempt {attempt_id} marked succeeded (was {a_state})")
            if ds_state != "succeeded":
                set_dataset_state(db, uid, "succeeded", now, reason="delivered (reconciled after a crash)")
                fixed.append(f"{uid}: delivered, {ds_state} -> succeeded")
        stuck = db.conn.execute(
            "SELECT uid FROM datasets d WHERE state = 'running' AND NOT EXISTS (SELECT 1 FROM attempts a"
            " WHERE a.uid = d.uid AND a.state IN ('pending', 'running'))").fetchall()
        for (uid,) in stuck:
            set_dataset_state(db, uid, "queued", now, reason="reconciled: running without an active attempt")
            fixed.append(f"{uid}: running without an active attempt -> queued")
    return fixed


def attempt(db: Database, attempt_id: int) -> AttemptRow | None:
    """One attempt by id, with its handle and status decoded."""
    rows = _attempt_rows(db, "WHERE id = ?", [attempt_id])
    return rows[0] if rows else None


def attempts(db: Database, uid: str | None = None, states: Iterable[str] | None = None) -> list[AttemptRow]:
    """Attempts in creation order, optionally of one data set and/or some states."""
    clauses, args = [], []
    if uid:
        clauses.append("uid = ?")
        args.append(uid)
    if states:
        states = list(states)
        clauses.append(f"state IN ({','.join('?' * len(states))})")
        args += states
    return _attempt_rows(db, f"WHERE {' AND '.join(clauses)}" if clauses else "", args)


def active_attempts(db: Database) -> list[AttemptRow]:
    """Attempts pending or running: what a console re-attaches to."""
    return attempts(db, states=ACTIVE_ATTEMPT_STATES)


def _attempt_rows(db: Database, where: str, args: list) -> list[AttemptRow]:
    return [_decode_attempt(row) for row in _dicts(db, f"SELECT * FROM attempts {where} ORDER BY id", args)]


def _decode_attempt(row: dict) -> AttemptRow:
    """An attempts row with its JSON columns (``handle``, ``status``) decoded: the one place that does it."""
    row["handle"] = json.loads(row["handle"]) if row["handle"] else None
    row["status"] = json.loads(row["status"]) if row["status"] else None
    return row


_ATTEMPT_COLUMNS = ("state", "stage", "handle", "work_dir", "started_at", "heartbeat_at", "ended_at",
                    "exit_code", "peak_mem_gb", "category", "signature", "decisive_line", "excerpt", "status",
                    "triage_rules", "peak_scratch_gb")


def update_attempt(db: Database, attempt_id: int, now: float, **changes) -> bool:
    """Write what changed of an attempt; state and stage changes become events. True if anything changed.

    The data set's own state is not touched: the engine moves it (accepted,
    queued again, held) when it has decided what the attempt's end means.
    """
    unknown = set(changes) - set(_ATTEMPT_COLUMNS)
    if unknown:
        raise ValueError(f"not attempt columns: {sorted(unknown)}")
    for key in ("handle", "status"):
        if key in changes and changes[key] is not None and not isinstance(changes[key], str):
            changes[key] = json.dumps(changes[key], sort_keys=True)
    with transaction(db, immediate=True):
        row = db.conn.execute(f"SELECT uid, node, {', '.join(_ATTEMPT_COLUMNS)} FROM attempts WHERE id = ?",
                              (attempt_id,)).fetchone()
        if row is None:
            raise ValueError(f"no attempt {attempt_id}")
        uid, node = row[0], row[1]
        old = dict(zip(_ATTEMPT_COLUMNS, row[2:]))
        diff = {k: v for k, v in changes.items() if old[k] != v}
        if not diff:
            return False
        sets = ", ".join(f"{k} = ?" for k in diff)
        db.conn.execute(f"UPDATE attempts SET {sets} WHERE id = ?", (*diff.values(), attempt_id))
        if "state" in diff:
            detail = {k: diff.get(k, old[k]) for k in ("category", "signature", "exit_code") if diff.get(k, old[k])}
            record_event(db, "attempt", now, uid=uid, attempt_id=attempt_id, node=node,
                         old=old["state"], new=diff["state"], detail=detail or None)
        if "stage" in diff:
            record_event(db, "stage", now, uid=uid, attempt_id=attempt_id, node=node,
                         old=old["stage"], new=diff["stage"])
        return True


# -- log offsets and mirrors ------------------------------------------------------

def log_offsets(db: Database, attempt_id: int) -> dict[str, int]:
    """path -> bytes already mirrored, for one attempt's logs."""
    return dict(db.conn.execute("SELECT path, offset FROM log_offsets WHERE attempt_id = ?",
                                (attempt_id,)).fetchall())


def set_log_offset(db: Database, attempt_id: int, path: str, offset: int, mirror: str) -> None:
    """Remember how far a log has been mirrored (call after the bytes are on disk)."""
    db.conn.execute(
        "INSERT INTO log_offsets (attempt_id, path, offset, mirror) VALUES (?,?,?,?)"
        " ON CONFLICT(attempt_id, path) DO UPDATE SET offset = excluded.offset, mirror = excluded.mirror",
        (attempt_id, path, offset, mirror))


def log_mirrors(db: Database, attempt_id: int) -> list[dict]:
    """The local mirrors of one attempt's logs (path on the node, mirror path, bytes)."""
    return _dicts(db, "SELECT path, mirror, offset FROM log_offsets WHERE attempt_id = ? ORDER BY path",
                  [attempt_id])


# -- products, acceptance and QA2 ---------------------------------------------------

def add_products(db: Database, attempt_id: int, uid: str, products: Iterable[dict]) -> None:
    """Record an attempt's fetched products ({path, kind, sha256, size})."""
    with transaction(db, immediate=True):
        db.conn.execute("DELETE FROM products WHERE attempt_id = ?", (attempt_id,))
        for p in products:
            db.conn.execute("INSERT INTO products (attempt_id, uid, path, kind, sha256, size) VALUES (?,?,?,?,?,?)",
                            (attempt_id, uid, p["path"], p.get("kind"), p.get("sha256"), p.get("size")))


def products(db: Database, attempt_id: int) -> list[dict]:
    return _dicts(db, "SELECT * FROM products WHERE attempt_id = ? ORDER BY path", [attempt_id])


def accept_attempt(db: Database, uid: str, attempt_id: int, now: float, reason: str | None = None) -> None:
    """Make ``attempt_id`` the one delivered attempt of ``uid`` (the data set succeeds, ``reason`` says how)."""
    with transaction(db, immediate=True):
        old = db.conn.execute("SELECT accepted_attempt FROM datasets WHERE uid = ?", (uid,)).fetchone()
        db.conn.execute("UPDATE datasets SET accepted_attempt = ?, updated_at = ? WHERE uid = ?",
                        (attempt_id, now, uid))
        record_event(db, "accepted", now, uid=uid, attempt_id=attempt_id,
                     old=str(old[0]) if old and old[0] else None, new=str(attempt_id))
        set_dataset_state(db, uid, "succeeded", now, reason=reason)


def unaccept_attempt(db: Database, uid: str, now: float, reason: str, note: str | None = None) -> dict:
    """Take back the delivery of ``uid``: its accepted attempt waits in ``review`` again.

    The attempt delivered before it (the accept's ``old``) is delivered again, or none is; the
    attempt, its products and QA2 verdicts stay. An ``unaccepted`` event keeps what the accept
    was (its time, the data set's reason then, the operator's note, if any). Returns
    ``{attempt, accepted_at, was, restored}``; a ``ValueError`` when nothing is accepted.
    """
    with transaction(db, immediate=True):
        row = db.conn.execute("SELECT accepted_attempt, reason FROM datasets WHERE uid = ?", (uid,)).fetchone()
        if row is None or row[0] is None:
            raise ValueError(f"{uid}: no accepted attempt")
        attempt_id, was = row
        accepted = db.conn.execute("SELECT old, ts FROM events WHERE uid = ? AND kind = 'accepted' AND new = ?"
                                   " ORDER BY id DESC LIMIT 1", (uid, str(attempt_id))).fetchone()
        restored = int(accepted[0]) if accepted and accepted[0] else None
        took_back = {"attempt": attempt_id, "accepted_at": accepted[1] if accepted else None, "was": was,
                     "restored": restored}
        db.conn.execute("UPDATE datasets SET accepted_attempt = ?, updated_at = ? WHERE uid = ?",
                        (restored, now, uid))
        record_event(db, "unaccepted", now, uid=uid, attempt_id=attempt_id, old=str(attempt_id),
                     new=None if restored is None else str(restored),
                     detail={k: v for k, v in (*took_back.items(), ("note", note)) if v is not None})
        uncalibrated = db.conn.execute("SELECT COUNT(*) FROM events WHERE attempt_id = ? AND kind = 'uncalibrated'",
                                       (attempt_id,)).fetchone()[0] > 0
        record_event(db, "review", now, uid=uid, attempt_id=attempt_id, new=str(attempt_id),
                     detail={"reason": reason, "uncalibrated": uncalibrated, "unaccepted": True})
        set_dataset_state(db, uid, "review", now, reason=reason)
    return took_back


def send_to_review(db: Database, uid: str, attempt_id: int, now: float, reason: str,
                   uncalibrated: bool = False) -> None:
    """Put ``attempt_id``'s products before an operator: the data set waits in ``review``.

    The accepted attempt (if an earlier one was) stays delivered until this one is accepted.
    """
    with transaction(db, immediate=True):
        record_event(db, "review", now, uid=uid, attempt_id=attempt_id, new=str(attempt_id),
                     detail={"reason": reason, "uncalibrated": uncalibrated})
        if uncalibrated:
            record_event(db, "uncalibrated", now, uid=uid, attempt_id=attempt_id,
                         detail={"reason": "an override skipped calibration (caltables=[])"})
        set_dataset_state(db, uid, "review", now, reason=reason)


def review_attempt(db: Database, uid: str) -> dict | None:
    """The attempt waiting for an operator's QA2 decision (the last one sent to review), or None."""
    row = db.conn.execute("SELECT attempt_id, detail FROM events WHERE uid = ? AND kind = 'review'"
                          " ORDER BY id DESC LIMIT 1", (uid,)).fetchone()
    if row is None or row[0] is None:
        return None
    found = attempt(db, row[0])
    if found is not None:
        found["review"] = json.loads(row[1]) if row[1] else {}
    return found


def uncalibrated_attempts(db: Database) -> set[int]:
    """Ids of the attempts whose products were made without calibration (an override skipped it)."""
    return {r[0] for r in db.conn.execute("SELECT attempt_id FROM events WHERE kind = 'uncalibrated'"
                                          " AND attempt_id IS NOT NULL")}


def save_qa2(db: Database, uid: str, attempt_id: int | None, pairs: Iterable[dict],
             rules_version: str | None = None) -> None:
    """Store an attempt's QA2 comparison (replacing an earlier one of the same attempt), each verdict
    with the version of the rules that made it (``qa2.compare.rules_version``)."""
    keys = ("pl", "qa2", "field", "spw", "specmode", "peak_ratio", "flux_ratio", "rms_ratio", "beam_ratio", "verdict")
    with transaction(db, immediate=True):
        db.conn.execute("DELETE FROM qa2_results WHERE uid = ? AND attempt_id IS ?", (uid, attempt_id))
        for pair in pairs:
            spw = pair.get("spw")
            values = [pair.get(k) if k != "spw" else (",".join(map(str, spw)) if isinstance(spw, (list, tuple)) else spw)
                      for k in keys]
            detail = json.dumps({k: v for k, v in pair.items() if k not in keys}, default=str)
            db.conn.execute(f"INSERT INTO qa2_results (uid, attempt_id, {', '.join(keys)}, detail, rules_version)"
                            f" VALUES (?,?,{','.join('?' * len(keys))},?,?)",
                            (uid, attempt_id, *values, detail, rules_version))


def discrepant_qa2_of(db: Database, uids: Iterable[str]) -> list[dict]:
    """The discrepant QA2 pairs of the data sets ``uids``, in one query (the attention view's reviews)."""
    return _qa2_rows(_dicts(db, "SELECT * FROM qa2_results WHERE uid IN (SELECT value FROM json_each(?))"
                                " AND verdict = 'discrepant' ORDER BY uid, id", [json.dumps(list(uids))]))


def qa2_results(db: Database, uid: str | None = None) -> list[dict]:
    """Stored QA2 pairs, discrepant first."""
    where, args = ("WHERE uid = ?", [uid]) if uid else ("", [])
    return _qa2_rows(_dicts(db, f"SELECT * FROM qa2_results {where} ORDER BY verdict = 'consistent', uid, id", args))


def _qa2_rows(rows: list[dict]) -> list[dict]:
    """QA2 rows with their ``detail`` JSON decoded."""
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return rows


# -- node state ------------------------------------------------------------------------

def set_node_probe(db: Database, name: str, now: float, probe: dict | None = None,
                   error: str | None = None) -> None:
    """Record a probe of a node: its values and time, or the error (the old values then go stale)."""
    if probe is not None:
        db.conn.execute("UPDATE nodes SET probe = ?, probed_at = ?, probe_error = NULL WHERE name = ?",
                        (json.dumps(probe), now, name))
    else:
        db.conn.execute("UPDATE nodes SET probe_error = ? WHERE name = ?", (error, name))


def set_drained(db: Database, name: str, drained: bool, now: float, reason: str | None = None) -> None:
    """Drain a node (no new attempts) with the reason shown, or undrain it."""
    with transaction(db, immediate=True):
        row = db.conn.execute("SELECT drained FROM nodes WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UserError(f'no node "{name}" in this campaign — see `ari nodes list`')
        if bool(row[0]) == drained:
            return
        db.conn.execute("UPDATE nodes SET drained = ?, drained_reason = ?, updated_at = ? WHERE name = ?",
                        (int(drained), reason if drained else None, now, name))
        record_event(db, "drain" if drained else "undrain", now, node=name, detail={"reason": reason} if reason else None)


def set_overrides(db: Database, uid: str, now: float, **overrides) -> dict:
    """Merge overrides (mem_gb, walltime_h, hours, node, casa_version, params, not_before) for the next attempt.

    A key given as None is removed (e.g. ``node=None`` lifts a pin).
    """
    with transaction(db, immediate=True):
        row = db.conn.execute("SELECT overrides FROM datasets WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise UserError(f"{uid}: no such data set in this campaign — see `ari datasets list`")
        merged = {**json.loads(row[0]), **overrides}
        merged = {k: v for k, v in merged.items() if v is not None}
        db.conn.execute("UPDATE datasets SET overrides = ?, updated_at = ? WHERE uid = ?",
                        (json.dumps(merged, sort_keys=True), now, uid))
        record_event(db, "overrides", now, uid=uid, detail=merged)
        return merged


def finished_history(db: Database, limit: int | None = None) -> list[dict]:
    """Finished attempts with the data set's size: what runtime and memory predictions learn from.

    ``limit``: only the newest that many (in id order still).
    """
    rows = _dicts(db, "SELECT a.uid, a.node, a.state, a.category, a.started_at, a.ended_at, a.peak_mem_gb,"
                      " a.peak_scratch_gb, a.mem_gb, a.walltime_h, d.size_gb, d.array, d.band, d.n_spw, d.n_chan, d.is_mosaic, d.n_eb,"
                      " d.archive_hours, d.archive_mem_gb"
                      " FROM attempts a"
                      " JOIN datasets d ON d.uid = a.uid"
                      " WHERE a.state IN ('succeeded','failed') AND a.started_at IS NOT NULL"
                      " AND a.ended_at IS NOT NULL ORDER BY a.id" + (" DESC LIMIT ?" if limit else ""),
                  [limit] if limit else [])
    return rows[::-1] if limit else rows


# -- status ------------------------------------------------------------------

def status(db: Database) -> dict:
    """Campaign totals by state, per-node state and running attempts, from one snapshot
    (``readmodel.status_report`` adds the success rates)."""
    with transaction(db):
        totals = counts(db)
        running = _dicts(
            db,
            "SELECT id, uid, node, state, stage, started_at, heartbeat_at FROM attempts"
            " WHERE state IN ('pending','running') ORDER BY started_at, id",
        )
        node_rows = nodes(db)
        by = tally(db)
    tried = sum(n for (_, outcome), n in by.items() if outcome)
    first_ok = sum(n for (_, outcome), n in by.items() if outcome == "succeeded")
    ok = sum(n for (state, outcome), n in by.items() if outcome and state == "succeeded")
    return {"datasets": sum(totals.values()), "totals": totals, "nodes": node_rows, "running": running,
            "success_first_try": round(first_ok / tried, 4) if tried else None,
            "success_after_retries": round(ok / tried, 4) if tried else None}


def tried_attempts(db: Database, states: Iterable[str]) -> list[dict]:
    """The attempts in ``states`` with what rates and runtimes need, in id order (``readmodel.stats``)."""
    states = list(states)
    return _dicts(db, "SELECT id, uid, node, state, category, started_at, ended_at FROM attempts"
                      f" WHERE state IN ({','.join('?' * len(states))}) ORDER BY id", states)


def uids_in_state(db: Database, state: str) -> set[str]:
    """The uids of the data sets in ``state``."""
    return {r[0] for r in db.conn.execute("SELECT uid FROM datasets WHERE state = ?", (state,))}


# -- helpers -----------------------------------------------------------------

def _dicts(db: Database, sql: str, args: Iterable = ()) -> list[dict]:
    cur = db.conn.execute(sql, list(args))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def now() -> float:
    """The wall clock, for callers at the edges (CLI, engine) to pass in."""
    return time.time()


# -- report ------------------------------------------------------------------------

def events_of_kinds(db: Database, kinds: Iterable[str]) -> list[dict]:
    """Every event of the given kinds, oldest first (the report's state history and operator actions).

    >>> db = open_db(":memory:"); record_event(db, "retry", 5.0, uid="u"); record_event(db, "stage", 6.0)
    >>> [(e["ts"], e["kind"]) for e in events_of_kinds(db, ["retry"])]
    [(5.0, 'retry')]
    """
    kinds = list(kinds)
    rows = _dicts(db, f"SELECT * FROM events WHERE kind IN ({','.join('?' * len(kinds))}) ORDER BY ts, id", kinds)
    for row in rows:
        row["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return rows


def deliveries(db: Database) -> list[dict]:
    """Data sets with an accepted attempt: uid, queued at (``created_at``), the accepted attempt's id and ``ended_at``.

    >>> deliveries(open_db(":memory:"))
    []
    """
    return _dicts(db, "SELECT d.uid, d.created_at, a.id AS attempt_id, a.ended_at FROM datasets d"
                      " JOIN attempts a ON a.id = d.accepted_attempt"
                      " WHERE d.state != 'excluded' ORDER BY d.created_at, d.uid")


def product_bytes(db: Database) -> dict[str, int]:
    """Bytes of fetched products on the console's disk: all of them, and those of accepted attempts.

    >>> product_bytes(open_db(":memory:"))
    {'all': 0, 'accepted': 0}
    """
    total, accepted = db.conn.execute(
        "SELECT COALESCE(SUM(p.size), 0),"
        " COALESCE(SUM(CASE WHEN d.accepted_attempt = p.attempt_id THEN p.size END), 0)"
        " FROM products p LEFT JOIN datasets d ON d.uid = p.uid").fetchone()
    return {"all": int(total), "accepted": int(accepted)}
