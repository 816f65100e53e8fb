"""Derived datasets: files a method writes from the committed rows once a run is complete
(SELF-GUIDE's class-balanced set, LAB's phase splits and mixed training sets).

Written like shards (temporary name, fsync, rename), so a crash never leaves a torn
derived file; rewriting one is idempotent, so finalizing again after a crash is safe.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec
import orjson

from ..errors import ShardError

__all__ = ("DerivedFile", "write_jsonl_atomic")


class DerivedFile(msgspec.Struct, kw_only=True):
    """A derived file as recorded in the manifest."""

    name: str
    rows: int
    bytes: int
    sha256: str


def write_jsonl_atomic(path: Path, rows: Iterable[Mapping[str, object]]) -> DerivedFile:
    """Write ``rows`` as JSONL to ``path`` atomically; return its name, counts and checksum.

    Raises:
        ShardError: the file cannot be written.
    """
    tmp = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    count = 0
    size = 0
    try:
        with tmp.open("wb") as f:
            for row in rows:
                line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
                f.write(line)
                digest.update(line)
                size += len(line)
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ShardError(
            f"cannot write derived file ({exc.strerror or exc})",
            path=str(path),
            hint="check free disk space",
        ) from exc
    return DerivedFile(name=path.name, rows=count, bytes=size, sha256=digest.hexdigest())
