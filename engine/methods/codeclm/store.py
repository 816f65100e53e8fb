"""The metadata pool as a SQLite file in the output directory (``OUT/codeclm_pool.sqlite``).

:class:`SqlitePoolWriter` builds it from scratch on every ``prepare`` (the encodings replay
free from the response cache, so it comes out the same); nothing but counters stays in
memory. :class:`SqlitePoolReader` reads it with random access, and keeps the combinations
its own items took in a TEMP table of its connection, so two readers (two passes, or a
check and the run) each see the pool as built. :func:`refuse` records combinations the
judge refused (``metadata_check``) so that the next draw skips them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from ...errors import ShardError
from .pool import BATCH, FailedSeed, Metadata, sig

__all__ = ("POOL_NAME", "SqlitePoolReader", "SqlitePoolWriter", "pool_error", "refuse")

POOL_NAME = "codeclm_pool.sqlite"
"""The metadata pool's file in the output directory (rebuilt by every ``prepare``)."""

_SCHEMA = (
    "CREATE TABLE use_case (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
    " text TEXT NOT NULL, seed_id TEXT NOT NULL)",
    "CREATE TABLE skill (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, text TEXT NOT NULL)",
    "CREATE TABLE own (pos INTEGER PRIMARY KEY, metadata BLOB NOT NULL)",
    "CREATE TABLE own_sig (sig TEXT PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE failed (pos INTEGER PRIMARY KEY, row BLOB NOT NULL)",
    "CREATE TABLE seed_uc (pos INTEGER PRIMARY KEY, uc INTEGER NOT NULL)",
    "CREATE TABLE refused (sig TEXT PRIMARY KEY) WITHOUT ROWID",
)
_SELECT_USE_CASE = "SELECT id FROM use_case WHERE key = ?"
_INSERT_USE_CASE = "INSERT INTO use_case VALUES (?, ?, ?, ?)"
_SELECT_SKILL = "SELECT id FROM skill WHERE key = ?"
_INSERT_SKILL = "INSERT INTO skill VALUES (?, ?, ?)"
_CACHE_KIB = 2048  # SQLite page cache per connection (the pool itself stays on disk)
_json_encoder = msgspec.json.Encoder()
_own_decoder = msgspec.json.Decoder(Metadata)
_row_decoder = msgspec.json.Decoder(FailedSeed)

_Param = str | int | bytes
_Row = tuple[_Param, ...]


def pool_error(path: Path, exc: sqlite3.Error | OSError, action: str) -> ShardError:
    """The error of a pool file that cannot be created, written or read."""
    return ShardError(
        f"cannot {action} the CodecLM metadata pool ({exc})",
        path=str(path),
        hint="check free disk space; the pool is rebuilt from cached replies on the next run",
    )


