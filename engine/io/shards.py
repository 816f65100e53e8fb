"""Atomic JSONL shards: rows of an item go in together, a commit makes them durable.

Rows are appended to one open ``<kind>-NNNNN.jsonl.partial`` file per kind. A *commit*
flushes and fsyncs every open partial, renames it to its final name, fsyncs the
directory and then atomically rewrites ``manifest.json``, which lists the shard and
marks the items whose rows it holds as done. A crash at any point leaves at worst
``.partial`` files or renamed shards the manifest does not list; :meth:`ShardSink.open`
deletes both and the items they held are simply processed again.

A commit happens after an item whose rows fill a shard to ``shard_records`` (so an
item's rows never straddle a commit), after ``shard_records`` items without any
commit, on :meth:`ShardSink.commit`, and on :meth:`ShardSink.close`.

All writes are synchronous and meant to be called from one task on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn, TypedDict

import msgspec
import orjson

from ..clock import Clock, monotonic
from ..errors import OutputMismatch, ShardError
from .layout import (
    CORRUPT_HINT,
    KINDS,
    PARTIAL_SUFFIX,
    SHARD_RE,
    delete_files,
    is_output_name,
    iter_rows,
    prepare_dir,
    scan,
    shard_name,
    unlisted,
)
from .manifest import (
    MANIFEST_NAME,
    DoneSet,
    Manifest,
    Opener,
    ShardInfo,
    diff_keys,
    fsync_dir,
    load_manifest,
    os_error,
    utc_now,
    verify_shards,
    write_manifest,
)

__all__ = (
    "KINDS",
    "PARTIAL_SUFFIX",
    "ResumeState",
    "ShardSink",
    "iter_rows",
    "shard_name",
)

_BUFFERING = 256 * 1024


@dataclass(slots=True)
class ResumeState:
    """What :meth:`ShardSink.open` found in the output directory.

    Attributes:
        done: items committed by earlier runs (skip them); a copy, not the sink's own.
        resumed: an earlier run's manifest was found and is being continued.
        complete: that earlier run had completed; there is nothing left to do.
        discarded: names of files deleted because no manifest listed them (partial
            shards, orphans of a crash between rename and manifest write, or everything
            an overwritten output held when ``force_new`` was set).
    """

    done: DoneSet
    resumed: bool = False
    complete: bool = False
    discarded: list[str] = field(default_factory=list)


class _Carried(TypedDict):
    """What a ``--retry-failed`` rebuild keeps of the old manifest."""

    usage: dict[str, dict[str, int]]
    extra: dict[str, object]
    retried: int


class _OpenShard:
    __slots__ = ("bytes", "file", "index", "kind", "name", "partial", "rows", "sha")

    def __init__(self, kind: str, index: int, out_dir: Path, file: IO[bytes]) -> None:
        self.kind = kind
        self.index = index
        self.name = shard_name(kind, index)
        self.partial = out_dir / (self.name + PARTIAL_SUFFIX)
        self.file = file
        self.sha = hashlib.sha256()
        self.rows = 0
        self.bytes = 0


class ShardSink:
    """Writes item rows to rotating JSONL shards and commits them with the manifest.

    Build one with :meth:`open`, which also resumes an earlier run; the constructor
    only wires an already-prepared directory and manifest.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        shard_records: int = 1000,
        manifest: Manifest,
        on_commit: Callable[[Manifest], None] | None = None,
        clock: Clock = monotonic,
        opener: Opener | None = None,
        redact: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Wire a sink to ``out_dir`` whose committed state is ``manifest``.

        Args:
            out_dir: the output directory (must exist).
            shard_records: rows per shard before a commit.
            manifest: the committed state; new shards are numbered after its shards.
            on_commit: called with the manifest after every successful commit.
            clock: monotonic time, for commit timings.
            opener: file-system seam passed to :func:`open` for shards and manifest.
            redact: applied to each item's serialized rows of a kind before they are
                written (secrets out of every row).

        Raises:
            ValueError: ``shard_records`` is below 1.
        """
        if shard_records < 1:
            raise ValueError(f"shard_records must be >= 1, got {shard_records}")
        self._out_dir = Path(out_dir)
        self._shard_records = shard_records
        self._manifest = manifest
        self._on_commit = on_commit
        self._clock = clock
        self._opener = opener
        self._redact = redact
        self._done = DoneSet.from_state(manifest.done)
        self._totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._next_index: dict[str, int] = dict.fromkeys(KINDS, 0)
        for shard in manifest.shards:
            self._totals[shard.kind] = self._totals.get(shard.kind, 0) + shard.rows
            m = SHARD_RE.match(shard.name)
            if m and m.group(1) == shard.kind:
                self._next_index[shard.kind] = max(
                    self._next_index[shard.kind], int(m.group(2)) + 1
                )
        self._open: dict[str, _OpenShard] = {}
        self._pending: list[int] = []
        self._pending_set: set[int] = set()
        self._buffers: dict[str, bytearray] = {k: bytearray() for k in KINDS}
        self._closed = False
        self._failure: ShardError | None = None
        self.commits = 0
        self.commit_seconds = 0.0

    @classmethod
    def open(
        cls,
        out_dir: Path,
        *,
        shard_records: int,
        config_hash: str,
        input_fingerprint: str,
        method: str,
        engine_version: str,
        simulated: bool,
        force_new: bool = False,
        retry_failed: bool = False,
        config_content: Mapping[str, object] | None = None,
        protect: Sequence[Path] = (),
        redact: Callable[[bytes], bytes] | None = None,
        on_commit: Callable[[Manifest], None] | None = None,
        clock: Clock = monotonic,
        opener: Opener | None = None,
    ) -> tuple[ShardSink, ResumeState]:
        """Open ``out_dir`` for writing: start fresh, or resume the run recorded there.

        Args:
            out_dir: the output directory (created if missing).
            shard_records: rows per shard before a commit.
            config_hash: hash of the config; resuming requires the same one.
            input_fingerprint: identity of the input; resuming requires the same one.
            method: the method's name (recorded).
            engine_version: synth-engine's version (recorded).
            simulated: the endpoint is the simulator (recorded).
            force_new: delete an earlier output (the shards its manifest lists, partial
                files and the manifest; never anything else) and start fresh.
            retry_failed: rebuild an output of this same config and input from scratch:
                its shards are discarded, and the rerun replays every response already
                paid for from the cache, so only the calls that failed are made again.
                Its spending and usage records carry over.
            config_content: what the config hash is a hash of (recorded in the manifest;
                a later mismatch names the keys that differ).
            protect: files that must never be deleted or overwritten (the run's input);
                one inside ``out_dir`` named like an output file is refused.
            redact: applied to each item's serialized rows before they are written (the
                run's secrets out of every row).
            on_commit: called with the manifest after every successful commit.
            clock: monotonic time, for commit timings.
            opener: file-system seam passed to :func:`open`.

        Returns:
            The sink and what was found (done items to skip, files discarded).

        Raises:
            ShardError: the directory cannot be created or written; it holds shard files
                no manifest lists; its manifest is corrupt, belongs to another config or
                input, or lists shards that are missing or damaged; a protected file is
                named like one of the output's files.

        An earlier output that committed nothing (no shard, no item) claims nothing: a
        run with another config or input replaces its manifest instead of refusing.
        """
        out_dir = Path(out_dir)
        prepare_dir(out_dir)
        for kept in protect:
            kept = Path(kept)
            if kept.parent.resolve() == out_dir.resolve() and is_output_name(kept.name):
                raise ShardError(
                    f"the input {kept.name} lies in the output directory under a name the "
                    "output uses for its own files, so the run could overwrite it",
                    path=str(kept),
                    hint="move the input out of the output directory, or write output elsewhere",
                )
        manifest = load_manifest(out_dir)
        shards, partials = scan(out_dir)
        discarded: list[str] = []
        if manifest is not None and not manifest.shards and manifest.totals.get("items", 0) == 0:
            if (
                manifest.config_hash != config_hash
                or manifest.input_fingerprint != input_fingerprint
            ):
                force_new = True  # it claims nothing: start over for this config and input
        if manifest is not None:
            orphans, strangers = unlisted(manifest, shards)
        else:
            orphans, strangers = [], list(shards)
        if strangers:
            more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
            raise ShardError(
                f"output directory holds {strangers[0]}{more}, which "
                + ("its manifest does not list" if manifest is not None else "no manifest lists")
                + ", so it was not written by this output and is left alone",
                path=str(out_dir),
                hint="move such files away, or choose a new output directory",
            )
        carried: _Carried | None = None
        if manifest is not None and (not force_new or retry_failed):
            if manifest.config_hash != config_hash:
                changed = diff_keys(manifest.extra.get("config_content"), config_content)
                what = (
                    "; ".join(changed[:8])
                    + (f" (and {len(changed) - 8} more)" if len(changed) > 8 else "")
                    if changed
                    else f"hash {manifest.config_hash} != {config_hash}"
                )
                raise OutputMismatch(
                    f"output was written by a different config: {what}",
                    path=str(out_dir),
                    hint="use a new output directory, or pass --force-new to overwrite",
                )
            if manifest.input_fingerprint != input_fingerprint:
                raise OutputMismatch(
                    f"output was written for a different input "
                    f"({manifest.input_fingerprint} != {input_fingerprint})",
                    path=str(out_dir),
                    hint="use a new output directory, or pass --force-new to overwrite",
                )
        if manifest is not None and retry_failed:
            # Rebuilt from scratch below; what was spent stays on the record.
            carried = {
                "usage": dict(manifest.usage),
                "extra": {k: v for k, v in manifest.extra.items() if k in ("spend", "endpoints")},
                "retried": manifest.totals.get("failed", 0),
            }
            force_new = True
        if manifest is not None and not force_new:
            problems = verify_shards(out_dir, manifest)
            if problems:
                first = problems[0].split(":", 1)[0]
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ShardError(
                    f"shard does not match the manifest: {problems[0]}{more}",
                    path=str(out_dir / first),
                    hint=CORRUPT_HINT,
                )
            doomed = [*partials, *orphans]
            delete_files(out_dir, doomed)
            discarded.extend(doomed)
            sink = cls(
                out_dir,
                shard_records=shard_records,
                manifest=manifest,
                on_commit=on_commit,
                clock=clock,
                opener=opener,
                redact=redact,
            )
            return sink, ResumeState(
                done=sink._done.copy(),
                resumed=True,
                complete=manifest.complete,
                discarded=discarded,
            )
        # A fresh start: delete only what the old output wrote (the shards its manifest
        # lists, crash orphans numbered after them, partial files, the manifest).
        doomed = [*partials, *orphans]
        if manifest is not None:
            doomed = [
                MANIFEST_NAME,
                *(s.name for s in manifest.shards if SHARD_RE.match(s.name)),
                *doomed,
            ]
        delete_files(out_dir, doomed)
        discarded.extend(doomed)
        now = utc_now()
        extra: dict[str, object] = dict(carried["extra"]) if carried is not None else {}
        if config_content is not None:
            extra["config_content"] = dict(config_content)
        if carried is not None:
            extra["retried_failed_rows"] = carried["retried"]
        manifest = Manifest(
            engine_version=engine_version,
            simulated=simulated,
            config_hash=config_hash,
            input_fingerprint=input_fingerprint,
            method=method,
            started_at=now,
            updated_at=now,
            totals={**dict.fromkeys(KINDS, 0), "items": 0},
            usage=dict(carried["usage"]) if carried is not None else {},
            extra=extra,
        )
        # Writing the manifest at once claims the directory for this config and proves
        # that the manifest can be written before any paid-for work is done.
        write_manifest(out_dir, manifest, opener=opener)
        sink = cls(
            out_dir,
            shard_records=shard_records,
            manifest=manifest,
            on_commit=on_commit,
            clock=clock,
            opener=opener,
            redact=redact,
        )
        return sink, ResumeState(done=sink._done.copy(), discarded=discarded)

    @property
    def out_dir(self) -> Path:
        """The output directory."""
        return self._out_dir

    @property
    def manifest(self) -> Manifest:
        """The last committed manifest (the caller may set ``usage``/``extra`` before a commit)."""
        return self._manifest

    @property
    def rows_written(self) -> dict[str, int]:
        """Rows per kind handed to the sink, including rows not committed yet."""
        out = dict(self._totals)
        for kind, shard in self._open.items():
            out[kind] = out.get(kind, 0) + shard.rows
        return out

    @property
    def items_done(self) -> int:
        """Number of committed items (including those of earlier runs)."""
        return self._done.count

    def write_item(self, index: int, rows: Sequence[tuple[str, Mapping[str, object]]]) -> None:
        """Append one item's rows to the open shards; commit if a shard is full.

        Args:
            index: the item's index in the work stream.
            rows: ``(kind, row)`` pairs; kinds are ``kept``, ``rejected``, ``failed``.

        Raises:
            ValueError: an unknown kind, a negative index, or an item already written.
            ShardError: a row is not JSON-serializable (nothing of the item is written),
                or the shard cannot be written (the sink is then unusable; what was
                committed before stays intact and resumable).
        """
        self._check_usable()
        if index < 0:
            raise ValueError(f"item index must be >= 0, got {index}")
        if index in self._done or index in self._pending_set:
            raise ValueError(f"item {index} was already written")
        buffers = self._buffers
        for stale in buffers.values():
            stale.clear()
        counts = dict.fromkeys(KINDS, 0)
        for kind, row in rows:
            buf = buffers.get(kind)
            if buf is None:
                raise ValueError(f"unknown row kind {kind!r} (expected one of {', '.join(KINDS)})")
            try:
                buf += orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
            except TypeError as exc:
                raise ShardError(
                    f"a {kind} row of item {index} is not JSON-serializable ({exc})",
                    path=str(self._out_dir),
                    hint="this is a bug in the method that produced the row",
                ) from exc
            counts[kind] += 1
        full = False
        for kind in KINDS:
            n = counts[kind]
            if not n:
                continue
            shard = self._open.get(kind) or self._start_shard(kind)
            data: bytes | bytearray = buffers[kind]
            if self._redact is not None:
                data = self._redact(bytes(data))
            try:
                shard.file.write(data)
            except OSError as exc:
                self._fail(os_error(exc, shard.partial, "write shard"), exc)
            shard.sha.update(data)
            shard.rows += n
            shard.bytes += len(data)
            full = full or shard.rows >= self._shard_records
        self._pending.append(index)
        self._pending_set.add(index)
        if full or len(self._pending) >= self._shard_records:
            self._commit()

    def commit(self) -> None:
        """Make everything written so far durable and mark its items done.

        Raises:
            ShardError: a shard or the manifest cannot be written (the sink is then
                unusable; the previous commit stays intact).
        """
        self._check_usable()
        self._commit()

    def close(self, *, complete: bool, stop_reason: str | None = None) -> Manifest:
        """Commit, record how the run ended, and release the sink.

        Args:
            complete: every item is done.
            stop_reason: why the run stopped early (None when complete).

        Returns:
            The final manifest.

        Raises:
            ShardError: the final commit failed, or an earlier write had failed (then
                nothing more is written; rerunning resumes from the last commit).
        """
        if self._closed:
            raise RuntimeError("the shard sink is already closed")
        if self._failure is not None:
            self._release()
            self._closed = True
            raise ShardError(
                f"output not finalized after an earlier error: {self._failure.reason}",
                path=self._failure.path,
                hint="rerun the same command to resume from the last commit",
            ) from self._failure
        try:
            self._commit(final=(complete, stop_reason))
        finally:
            self._release()
            self._closed = True
        return self._manifest

    def abandon(self) -> None:
        """Release open files without committing (for a hard exit).

        The ``.partial`` files stay on disk and the next :meth:`open` discards them;
        their items were never marked done, so they are processed again.
        """
        self._release()
        self._closed = True

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("the shard sink is closed")
        if self._failure is not None:
            raise ShardError(
                f"output unusable after an earlier error: {self._failure.reason}",
                path=self._failure.path,
                hint="rerun the same command to resume from the last commit",
            ) from self._failure

    def _fail(self, error: ShardError, cause: OSError) -> NoReturn:
        self._failure = error
        self._release()
        raise error from cause

    def _release(self) -> None:
        for shard in self._open.values():
            # Flushing may fail on a full disk; the partial is discarded on resume anyway.
            with contextlib.suppress(OSError, ValueError):
                shard.file.close()
        self._open.clear()

    def _start_shard(self, kind: str) -> _OpenShard:
        index = self._next_index[kind]
        path = self._out_dir / (shard_name(kind, index) + PARTIAL_SUFFIX)
        try:
            file = open(str(path), "wb", buffering=_BUFFERING, opener=self._opener)
        except OSError as exc:
            self._fail(os_error(exc, path, "create shard"), exc)
        self._next_index[kind] = index + 1
        shard = _OpenShard(kind, index, self._out_dir, file)
        self._open[kind] = shard
        return shard

    def _commit(self, final: tuple[bool, str | None] | None = None) -> None:
        if not self._open and not self._pending and final is None:
            return
        started = self._clock()
        new_shards: list[ShardInfo] = []
        for kind in KINDS:
            shard = self._open.get(kind)
            if shard is None:
                continue
            final_path = self._out_dir / shard.name
            try:
                shard.file.flush()
                os.fsync(shard.file.fileno())
                shard.file.close()
                os.replace(shard.partial, final_path)
            except OSError as exc:
                self._fail(os_error(exc, shard.partial, "write shard"), exc)
            del self._open[kind]
            new_shards.append(
                ShardInfo(
                    name=shard.name,
                    kind=kind,
                    rows=shard.rows,
                    bytes=shard.bytes,
                    sha256=shard.sha.hexdigest(),
                )
            )
        if new_shards:
            try:
                fsync_dir(self._out_dir)
            except OSError as exc:
                self._fail(os_error(exc, self._out_dir, "sync the output directory"), exc)
        done = self._done.copy()
        for index in self._pending:
            done.add(index)
        totals = dict(self._totals)
        for info in new_shards:
            totals[info.kind] = totals.get(info.kind, 0) + info.rows
        old = self._manifest
        changes: dict[str, object] = {
            "shards": [*old.shards, *new_shards],
            "totals": {**totals, "items": done.count},
            "done": done.to_state(),
            "updated_at": utc_now(),
        }
        if final is not None:
            complete, stop_reason = final
            changes.update(
                complete=complete, stop_reason=stop_reason, ended_at=changes["updated_at"]
            )
        else:
            changes.update(complete=False, stop_reason=None, ended_at=None)
        manifest = msgspec.structs.replace(old, **changes)
        try:
            write_manifest(self._out_dir, manifest, opener=self._opener)
        except ShardError as exc:
            self._failure = exc
            self._release()
            raise
        self._manifest = manifest
        self._done = done
        self._totals = totals
        self._pending.clear()
        self._pending_set.clear()
        self.commits += 1
        self.commit_seconds += self._clock() - started
        if self._on_commit is not None:
            self._on_commit(manifest)
