"""Random access to the lines of a JSONL file: a sparse line-offset index, built lazily.

Opening the first page of a million-row output must not read the million rows, so a
:class:`LineIndex` only scans a file as far as a request needs: it remembers the byte
offset of every ``stride``-th line it has passed, and a read of line *n* seeks to the
nearest remembered line at or before *n* and skips at most ``stride - 1`` lines.

Only complete lines count (ending in a newline): a ``.partial`` shard the run is still
appending to may end in half a line, which is left for a later read. A file that grows
extends its index from where the last scan stopped; one that shrinks (it was replaced)
starts a new index. Instances are not thread-safe; :class:`~engine.viewer.catalog.Catalog`
serialises access.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ("LineIndex",)

_CHUNK = 1 << 20


class LineIndex:
    """Line offsets of one file, as far as they were needed.

    Args:
        path: the file.
        stride: remember the offset of every ``stride``-th line (memory: 8 bytes each).
    """

    __slots__ = ("_end", "_lines", "_marks", "path", "stride")

    def __init__(self, path: Path, *, stride: int = 64) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.path = Path(path)
        self.stride = stride
        self._marks = array("q", [0])  # offset of line k * stride
        self._lines = 0  # complete lines scanned so far
        self._end = 0  # offset just past the last complete line scanned

    @property
    def scanned_lines(self) -> int:
        """Complete lines the index has passed so far (not the file's total)."""
        return self._lines

    def _reset(self) -> None:
        self._marks = array("q", [0])
        self._lines = 0
        self._end = 0

    def _scan(self, f: BinaryIO, until: int | None) -> None:
        """Extend the index until it has passed ``until`` lines (None: to the end)."""
        stride = self.stride
        marks = self._marks
        lines = self._lines
        end = self._end  # just past the last complete line found
        offset = end  # file offset of the chunk being searched
        f.seek(offset)
        while until is None or lines < until:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            i = 0
            while until is None or lines < until:
                nl = chunk.find(b"\n", i)
                if nl < 0:
                    break
                i = nl + 1
                lines += 1
                end = offset + i
                if lines % stride == 0:
                    marks.append(end)
            offset += len(chunk)
        self._lines = lines
        self._end = end

    def _open(self) -> BinaryIO:
        f = open(self.path, "rb")
        if os.fstat(f.fileno()).st_size < self._end:  # replaced by a shorter file
            self._reset()
        return f

    def count(self) -> int:
        """The number of complete lines in the file now (scans what it has not seen)."""
        with self._open() as f:
            self._scan(f, None)
        return self._lines

    def read(self, start: int, count: int) -> list[bytes]:
        """Up to ``count`` complete lines from line ``start`` (0-based), newlines stripped."""
        if start < 0 or count <= 0:
            return []
        out: list[bytes] = []
        with self._open() as f:
            for line in self._lines_from(f, start):
                out.append(line)
                if len(out) >= count:
                    break
        return out

    def iter_from(self, start: int) -> Iterator[bytes]:
        """Every complete line from line ``start`` on, newlines stripped (file kept open)."""
        with self._open() as f:
            yield from self._lines_from(f, max(0, start))

    def _lines_from(self, f: BinaryIO, start: int) -> Iterator[bytes]:
        if start >= self._lines:
            self._scan(f, start + 1)
            if start >= self._lines:
                return
        mark = start // self.stride
        f.seek(self._marks[mark])
        line_no = mark * self.stride
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                return  # end of file, or a line still being written
            if line_no >= start:
                yield line[:-1]
            line_no += 1
            if line_no > self._lines:
                # Past what the index has seen: keep it up to date while reading on.
                self._lines = line_no
                self._end += len(line)
                if line_no % self.stride == 0:
                    self._marks.append(self._end)