class SqlitePoolWriter:
    """Builds the pool file from scratch; nothing but counters stays in memory.

    Raises:
        ShardError: the file cannot be created or written (from any method).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.own_count = self.failed_count = self.use_case_count = self.skill_count = 0
        self.seed_count = 0
        try:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise pool_error(path, exc, "create") from exc
        try:
            # The file is scratch, rebuilt on every run: no journal, no fsync.
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{_CACHE_KIB}"):
                self._db.execute(f"PRAGMA {pragma}")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            self._db.close()
            raise pool_error(path, exc, "create") from exc

    def _execute(self, sql: str, args: _Row) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise pool_error(self.path, exc, "write") from exc

    def _lookup(self, select: str, insert: str, key: str, values: _Row) -> int | None:
        """The id of ``key`` if it is known; else insert ``values`` and return None."""
        row = self._execute(select, (key,)).fetchone()
        if row is not None:
            return int(row[0])
        self._execute(insert, values)
        return None

    def use_case_id(self, key: str, text: str, seed_id: str) -> int:
        n = self.use_case_count
        found = self._lookup(_SELECT_USE_CASE, _INSERT_USE_CASE, key, (n, key, text, seed_id))
        if found is None:
            self.use_case_count += 1
            return n
        return found

    def skill_id(self, key: str, text: str) -> int:
        n = self.skill_count
        found = self._lookup(_SELECT_SKILL, _INSERT_SKILL, key, (n, key, text))
        if found is None:
            self.skill_count += 1
            return n
        return found

    def add_own(self, md: Metadata, sig: str) -> None:
        if self._execute("INSERT OR IGNORE INTO own_sig VALUES (?)", (sig,)).rowcount:
            self._execute(
                "INSERT INTO own VALUES (?, ?)", (self.own_count, _json_encoder.encode(md))
            )
            self.own_count += 1

    def add_seed(self, use_case: int) -> None:
        self._execute("INSERT INTO seed_uc VALUES (?, ?)", (self.seed_count, use_case))
        self.seed_count += 1

    def add_failed(self, row: FailedSeed) -> None:
        self._execute(
            "INSERT INTO failed VALUES (?, ?)", (self.failed_count, _json_encoder.encode(row))
        )
        self.failed_count += 1

    def finish(self) -> None:
        """Commit and close."""
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise pool_error(self.path, exc, "write") from exc
        finally:
            self._db.close()

    def abandon(self) -> None:
        """Close without committing (the next ``prepare`` rebuilds the file)."""
        self._db.close()


class SqlitePoolReader:
    """Reads a built pool file; taken combinations go to a private TEMP table.

    Raises:
        ShardError: the file cannot be opened or read (from any method).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise pool_error(path, exc, "open") from exc
        try:
            self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            self._db.execute("PRAGMA temp_store=FILE")
            self._db.execute("CREATE TEMP TABLE taken (sig TEXT PRIMARY KEY) WITHOUT ROWID")
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            self._db.close()
            raise pool_error(path, exc, "read") from exc
        self._pending = 0

    def _query(self, sql: str, args: _Row) -> list[_Row]:
        try:
            rows: list[_Row] = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise pool_error(self.path, exc, "read") from exc
        return rows

    def _blobs(self, sql: str, start: int, n: int) -> list[bytes]:
        blobs = []
        for (blob,) in self._query(sql, (start, n)):
            assert isinstance(blob, bytes)  # written as encoded JSON by the writer
            blobs.append(blob)
        return blobs

    def own(self, start: int, n: int) -> list[Metadata]:
        sql = "SELECT metadata FROM own WHERE pos >= ? ORDER BY pos LIMIT ?"
        return [_own_decoder.decode(blob) for blob in self._blobs(sql, start, n)]

    def use_case(self, i: int) -> tuple[str, str]:
        ((text, seed_id),) = self._query("SELECT text, seed_id FROM use_case WHERE id = ?", (i,))
        return str(text), str(seed_id)

    def skill(self, i: int) -> str:
        ((text,),) = self._query("SELECT text FROM skill WHERE id = ?", (i,))
        return str(text)

    def seed_use_case(self, i: int) -> int:
        ((uc,),) = self._query("SELECT uc FROM seed_uc WHERE pos = ?", (i,))
        assert isinstance(uc, int)
        return uc

    def taken(self, sig: str) -> bool:
        ((found,),) = self._query(
            "SELECT EXISTS (SELECT 1 FROM temp.taken WHERE sig = ?1)"
            " OR EXISTS (SELECT 1 FROM own_sig WHERE sig = ?1)"
            " OR EXISTS (SELECT 1 FROM refused WHERE sig = ?1)",
            (sig,),
        )
        return bool(found)

    def take(self, sig: str) -> None:
        try:
            self._db.execute("INSERT INTO temp.taken VALUES (?)", (sig,))
            self._pending += 1
            if self._pending >= BATCH:  # bounded transactions on the temp table
                self._db.execute("COMMIT")
                self._db.execute("BEGIN")
                self._pending = 0
        except sqlite3.Error as exc:
            raise pool_error(self.path, exc, "read") from exc

    def failed(self, start: int, n: int) -> list[FailedSeed]:
        sql = "SELECT row FROM failed WHERE pos >= ? ORDER BY pos LIMIT ?"
        return [_row_decoder.decode(blob) for blob in self._blobs(sql, start, n)]

    def close(self) -> None:
        """Close (the TEMP table goes with the connection)."""
        self._db.close()


def refuse(path: Path, refused: list[Metadata]) -> None:
    """Record refused combinations in the pool file (generation then draws again).

    Raises:
        ShardError: the file cannot be written.
    """
    if not refused:
        return
    try:
        db = sqlite3.connect(str(path), isolation_level=None)
        try:
            for md in refused:
                (uc,) = db.execute(
                    "SELECT id FROM use_case WHERE key = ?", (md.use_case.lower(),)
                ).fetchone()
                ids = [
                    db.execute("SELECT id FROM skill WHERE key = ?", (k.lower(),)).fetchone()[0]
                    for k in md.skills
                ]
                db.execute("INSERT OR IGNORE INTO refused VALUES (?)", (sig(uc, ids),))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise pool_error(path, exc, "write") from exc
