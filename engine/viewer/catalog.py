"""What an output directory holds, read without loading it: shards, counts, pages of rows.

A :class:`Catalog` lists the shards of each kind: first those the manifest lists (their
row counts come from the manifest, so a million rows are counted without reading
them), then shard files the manifest does not list yet: the ``.partial`` shard a live
run is appending to, or a shard renamed a moment before its manifest was written.
Rows are addressed by their *position* within a kind (0 = the first row of the first
shard), and read through one :class:`~engine.viewer.lines.LineIndex` per file.

A commit renames a ``.partial`` file to its final name, which keeps the file (and the
inode), so positions stay put while a run goes on and an index is reused across the
rename. The listing is refreshed at most every ``ttl_s`` seconds. Every public method
takes a lock: the server calls them from worker threads, off the event loop.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..io.manifest import MANIFEST_NAME, Manifest, load_manifest
from ..io.shards import KINDS, PARTIAL_SUFFIX
from .lines import LineIndex

__all__ = ("Catalog", "Located", "ShardFile", "Snapshot")

_FILE_RE = re.compile(r"^(kept|rejected|failed)-(\d{5,})\.jsonl(\.partial)?$")
_MAX_INDEXES = 4096


@dataclass(slots=True)
class ShardFile:
    """One shard file of a kind.

    Attributes:
        kind: ``kept``, ``rejected`` or ``failed``.
        index: the shard number (``kept-00007.jsonl``: 7).
        name: the file name.
        committed: listed in the manifest (an uncommitted one may still change or go).
        rows: complete rows (the manifest's count when committed).
    """

    kind: str
    index: int
    name: str
    committed: bool
    rows: int


@dataclass(slots=True)
class Snapshot:
    """The output directory at one moment.

    Attributes:
        manifest: the manifest, or None when there is none yet.
        shards: kind -> its shard files, in row order.
        taken_at: monotonic time of the listing.
    """

    manifest: Manifest | None
    shards: dict[str, list[ShardFile]] = field(default_factory=dict)
    taken_at: float = 0.0

    def rows(self, kind: str) -> int:
        """Rows of ``kind``, committed and not."""
        return sum(s.rows for s in self.shards.get(kind, []))

    def uncommitted(self, kind: str) -> int:
        """Rows of ``kind`` in files the manifest does not list."""
        return sum(s.rows for s in self.shards.get(kind, []) if not s.committed)


@dataclass(slots=True)
class Located:
    """One row's place and raw line.

    Attributes:
        position: the row's position within its kind.
        shard: the file holding it.
        line: its line number in that file (0-based).
        raw: the line, without its newline.
    """

    position: int
    shard: ShardFile
    line: int
    raw: bytes


class Catalog:
    """Reads an output directory's shards by page, for the viewer.

    Args:
        out_dir: the output directory.
        ttl_s: seconds a directory listing is reused before it is taken again.
        clock: monotonic seconds.

    Attributes:
        lock: held by every public method; hold it while iterating :meth:`scan`.
    """

    def __init__(
        self, out_dir: Path, *, ttl_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out_dir = Path(out_dir)
        self.ttl_s = ttl_s
        self._clock = clock
        self.lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._manifest_key: tuple[int, int, int] | None = None
        self._manifest: Manifest | None = None
        # (device, inode) -> index: a rename (commit) keeps the inode, so keeps the index.
        self._indexes: OrderedDict[tuple[int, int], LineIndex] = OrderedDict()

    # ------------------------------------------------------------ listing
    def snapshot(self, *, fresh: bool = False) -> Snapshot:
        """The current listing (at most ``ttl_s`` old unless ``fresh``).

        Raises:
            ShardError: the manifest exists but cannot be read or decoded.
        """
        with self.lock:
            now = self._clock()
            snap = self._snapshot
            if snap is not None and not fresh and now - snap.taken_at < self.ttl_s:
                return snap
            manifest = self._load_manifest()
            snap = Snapshot(manifest=manifest, taken_at=now)
            listed = {s.name: s for s in manifest.shards} if manifest else {}
            on_disk: dict[str, list[tuple[int, str, bool]]] = {k: [] for k in KINDS}
            try:
                names = os.listdir(self.out_dir)
            except FileNotFoundError:
                names = []
            for name in names:
                m = _FILE_RE.match(name)
                if m and name not in listed:
                    on_disk[m.group(1)].append((int(m.group(2)), name, bool(m.group(3))))
            for kind in KINDS:
                files = [
                    ShardFile(kind, _number(s.name), s.name, True, s.rows)
                    for s in (manifest.shards if manifest else [])
                    if s.kind == kind
                ]
                last = max((f.index for f in files), default=-1)
                final_names = {n for _, n, partial in on_disk[kind] if not partial}
                for number, name, partial in sorted(on_disk[kind]):
                    if number <= last:
                        continue  # an orphan a resume will delete; not part of the output
                    if partial and name[: -len(PARTIAL_SUFFIX)] in final_names:
                        continue  # renamed between the listing's two looks
                    rows = self._count(name)
                    if rows is not None:
                        files.append(ShardFile(kind, number, name, False, rows))
                snap.shards[kind] = files
            self._snapshot = snap
            return snap

    def _load_manifest(self) -> Manifest | None:
        path = self.out_dir / MANIFEST_NAME
        try:
            st = path.stat()
        except FileNotFoundError:
            self._manifest_key = None
            self._manifest = None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._manifest_key:
            self._manifest = load_manifest(self.out_dir)
            self._manifest_key = key
        return self._manifest

    def _index(self, name: str) -> LineIndex | None:
        """The index of file ``name`` (None if it is gone)."""
        path = self.out_dir / name
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_dev, st.st_ino)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = LineIndex(path)
            if len(self._indexes) > _MAX_INDEXES:
                self._indexes.popitem(last=False)
        else:
            index.path = path  # renamed at commit: same file, new name
            self._indexes.move_to_end(key)
        return index

    def _count(self, name: str) -> int | None:
        index = self._index(name)
        if index is None:
            return None
        try:
            return index.count()
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------ reading
    def rows(self, kind: str) -> int:
        """Rows of ``kind`` now, committed and not."""
        return self.snapshot().rows(kind)

    def read(self, kind: str, start: int, count: int) -> list[Located]:
        """Up to ``count`` rows of ``kind`` from position ``start``, in order."""
        with self.lock:
            return list(self._iter(kind, start, count))

    def scan(self, kind: str, start: int) -> Iterator[Located]:
        """Every row of ``kind`` from position ``start``, as of one listing.

        Iterate it with :attr:`lock` held (indexes are shared and not thread-safe).
        """
        return self._iter(kind, start, None)

    def _iter(self, kind: str, start: int, count: int | None) -> Iterator[Located]:
        files = self.snapshot().shards.get(kind, [])
        first = max(0, start)
        left = count
        base = 0
        for shard in files:
            if base + shard.rows <= first:
                base += shard.rows
                continue
            index = self._index(shard.name)
            if index is None and not shard.committed:
                # Committed since the listing: the same file under its final name.
                index = self._index(shard.name.removesuffix(PARTIAL_SUFFIX))
            if index is not None:
                line = first - base
                try:
                    for raw in index.iter_from(line):
                        if line >= shard.rows:
                            break  # rows appended since the listing wait for the next one
                        yield Located(base + line, shard, line, raw)
                        line += 1
                        if left is not None:
                            left -= 1
                            if left <= 0:
                                return
                except FileNotFoundError:
                    pass
            base += shard.rows
            first = max(first, base)

    def locate(self, kind: str, position: int) -> Located | None:
        """The row at ``position`` of ``kind``, or None if there is none."""
        found = self.read(kind, position, 1)
        return found[0] if found else None


def _number(name: str) -> int:
    m = _FILE_RE.match(name)
    return int(m.group(2)) if m else 0
