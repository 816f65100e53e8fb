"""Streaming input readers with line numbers in every error.

Readers never hold the whole input: they yield records one at a time. A line that
cannot be decoded does not stop the run; it is yielded as a :class:`BadInput` so the
scheduler can write it to the failed shard with its file and line. Only a file that
cannot be opened at all raises.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import orjson

from ..errors import InputError
from ..records import BadInput, Item

__all__ = ("MAX_LINE_BYTES", "check_readable", "fingerprint", "read_jsonl")

MAX_LINE_BYTES = 8 * 1024 * 1024
_READ_CHUNK = 1 << 20


def fingerprint(path: Path) -> str:
    """The identity of an input file or directory: a SHA-256 of all of its content.

    A file: its size and the hash of every byte. A directory (a corpus, a taxonomy):
    every regular file under it, in sorted order, by relative path and content. Every edit
    anywhere, even one that keeps the size, changes it, so a resume never skips items
    computed from another input. Hashing runs at disk speed (about 1 GB/s here), small
    next to the requests a run makes per byte of input.

    Raises:
        InputError: the input cannot be read.
    """
    try:
        if path.is_dir():
            h = hashlib.sha256()
            count = 0
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(str(file.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
                with file.open("rb") as f:
                    h.update(hashlib.file_digest(f, "sha256").digest())
                count += 1
            return f"{path.name}/:{count} files:sha256:{h.hexdigest()[:32]}"
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return f"{path.name}:{size}:sha256:{digest[:32]}"
    except OSError as exc:
        raise InputError(f"cannot read input ({exc.strerror or exc})", path=str(path)) from exc


def check_readable(path: Path, *, directory_ok: bool = True) -> None:
    """Raise :class:`InputError` unless ``path`` is a readable file (or directory, if allowed)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                "input is a symbolic link that loops back on itself (check run.input)",
                path=str(path),
            ) from exc
        if exc.errno == errno.ENOENT:
            broken = os.path.islink(path)
            raise InputError(
                "input is a broken symbolic link (check run.input)"
                if broken
                else "input not found (check run.input)",
                path=str(path),
            ) from exc
        raise InputError(f"cannot read input ({exc.strerror or exc})", path=str(path)) from exc
    if path.is_dir():
        if not directory_ok:
            raise InputError("input is a directory, not a file (check run.input)", path=str(path))
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputError(
                "input directory is not readable (check its permissions)", path=str(path)
            )
        return
    if not path.is_file():
        raise InputError("input is not a regular file (check run.input)", path=str(path))
    if not os.access(path, os.R_OK):
        raise InputError("input file is not readable (check its permissions)", path=str(path))


class _SeenIds:
    """The ids read so far, on disk: memory stays flat however long the input.

    A private temporary SQLite database (deleted when closed), keyed by a 16-byte hash
    of the id, remembers the line where each id first appeared.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE ids (h BLOB PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    def first_line(self, key: str, line: int) -> int | None:
        """Record ``key`` at ``line``; return the earlier line if it was seen before."""
        h = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=16).digest()
        try:
            self._db.execute("INSERT INTO ids VALUES (?, ?)", (h, line))
        except sqlite3.IntegrityError:
            row = self._db.execute("SELECT line FROM ids WHERE h = ?", (h,)).fetchone()
            return int(row[0]) if row else 0
        return None

    def close(self) -> None:
        self._db.close()


def _lines(f: IO[bytes], limit: int) -> Iterator[tuple[int, bytes | int]]:
    """``(line number, line)`` for each line, or ``(line number, length)`` for a line
    over ``limit`` bytes, which is skipped without ever being held whole in memory."""
    lineno = 0
    while True:
        raw = f.readline(limit + 2)
        if not raw:
            return
        lineno += 1
        if len(raw) <= limit + 1 or raw.endswith(b"\n"):
            yield lineno, raw
            continue
        length = len(raw)
        while True:  # the rest of the over-long line, a chunk at a time
            rest = f.readline(_READ_CHUNK)
            length += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield lineno, length


def read_jsonl(
    path: Path,
    *,
    required: tuple[str, ...] = (),
    max_line_bytes: int = MAX_LINE_BYTES,
    duplicate_ids: Literal["fail", "refuse"] = "fail",
) -> Iterator[Item | BadInput]:
    """Yield each non-blank line of a JSONL file as an Item (or a BadInput).

    Args:
        path: the file.
        required: keys each record must have (string values).
        max_line_bytes: longer lines are rejected as BadInput (and never read whole).
        duplicate_ids: a record whose id (its ``id`` field, else ``line-N``) an earlier
            record already has: ``"fail"`` yields it as a BadInput naming the first
            occurrence; ``"refuse"`` raises InputError before anything is yielded.

    Raises:
        InputError: the file cannot be opened, or (``refuse``) holds a duplicate id.
    """
    check_readable(path, directory_ok=False)
    if duplicate_ids == "refuse":
        for record in _read(path, required, max_line_bytes):
            if isinstance(record, BadInput) and record.reason.startswith("duplicate id"):
                raise InputError(
                    f'{record.reason} (run.duplicate_ids = "refuse")',
                    path=str(path),
                    line=int(record.source.rsplit(":", 1)[1]),
                )
    yield from _read(path, required, max_line_bytes)


def _read(path: Path, required: tuple[str, ...], max_line_bytes: int) -> Iterator[Item | BadInput]:
    name = path.name
    index = 0
    try:
        f = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open input ({exc.strerror or exc})", path=str(path)) from exc
    seen = _SeenIds()
    try:
        with f:
            for lineno, raw in _lines(f, max_line_bytes):
                source = f"{name}:{lineno}"
                key = f"line-{lineno}"
                reason: str | None = None
                data: object = None
                if isinstance(raw, int):
                    reason = f"line is {raw} bytes, over the {max_line_bytes}-byte limit"
                else:
                    line = raw.strip()
                    if not line:
                        continue
                    if len(line) > max_line_bytes:
                        reason = f"line is {len(line)} bytes, over the {max_line_bytes}-byte limit"
                    else:
                        try:
                            data = orjson.loads(line)
                        except orjson.JSONDecodeError as exc:
                            reason = (
                                "not UTF-8"
                                if "utf-8" in str(exc).lower() or "surrogate" in str(exc).lower()
                                else f"not valid JSON ({exc})"
                            )
                if reason is None and not isinstance(data, dict):
                    reason = f"expected a JSON object, got {type(data).__name__}"
                if reason is None and isinstance(data, dict):
                    missing = [
                        k for k in required if not isinstance(data.get(k), str) or not data.get(k)
                    ]
                    if missing:
                        reason = f"missing or empty field(s): {', '.join(missing)}"
                    else:
                        rid = data.get("id")
                        if isinstance(rid, str | int) and str(rid):
                            key = str(rid)
                        first = seen.first_line(key, lineno)
                        if first is None:
                            yield Item(index=index, key=key, data=data, source=source)
                            index += 1
                            continue
                        reason = f"duplicate id {key[:80]!r} (first at line {first})"
                        key = f"line-{lineno}"
                # A bad line keeps its line-N key (ids must stay unique); that key is
                # recorded too, so a later record with the explicit id "line-N" is the
                # duplicate, whichever came first.
                if seen.first_line(key, lineno) is not None:
                    key = f"line-{lineno}#{index}"
                yield BadInput(
                    index=index, key=key, source=source, reason=reason or "unreadable record"
                )
                index += 1
    finally:
        seen.close()
