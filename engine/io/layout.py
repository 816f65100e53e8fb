"""An output directory's file layout: shard names, what a scan finds, committed rows.

:mod:`engine.io.shards` writes the directory; this module names and finds its files
(final shards, partials, orphans a crash left, strangers another program put there) and
reads committed rows back (:func:`iter_rows`), for the engine, methods and tools alike.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import ShardError
from .manifest import MANIFEST_NAME, Manifest, load_manifest, os_error

__all__ = (
    "CORRUPT_HINT",
    "KINDS",
    "PARTIAL_SUFFIX",
    "PATH_HINT",
    "SHARD_RE",
    "delete_files",
    "is_output_name",
    "iter_rows",
    "prepare_dir",
    "scan",
    "shard_name",
    "unlisted",
)

KINDS: tuple[str, ...] = ("kept", "rejected", "failed")
PARTIAL_SUFFIX = ".partial"

SHARD_RE = re.compile(r"^(kept|rejected|failed)-(\d{5,})\.jsonl$")
PARTIAL_RE = re.compile(r"^(kept|rejected|failed)-(\d{5,})\.jsonl\.partial$")
PATH_HINT = "check the output path and its permissions"
CORRUPT_HINT = (
    "run again with --force-new: it discards the shards and the manifest but keeps "
    "OUT/cache.sqlite, so every response already paid for replays for free"
)


def shard_name(kind: str, index: int) -> str:
    """The final file name of shard ``index`` of ``kind``, e.g. ``kept-00007.jsonl``."""
    return f"{kind}-{index:05d}.jsonl"


def prepare_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not out_dir.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(out_dir))
        probe = out_dir / f".write-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        detail = exc.strerror or str(exc)
        raise ShardError(
            f"output directory is not writable ({detail})", path=str(out_dir), hint=PATH_HINT
        ) from exc


def scan(out_dir: Path) -> tuple[list[str], list[str]]:
    """Names of final shard files and of leftover partial/temporary files in ``out_dir``."""
    shards: list[str] = []
    partials: list[str] = []
    try:
        names = sorted(os.listdir(out_dir))
    except OSError as exc:
        raise os_error(exc, out_dir, "list the output directory") from exc
    for name in names:
        if SHARD_RE.match(name):
            shards.append(name)
        elif PARTIAL_RE.match(name) or name == MANIFEST_NAME + ".tmp":
            partials.append(name)
    return shards, partials


def is_output_name(name: str) -> bool:
    """Whether ``name`` is one the output uses for its shards, partials or manifest."""
    return bool(
        SHARD_RE.match(name)
        or PARTIAL_RE.match(name)
        or name in (MANIFEST_NAME, MANIFEST_NAME + ".tmp")
    )


def unlisted(manifest: Manifest, shards: Sequence[str]) -> tuple[list[str], list[str]]:
    """Shard files the manifest does not list: crash orphans and strangers.

    An orphan is numbered after every listed shard of its kind (renamed by a run that
    died before the manifest that would list it was written): this output's own, safe to
    delete. Every other unlisted shard file was not written by this output's runs.
    """
    next_index: dict[str, int] = {}
    for info in manifest.shards:
        m = SHARD_RE.match(info.name)
        if m:
            next_index[m.group(1)] = max(next_index.get(m.group(1), 0), int(m.group(2)) + 1)
    listed = {info.name for info in manifest.shards}
    orphans: list[str] = []
    strangers: list[str] = []
    for name in shards:
        if name in listed:
            continue
        m = SHARD_RE.match(name)
        if m and int(m.group(2)) >= next_index.get(m.group(1), 0):
            orphans.append(name)
        else:
            strangers.append(name)
    return orphans, strangers


def delete_files(out_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        path = out_dir / name
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise os_error(exc, path, "delete a stale file") from exc


def iter_rows(out_dir: Path, kind: str) -> Iterator[dict[str, Any]]:
    """Yield the committed rows of ``kind``, shard by shard in the manifest's order.

    Uncommitted (partial) and unlisted shard files are ignored. Nothing is yielded
    when the directory has no manifest.

    Raises:
        ShardError: the manifest or a listed shard cannot be read or decoded.
    """
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    if manifest is None:
        return
    for shard in manifest.shards:
        if shard.kind != kind:
            continue
        path = out_dir / shard.name
        try:
            with path.open("rb") as f:
                for lineno, line in enumerate(f, 1):
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise ShardError(
                            f"line {lineno} is not valid JSON ({exc})",
                            path=str(path),
                            hint=CORRUPT_HINT,
                        ) from exc
                    yield row
        except OSError as exc:
            raise os_error(exc, path, "read shard") from exc
