"""Replay store: request key -> response, in SQLite (WAL), written as responses arrive.

A key is the SHA-256 of the canonical JSON of everything that determines a reply: the
endpoint's model, the messages, the sampling parameters and the sample index. Rerunning
a config therefore replays every response already paid for, which is what makes resume
free and output deterministic.

Each put is its own transaction. In WAL mode with ``synchronous=NORMAL`` a committed
transaction survives the process being killed (it is in the OS page cache); only a power
loss may drop the last few, and those are re-requested, never half-read.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from ..errors import ShardError
from .wire import Usage

__all__ = ("CachedResponse", "ResponseCache", "copy_cache", "request_key")

_key_encoder = msgspec.json.Encoder(order="sorted")


class CachedResponse(msgspec.Struct, kw_only=True, array_like=True):
    """The part of a response the engine replays."""

    texts: list[str]
    finish_reasons: list[str | None]
    usage: Usage | None = None


_value_encoder = msgspec.msgpack.Encoder()
_value_decoder = msgspec.msgpack.Decoder(CachedResponse)


def request_key(
    model: str,
    messages: Sequence[Mapping[str, object]],
    params: Mapping[str, object],
    sample_index: int,
) -> bytes:
    """The cache key of one request (32 bytes).

    ``params`` are the sampling parameters sent (temperature, max_tokens, n,
    response_format, seed, extra params...); transport fields such as ``stream``
    must not be in it.
    """
    blob = _key_encoder.encode([model, messages, params, sample_index])
    return hashlib.sha256(blob).digest()


class ResponseCache:
    """A SQLite-backed response store.

    Args:
        path: the database file (created if missing).

    Raises:
        ShardError: the file cannot be opened or is not a cache database.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
            )
            self._db.execute("SELECT count(*) FROM responses LIMIT 1").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ShardError(
                f"response cache is unreadable ({exc})",
                path=str(path),
                hint="delete it to start the cache afresh; cached responses will be requested again",
            ) from exc
        self.hits = 0
        self.puts = 0

    def get(self, key: bytes) -> CachedResponse | None:
        """The stored response for ``key``, or None."""
        try:
            row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise ShardError(f"response cache read failed ({exc})", path=str(self.path)) from exc
        if row is None:
            return None
        try:
            value = _value_decoder.decode(row[0])
        except msgspec.DecodeError:
            return None  # an undecodable entry is a miss: it will be requested again
        self.hits += 1
        return value

    def put(self, key: bytes, value: CachedResponse) -> None:
        """Store ``value`` under ``key`` (replacing any earlier one), committed at once."""
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                (key, _value_encoder.encode(value)),
            )
        except sqlite3.DatabaseError as exc:
            raise ShardError(
                f"response cache write failed ({exc})",
                path=str(self.path),
                hint="check free disk space",
            ) from exc
        self.puts += 1

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def copy_cache(source: Path, target: Path) -> None:
    """Write a consistent copy of the cache at ``source`` to ``target`` (atomically).

    Uses SQLite's online backup through a connection of its own, so the store may be in
    use (by this process, WAL mode) meanwhile; the copy holds every response committed
    when it starts. It is written beside ``target`` and renamed into place, so a crash
    leaves either no ``target`` or a whole one. For the same host only: SQLite's WAL
    mode needs the writer's shared memory, which network filesystems do not share.

    Raises:
        ShardError: either file cannot be read or written.
    """
    tmp = target.with_name(target.name + ".partial")
    try:
        tmp.unlink(missing_ok=True)
        src = sqlite3.connect(str(source))
        try:
            dst = sqlite3.connect(str(tmp))
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        os.replace(tmp, target)
    except (sqlite3.Error, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ShardError(
            f"cannot copy the response cache to {target} ({exc})",
            path=str(source),
            hint="check free disk space and permissions",
        ) from exc
