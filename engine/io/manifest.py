"""The output manifest: which shards count, which items are done, and how the run ended.

``manifest.json`` is the single source of truth of an output directory. A shard file
that it does not list does not exist as far as resume is concerned, and an item is done
only when a manifest written after the item's rows says so. The done set is stored as a
watermark plus the sorted done indices above it (:class:`DoneSet`), so the manifest
stays O(window) in size however long the run.

The manifest is always replaced atomically: written to ``manifest.json.tmp``, fsynced,
renamed over ``manifest.json``, and the directory fsynced.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import msgspec

from ..errors import ShardError

__all__ = (
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "DoneSet",
    "DoneState",
    "Manifest",
    "Opener",
    "ShardInfo",
    "fsync_dir",
    "load_manifest",
    "os_error",
    "utc_now",
    "verify_shards",
    "write_manifest",
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

Opener = Callable[[str, int], int]
"""The ``opener`` argument of :func:`open`: ``(path, flags) -> file descriptor``.

It is the file-system seam of this package: tests pass one that fails like a full disk.
"""

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_CORRUPT_HINT = (
    "move everything but cache.sqlite out of OUT (or start a new output directory and copy "
    "OUT/cache.sqlite into it), then run again: every response already paid for replays "
    "from the cache for free"
)
_CHUNK = 1 << 20


class ShardInfo(msgspec.Struct, kw_only=True):
    """One committed shard file.

    Attributes:
        name: file name inside the output directory, e.g. ``kept-00003.jsonl``.
        kind: ``kept``, ``rejected`` or ``failed``.
        rows: number of rows (lines).
        bytes: size of the file in bytes.
        sha256: hex SHA-256 of the file's contents.
    """

    name: str
    kind: str
    rows: _NonNegative
    bytes: _NonNegative
    sha256: str


class DoneState(msgspec.Struct, kw_only=True):
    """The serialized form of a :class:`DoneSet`.

    Attributes:
        watermark: every item index below it is done.
        extra: sorted done indices at or above the watermark.
    """

    watermark: _NonNegative = 0
    extra: list[_NonNegative] = []


class Manifest(msgspec.Struct, kw_only=True):
    """Contents of ``manifest.json``.

    Attributes:
        format: manifest format version.
        engine_version: version of synth-engine that wrote the output.
        complete: every item is done and the run ended normally.
        simulated: the rows came from the simulated endpoint.
        config_hash: content hash of the config that produced the output.
        input_fingerprint: opaque identity of the input (set by the caller).
        method: the generation method's name.
        started_at: ISO-8601 UTC time the output was started.
        updated_at: ISO-8601 UTC time of the last commit.
        ended_at: ISO-8601 UTC time the last run closed the output, if it did.
        shards: the committed shards, in commit order.
        totals: committed rows per kind, plus ``items`` (committed items).
        done: the committed items.
        usage: token usage per endpoint (set by the caller; opaque here).
        stop_reason: why the last run stopped early, if it did.
        extra: free-form metadata, e.g. versions.
    """

    format: int = MANIFEST_FORMAT
    engine_version: str
    complete: bool = False
    simulated: bool = False
    config_hash: str
    input_fingerprint: str
    method: str
    started_at: str
    updated_at: str
    ended_at: str | None = None
    shards: list[ShardInfo] = []
    totals: dict[str, int] = {}
    done: DoneState = msgspec.field(default_factory=DoneState)
    usage: dict[str, dict[str, int]] = {}
    stop_reason: str | None = None
    extra: dict[str, object] = {}


class DoneSet:
    """Done item indices as a watermark plus the sorted done indices above it.

    Items finish out of order only within a bounded window, so ``extra`` stays about
    as long as that window while ``watermark`` absorbs everything behind it.
    """

    __slots__ = ("_extra", "_watermark")

    def __init__(self, watermark: int = 0, extra: Iterable[int] = ()) -> None:
        """Build a done set; ``extra`` may be unsorted and overlap the watermark.

        Raises:
            ValueError: a negative watermark or index.
        """
        if watermark < 0:
            raise ValueError(f"watermark must be >= 0, got {watermark}")
        self._watermark = watermark
        self._extra: list[int] = []
        for index in sorted(set(extra)):
            if index < 0:
                raise ValueError(f"item index must be >= 0, got {index}")
            if index >= watermark:
                self._extra.append(index)
        self._advance()

    @classmethod
    def from_state(cls, state: DoneState) -> DoneSet:
        """The done set a manifest recorded."""
        return cls(state.watermark, state.extra)

    def to_state(self) -> DoneState:
        """The serializable form, for the manifest."""
        return DoneState(watermark=self._watermark, extra=list(self._extra))

    def copy(self) -> DoneSet:
        """An independent copy."""
        new = DoneSet.__new__(DoneSet)
        new._watermark = self._watermark
        new._extra = list(self._extra)
        return new

    @property
    def watermark(self) -> int:
        """Every index below it is done."""
        return self._watermark

    @property
    def extra(self) -> list[int]:
        """Sorted done indices above the watermark (a copy)."""
        return list(self._extra)

    @property
    def count(self) -> int:
        """Number of done items."""
        return self._watermark + len(self._extra)

    def add(self, index: int) -> None:
        """Mark ``index`` done (idempotent).

        Raises:
            ValueError: ``index`` is negative.
        """
        if index < 0:
            raise ValueError(f"item index must be >= 0, got {index}")
        if index < self._watermark:
            return
        pos = bisect.bisect_left(self._extra, index)
        if pos < len(self._extra) and self._extra[pos] == index:
            return
        self._extra.insert(pos, index)
        if pos == 0:
            self._advance()

    def _advance(self) -> None:
        run = 0
        for index in self._extra:
            if index != self._watermark + run:
                break
            run += 1
        if run:
            self._watermark += run
            del self._extra[:run]

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or index < 0:
            return False
        if index < self._watermark:
            return True
        pos = bisect.bisect_left(self._extra, index)
        return pos < len(self._extra) and self._extra[pos] == index

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DoneSet):
            return NotImplemented
        return self._watermark == other._watermark and self._extra == other._extra

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DoneSet(watermark={self._watermark}, extra={self._extra!r})"


def utc_now() -> str:
    """The current time as ISO-8601 UTC with millisecond precision, e.g. ``...T12:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def os_error(exc: OSError, path: Path, action: str) -> ShardError:
    """Map an OSError met while ``action`` (e.g. "write shard") on ``path`` to a ShardError."""
    detail = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "the disk is full: free some space and rerun the same command to resume"
    else:
        hint = "check the output path and its permissions"
    return ShardError(f"cannot {action} ({detail})", path=str(path), hint=hint)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames inside it survive a power loss.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        # Some platforms refuse to open directories; the rename is still atomic there.
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        # Directory fsync is unsupported on some file systems; that is not a write failure.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Manifest)


