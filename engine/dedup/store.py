"""Embeddings kept on disk beside the shards, so a resumed run does not embed them again.

Semantic dedup rebuilds its index on resume from the rows the output directory has
committed. Embedding them again costs minutes per 10k rows on a CPU, so every vector
that joins the index is also appended to ``OUT/semantic_dedup.vectors``, and the rebuild
takes a committed row's vector from there when the file has one for the same row id and
text. The file is a cache, not a record: rows are still the truth.

* Only committed rows are looked up, by a 16-byte BLAKE2b key of (row id, text), so a
  vector appended for a row the crash left uncommitted is never used, and a row whose
  text changed is embedded again.
* Layout: one header line (magic, model name, dimension as JSON) and then fixed-size
  records (key, float32 vector). A torn last record (a crash mid-append) is ignored and
  cut off before the next append. A header naming another model or dimension, or any
  unreadable header, makes the file unused (it is replaced when the next vector is
  appended).
* Reading maps the file (``numpy.memmap``): only the keys' first 8 bytes (8 bytes per row)
  are held in memory to find a record; a vector is read when it is used.

Writes come from the dedup's worker thread only (one job at a time); each append opens,
writes and closes the file, so nothing is left open between batches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .index import Matrix

__all__ = ("VectorStore", "vector_key")

_MAGIC = b"synth-engine semantic vectors v1 "
_KEY_BYTES = 16


def vector_key(row_id: str, text: str) -> bytes:
    """The 16-byte key of a row's instruction: BLAKE2b of the row id and text."""
    h = hashlib.blake2b(digest_size=_KEY_BYTES)
    h.update(row_id.encode("utf-8"))
    h.update(b"\0")
    h.update(text.encode("utf-8"))
    return h.digest()


class VectorStore:
    """An append-only file of (key, unit vector) for one embedding model.

    Args:
        path: the file (created at the first append).
        model: the model's name; vectors of another model are never returned.
    """

    def __init__(self, path: Path, model: str) -> None:
        self.path = path
        self.model = model
        self._dim: int | None = None
        self._header_len = 0
        self._records = 0  # whole records in the file, as last read or written
        self._map: npt.NDArray[np.void] | None = None  # numpy.memmap of the records
        self._order: npt.NDArray[np.intp] | None = None  # record numbers sorted by key[:8]
        self._sorted: npt.NDArray[np.uint64] | None = None  # those first 8 bytes, sorted

    # --------------------------------------------------------------- reading
    def _read_header(self) -> tuple[int, int] | None:
        """(header length, dimension) of a usable file of this model, else None."""
        try:
            with self.path.open("rb") as f:
                line = f.readline(4096)
        except OSError:
            return None
        if not line.startswith(_MAGIC) or not line.endswith(b"\n"):
            return None
        try:
            meta = json.loads(line[len(_MAGIC) :])
            dim = int(meta["dim"])
        except (ValueError, KeyError, TypeError):
            return None
        if meta.get("model") != self.model or dim < 1:
            return None
        return len(line), dim

    def _dtype(self, dim: int) -> np.dtype[np.void]:
        import numpy as np

        return np.dtype([("key", "<u8", (2,)), ("vec", "<f4", (dim,))])

    def open(self) -> int:
        """Map the file for :meth:`lookup`; the number of records found (0: none usable)."""
        import numpy as np

        self.close()
        found = self._read_header()
        if found is None:
            return 0
        self._header_len, dim = found
        self._dim = dim
        dtype = self._dtype(dim)
        size = self.path.stat().st_size
        self._records = max(0, (size - self._header_len) // dtype.itemsize)
        if self._records == 0:
            return 0
        self._map = np.memmap(
            self.path, dtype=dtype, mode="r", offset=self._header_len, shape=(self._records,)
        )
        first = np.array(self._map["key"][:, 0])
        self._order = np.argsort(first, kind="stable")
        self._sorted = first[self._order]
        return self._records

    def lookup(self, keys: Sequence[bytes]) -> list[Matrix | None]:
        """The stored vector of each key, or None (call :meth:`open` first)."""
        import numpy as np

        out: list[Matrix | None] = [None] * len(keys)
        records, order, first = self._map, self._order, self._sorted
        if records is None or order is None or first is None or not keys:
            return out  # not open (the three are set and cleared together)
        wanted = np.frombuffer(b"".join(keys), dtype="<u8").reshape(len(keys), 2)
        lo = np.searchsorted(first, wanted[:, 0], side="left")
        hi = np.searchsorted(first, wanted[:, 0], side="right")
        for i in range(len(keys)):
            for j in range(int(lo[i]), int(hi[i])):  # equal first halves: compare both
                record = records[int(order[j])]
                if record["key"][1] == wanted[i, 1]:
                    out[i] = np.array(record["vec"], dtype=np.float32)
                    break
        return out

    def close(self) -> None:
        """Unmap the file (lookups return None until :meth:`open` again)."""
        self._map = self._order = self._sorted = None

    # --------------------------------------------------------------- writing
    def append(self, keys: Sequence[bytes], vectors: Matrix) -> None:
        """Append one record per key (the file is started, or restarted, as needed).

        Raises:
            OSError: the file cannot be written (the caller decides; dedup goes on
                without the cache).
        """
        import numpy as np

        if not keys:
            return
        dim = int(vectors.shape[1])
        found = self._read_header() if self.path.exists() else None
        if found is None or found[1] != dim:
            header = _MAGIC + json.dumps({"model": self.model, "dim": dim}).encode() + b"\n"
            self.path.write_bytes(header)
            self.close()
            self._header_len, self._dim, self._records = len(header), dim, 0
        else:
            self._header_len, self._dim = found
        dtype = self._dtype(dim)
        records = np.empty(len(keys), dtype=dtype)
        records["key"] = np.frombuffer(b"".join(keys), dtype="<u8").reshape(len(keys), 2)
        records["vec"] = vectors
        with self.path.open("r+b") as f:
            size = f.seek(0, 2)
            whole = self._header_len + (size - self._header_len) // dtype.itemsize * dtype.itemsize
            if whole != size:  # a torn record from a crash mid-append
                f.truncate(whole)
                f.seek(whole)
            f.write(records.tobytes())
            self._records = (whole - self._header_len) // dtype.itemsize + len(keys)
