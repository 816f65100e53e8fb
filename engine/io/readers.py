"""Streaming input readers with line numbers in every error.

Readers never hold the whole input: they yield records one at a time. A line that
cannot be decoded does not stop the run; it is yielded as a :class:`BadInput` so the
scheduler can write it to the failed shard with its file and line. Only a file that
cannot be opened at all raises.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from ..errors import InputError
from ..records import BadInput, Item

__all__ = ("MAX_LINE_BYTES", "check_readable", "fingerprint", "read_jsonl")

MAX_LINE_BYTES = 8 * 1024 * 1024


def fingerprint(path: Path) -> str:
    """A cheap identity of an input file or directory.

    A file: its size and a hash of its first and last MiB. A directory (a corpus, a
    taxonomy): every regular file under it, in sorted order, by relative path, size and a
    hash of its first and last 64 KiB, so adding, removing or editing a file changes it.

    Raises:
        InputError: the input cannot be read.
    """
    try:
        if path.is_dir():
            h = hashlib.blake2b(digest_size=12)
            count = 0
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(str(file.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
                h.update(_head_tail(file, 1 << 16))
                count += 1
            return f"{path.name}/:{count} files:{h.hexdigest()}"
        size = path.stat().st_size
        return f"{path.name}:{size}:{hashlib.blake2b(_head_tail(path, 1 << 20), digest_size=12).hexdigest()}"
    except OSError as exc:
        raise InputError(f"cannot read input ({exc.strerror or exc})", path=str(path)) from exc


def _head_tail(path: Path, chunk: int) -> bytes:
    """Size, then the first and (for big files) last ``chunk`` bytes of ``path``."""
    size = path.stat().st_size
    with path.open("rb") as f:
        data = f.read(chunk)
        if size > 2 * chunk:
            f.seek(size - chunk)
            data += f.read(chunk)
    return str(size).encode() + b"\0" + data


def check_readable(path: Path, *, directory_ok: bool = True) -> None:
    """Raise :class:`InputError` unless ``path`` is a readable file (or directory, if allowed)."""
    if not path.exists():
        raise InputError("input not found (check run.input)", path=str(path))
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


def read_jsonl(
    path: Path, *, required: tuple[str, ...] = (), max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Item | BadInput]:
    """Yield each non-blank line of a JSONL file as an Item (or a BadInput).

    Args:
        path: the file.
        required: keys each record must have (string values).
        max_line_bytes: longer lines are rejected as BadInput.

    Raises:
        InputError: the file cannot be opened.
    """
    check_readable(path, directory_ok=False)
    name = path.name
    index = 0
    try:
        f = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot open input ({exc.strerror or exc})", path=str(path)) from exc
    with f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            source = f"{name}:{lineno}"
            key = f"line-{lineno}"
            reason: str | None = None
            data: object = None
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
                    yield Item(index=index, key=key, data=data, source=source)
                    index += 1
                    continue
            yield BadInput(
                index=index, key=key, source=source, reason=reason or "unreadable record"
            )
            index += 1