def load_manifest(out_dir: Path) -> Manifest | None:
    """Read ``OUT/manifest.json``.

    Returns:
        The manifest, or None when the directory has none.

    Raises:
        ShardError: the manifest cannot be read, does not decode, or has an unknown format.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise os_error(exc, path, "read the manifest") from exc
    try:
        manifest = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise ShardError(f"corrupt manifest ({exc})", path=str(path), hint=_CORRUPT_HINT) from exc
    if manifest.format != MANIFEST_FORMAT:
        raise ShardError(
            f"manifest format {manifest.format} is not supported (expected {MANIFEST_FORMAT})",
            path=str(path),
            hint=_CORRUPT_HINT,
        )
    return manifest


def write_manifest(out_dir: Path, manifest: Manifest, *, opener: Opener | None = None) -> None:
    """Atomically replace ``OUT/manifest.json`` with ``manifest``.

    Args:
        out_dir: the output directory.
        manifest: what to write.
        opener: file-system seam passed to :func:`open` (tests inject failures).

    Raises:
        ShardError: the manifest cannot be written; the previous one is left intact.
    """
    out_dir = Path(out_dir)
    final = out_dir / MANIFEST_NAME
    tmp = out_dir / (MANIFEST_NAME + ".tmp")
    data = msgspec.json.format(_ENCODER.encode(manifest), indent=2) + b"\n"
    try:
        with open(str(tmp), "wb", opener=opener) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(out_dir)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise os_error(exc, final, "write the manifest") from exc


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def verify_shards(out_dir: Path, manifest: Manifest) -> list[str]:
    """Check every shard the manifest lists against the files on disk.

    Returns:
        One message per problem (a missing shard, or a row count, size or SHA-256 that
        differs from the manifest); empty when all is well.
    """
    out_dir = Path(out_dir)
    problems: list[str] = []
    for shard in manifest.shards:
        if not _valid_name(shard.name):
            problems.append(f"{shard.name!r}: not a plain file name")
            continue
        path = out_dir / shard.name
        h = hashlib.sha256()
        rows = 0
        size = 0
        try:
            with path.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    rows += chunk.count(b"\n")
                    size += len(chunk)
        except FileNotFoundError:
            problems.append(f"{shard.name}: listed in the manifest but missing")
            continue
        except OSError as exc:
            problems.append(f"{shard.name}: unreadable ({exc.strerror or exc})")
            continue
        if rows != shard.rows:
            problems.append(f"{shard.name}: {shard.rows} rows listed, {rows} found")
        elif size != shard.bytes:
            problems.append(f"{shard.name}: {shard.bytes} bytes listed, {size} found")
        elif h.hexdigest() != shard.sha256:
            problems.append(f"{shard.name}: SHA-256 differs from the manifest")
    return problems
