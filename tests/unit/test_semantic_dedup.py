"""Semantic dedup: the index's cosine logic and growth, the micro-batched atomic check,
the rebuild from committed rows, config and missing-extra errors (on a fake embedder),
then the shipped all-MiniLM-L6-v2 on hand-written near duplicates and paraphrases."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from engine.config import load_config
from engine.dedup.index import Duplicate, SemanticIndex, SentenceTransformerEmbedder
from engine.dedup.semantic import (
    DEFAULT_THRESHOLD,
    SemanticDedup,
    SemanticDedupConfig,
    committed_texts,
)
from engine.errors import ConfigError, EngineError
from engine.io.shards import ShardSink
from engine.methods import create_method, method_config
from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext
from engine.methods.codeclm import CodecLM
from engine.methods.selfguide import SelfGuideConfig, SelfGuideMethod
from engine.records import RowOut
from tests.fakes import Counts, Reply

Matrix = npt.NDArray[np.float32]


def unit(*xs: float) -> Matrix:
    v = np.asarray(xs, dtype=np.float32)
    out: Matrix = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def rows(*vs: Matrix) -> Matrix:
    return np.stack(vs).astype(np.float32)


class FakeEmbedder:
    """Texts -> given unit vectors; records every batch; optional delay and failure."""

    def __init__(
        self,
        vectors: dict[str, Matrix],
        *,
        delay_s: float = 0.0,
        fail_on: str | None = None,
        gate: threading.Event | None = None,
    ) -> None:
        self.entered = threading.Event()
        self.vectors = vectors
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.gate = gate
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str]) -> Matrix:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10.0), "test gate never opened"
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("tokenizer exploded")
        return rows(*(self.vectors[t] for t in texts))


def dedup(
    embedder: FakeEmbedder, *, threshold: float = 0.9, batch_size: int = 64, **kw: Any
) -> SemanticDedup:
    cfg = SemanticDedupConfig(enabled=True, threshold=threshold, batch_size=batch_size)
    return SemanticDedup(cfg, embedder=lambda: embedder, **kw)


def clusters(rng: random.Random, k: int, size: int, dim: int = 32) -> list[tuple[int, Matrix]]:
    """k well-separated clusters of ``size`` members: members of one cluster have cosine
    about 0.92 with each other, members of different clusters below 0.5."""
    assert k <= dim
    centers = np.linalg.qr(np.random.default_rng(rng.randrange(2**32)).normal(size=(dim, dim)))[0]
    out: list[tuple[int, Matrix]] = []
    for c in range(k):
        for _ in range(size):
            noise = np.asarray([rng.gauss(0, 0.05) for _ in range(dim)])
            out.append((c, unit(*(centers[c] + noise))))
    return out


# ------------------------------------------------------------------------ index
def test_threshold_is_strict_and_similarity_is_the_exact_cosine() -> None:
    a = unit(1.0, 0.0)
    b = unit(0.75, math.sqrt(1 - 0.75**2))  # cosine with a: exactly 0.75
    index = SemanticIndex(0.75)
    assert index.admit(["a"], rows(a)) == [None]
    assert index.admit(["b"], rows(b)) == [None]  # 0.75 is not above 0.75
    strict = SemanticIndex(0.7499)
    strict.add(["a"], rows(a))
    (verdict,) = strict.admit(["b"], rows(b))
    assert verdict is not None and verdict.duplicate_of == "a"
    assert verdict.similarity == pytest.approx(0.75, abs=1e-6)
    assert len(strict) == 1  # the duplicate was not inserted


def test_the_closest_match_is_named() -> None:
    index = SemanticIndex(0.5)
    index.add(["x", "y"], rows(unit(1, 0, 0), unit(0.8, 0.6, 0)))
    (verdict,) = index.admit(["q"], rows(unit(0.7, 0.7, 0)))
    assert verdict is not None and verdict.duplicate_of == "y"
    assert verdict.similarity == pytest.approx(float(unit(0.8, 0.6, 0) @ unit(0.7, 0.7, 0)))
    assert verdict.fields() == {
        "reason": "near_duplicate",
        "similarity": round(verdict.similarity, 4),
        "duplicate_of": "y",
    }


def test_one_call_keeps_the_first_of_two_near_duplicates() -> None:
    index = SemanticIndex(0.9)
    got = index.admit(["p", "p2", "q"], rows(unit(1, 0.01, 0), unit(1, 0.02, 0), unit(0, 1, 0)))
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[1].duplicate_of == "p"
    assert len(index) == 2


def test_matrix_grows_by_doubling_and_keeps_every_row() -> None:
    index = SemanticIndex(0.99, capacity=2)
    vecs = [unit(*np.eye(12)[i]) for i in range(9)]
    seen = []
    for i, v in enumerate(vecs):
        assert index.admit([f"r{i}"], rows(v)) == [None]
        seen.append(index.capacity)
    assert seen == [2, 2, 4, 4, 8, 8, 8, 8, 16]
    for i, v in enumerate(vecs):
        found = index.nearest(v)
        assert found is not None and found[1] == f"r{i}"
        assert found[0] == pytest.approx(1.0)


def test_large_index_is_scanned_in_blocks() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(20_000, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    probe = unit(*rng.normal(size=16))
    planted = unit(*(probe * 10 + rng.normal(size=16) * 0.5))
    base[17_000] = planted  # in the second block of rows
    index = SemanticIndex(0.95)
    index.add([f"r{i}" for i in range(len(base))], base)
    (verdict,) = index.admit(["probe"], rows(probe))
    assert verdict is not None and verdict.duplicate_of == "r17000"
    assert verdict.similarity == pytest.approx(float(planted @ probe), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_admit_matches_a_reference_on_random_clusters(seed: int) -> None:
    rng = random.Random(seed)
    members = clusters(rng, k=rng.randint(3, 20), size=rng.randint(1, 6))
    rng.shuffle(members)
    index = SemanticIndex(0.8, capacity=1)
    verdicts: list[Duplicate | None] = []
    at = 0
    while at < len(members):  # random call sizes
        n = rng.randint(1, 7)
        chunk = members[at : at + n]
        verdicts += index.admit(
            [f"m{at + i}" for i in range(len(chunk))], rows(*(v for _, v in chunk))
        )
        at += n
    first: dict[int, int] = {}
    for i, (c, _) in enumerate(members):
        first.setdefault(c, i)
    for i, ((c, v), got) in enumerate(zip(members, verdicts, strict=True)):
        if first[c] == i:
            assert got is None
        else:
            assert got is not None and got.duplicate_of == f"m{first[c]}"
            assert got.similarity == pytest.approx(float(members[first[c]][1] @ v), abs=1e-5)
    assert len(index) == len(first)


def test_index_rejects_mismatched_input() -> None:
    index = SemanticIndex(0.9)
    index.add(["a"], rows(unit(1, 0)))
    with pytest.raises(ValueError, match="one id per vector"):
        index.admit(["b", "c"], rows(unit(1, 0)))
    with pytest.raises(ValueError, match="embedding size"):
        index.admit(["b"], rows(unit(1, 0, 0)))


# ----------------------------------------------------------------- async check
async def test_concurrent_checks_are_batched_and_never_admit_two_near_duplicates() -> None:
    rng = random.Random(11)
    members = clusters(rng, k=10, size=6)
    rng.shuffle(members)
    texts = {f"t{i}": v for i, (_, v) in enumerate(members)}
    cluster_of = {f"t{i}": c for i, (c, _) in enumerate(members)}
    embedder = FakeEmbedder(texts, delay_s=0.005)
    d = dedup(embedder, threshold=0.8, batch_size=16)
    async with asyncio.timeout(30):
        verdicts = await asyncio.gather(*(d.check_one(f"id-{t}", t) for t in texts))
    admitted = [t for t, v in zip(texts, verdicts, strict=True) if v is None]
    assert sorted(cluster_of[t] for t in admitted) == list(range(10))  # one per cluster
    for a, b in combinations(admitted, 2):
        assert float(texts[a] @ texts[b]) <= 0.8
    by_cluster = {cluster_of[t]: f"id-{t}" for t in admitted}
    for t, v in zip(texts, verdicts, strict=True):
        if v is not None:
            assert v.duplicate_of == by_cluster[cluster_of[t]]
    # Micro-batching: fewer forward passes than requests, none over batch_size.
    assert len(embedder.batches) < len(texts)
    assert all(len(b) <= 16 for b in embedder.batches)
    assert sum(len(b) for b in embedder.batches) == len(texts)
    report = d.report()
    assert (report["checked"], report["dropped"], report["indexed"]) == (60, 50, 10)
    assert report["batches"] == len(embedder.batches)


async def test_one_request_is_checked_in_its_order() -> None:
    vecs = {"a": unit(1, 0.01), "a2": unit(1, 0.02), "b": unit(0, 1)}
    d = dedup(FakeEmbedder(vecs))
    got = await d.check([("2", "a2"), ("1", "a"), ("3", "b")])
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[1].duplicate_of == "2"
    assert await d.check([]) == []


def test_query_inserts_nothing_and_agrees_with_admit() -> None:
    index = SemanticIndex(0.9)
    assert index.query(rows(unit(1, 0))) == [None]  # empty index
    index.admit(["a"], rows(unit(1, 0)))
    near, far = unit(1, 0.1), unit(0, 1)
    (dup, fresh) = index.query(rows(near, far))
    assert fresh is None and dup is not None and dup.duplicate_of == "a"
    assert dup.similarity == pytest.approx(float(unit(1, 0) @ near))
    assert len(index) == 1  # nothing inserted
    assert index.admit(["n", "f"], rows(near, far)) == [dup, None]
    with pytest.raises(ValueError, match="embedding size"):
        index.query(rows(unit(1, 0, 0)))


async def test_probe_admits_nothing_and_its_embedding_is_reused_by_the_check() -> None:
    vecs = {"a": unit(1, 0.01), "a2": unit(1, 0.02), "b": unit(0, 1), "b2": unit(0.02, 1)}
    embedder = FakeEmbedder(vecs)
    d = dedup(embedder)
    assert await d.probe("1", "a") is None
    assert len(d.index) == 0  # a probe admits nothing
    assert await d.check_one("1", "a") is None  # kept: embedded once, at the probe
    assert embedder.batches == [["a"]]
    probed = await d.probe("2", "a2")
    assert probed is not None and probed.duplicate_of == "1"
    assert await d.probe("3", "b") is None
    assert await d.check_one("3", "b2") is None  # the text changed since the probe: embedded
    assert embedder.batches == [["a"], ["a2"], ["b"], ["b2"]]
    assert await d.probe("4", "b") is not None  # b2 is in the index now
    report = d.report()
    assert (report["probed"], report["dropped_before_calls"], report["embeddings_reused"]) == (
        4,
        2,
        1,
    )
    assert (report["checked"], report["dropped"], report["indexed"]) == (2, 0, 2)
    assert d._probed == {}  # popped by the checks; duplicates are never kept


async def test_forget_drops_a_probe_and_concurrent_probes_are_settled_by_the_check() -> None:
    vecs = {"a": unit(1, 0.01), "a2": unit(1, 0.02), "c": unit(0, 1)}
    embedder = FakeEmbedder(vecs)
    d = dedup(embedder)
    # Two near duplicates probed together both pass: neither is in the index yet.
    assert list(await asyncio.gather(d.probe("1", "a"), d.probe("2", "a2"))) == [None, None]
    assert set(d._probed) == {"1", "2"}
    first, second = await asyncio.gather(d.check_one("1", "a"), d.check_one("2", "a2"))
    assert first is None and second is not None and second.duplicate_of == "1"
    assert sum(len(b) for b in embedder.batches) == 2  # both checks reused their probes
    assert await d.probe("3", "a") is not None
    assert "3" not in d._probed  # a duplicate's embedding is not kept
    assert await d.probe("4", "c") is None
    assert "4" in d._probed
    d.forget("4")  # the row ended without its check (rejected by the judge, failed)
    d.forget("never-probed")  # no-op
    assert d._probed == {}
    assert await d.check_one("4", "c") is None  # forgotten: embedded again
    assert embedder.batches[-1] == ["c"]


def _write_output(out: Path, rows_by_kind: dict[str, list[dict[str, Any]]]) -> None:
    sink, _ = ShardSink.open(
        out,
        shard_records=100,
        config_hash="h",
        input_fingerprint="f",
        method="t",
        engine_version="0",
        simulated=False,
    )
    index = 0
    for kind, rs in rows_by_kind.items():
        for row in rs:
            sink.write_item(index, [(kind, row)])
            index += 1
    sink.close(complete=False, stop_reason="stopped")


async def test_index_is_rebuilt_from_committed_rows(tmp_path: Path) -> None:
    vecs = {
        "kept one": unit(1, 0, 0),
        "kept two": unit(0, 1, 0),
        "judged out": unit(0, 0, 1),
        "a near dup": unit(1, 0.02, 0),
        "new": unit(1, 1, 1),
    }
    _write_output(
        tmp_path,
        {
            "kept": [{"id": "k1", "q": "kept one"}, {"id": "k2", "q": "kept two"}],
            "rejected": [
                {"id": "j1", "q": "judged out", "filter": "pair_check"},
                {"id": "d1", "q": "a near dup", "filter": "near_duplicate"},
                {"id": "x1", "q": "a near dup", "filter": "dedup"},
            ],
        },
    )
    assert list(committed_texts(tmp_path, "q")) == [("k1", "kept one"), ("k2", "kept two")]
    embedder = FakeEmbedder(vecs)
    d = dedup(
        embedder,
        committed=partial(
            committed_texts,
            tmp_path,
            "q",
            kinds=("kept", "rejected"),
            skip_filters=frozenset({"near_duplicate", "dedup"}),
        ),
    )
    got = await d.check([("n1", "a near dup"), ("n2", "judged out"), ("n3", "new")])
    assert got[0] is not None and got[0].duplicate_of == "k1"
    assert got[1] is not None and got[1].duplicate_of == "j1"
    assert got[2] is None
    assert d.report()["rebuilt_from_output"] == 3
    assert embedder.batches[0] == ["kept one", "kept two", "judged out"]


async def test_no_output_yet_rebuilds_nothing(tmp_path: Path) -> None:
    d = dedup(FakeEmbedder({"a": unit(1, 0)}), committed=partial(committed_texts, tmp_path, "q"))
    assert await d.check_one("1", "a") is None
    assert d.report()["rebuilt_from_output"] == 0


async def test_embedding_failure_is_an_engine_error_and_the_next_check_works() -> None:
    vecs = {"ok": unit(1, 0), "boom": unit(0, 1), "fine": unit(0.6, -0.8)}
    d = dedup(FakeEmbedder(vecs, fail_on="boom"))
    with pytest.raises(EngineError, match="embedding failed") as info:
        await d.check_one("1", "boom")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert await d.check([("2", "ok"), ("3", "fine")]) == [None, None]


async def test_a_model_that_cannot_load_fails_every_check_with_config_error() -> None:
    calls = []

    def broken() -> FakeEmbedder:
        calls.append(1)
        raise ConfigError("cannot load embedding model 'nope'", hint="fix it")

    d = SemanticDedup(SemanticDedupConfig(enabled=True), embedder=broken)
    d.warm_up()
    results = await asyncio.gather(
        d.check_one("1", "a"), d.check_one("2", "b"), return_exceptions=True
    )
    assert all(isinstance(r, ConfigError) for r in results)
    assert calls == [1]  # loaded (tried) once


async def test_model_loads_once_off_the_event_loop() -> None:
    loads: list[bool] = []
    embedder = FakeEmbedder({"a": unit(1, 0), "b": unit(0, 1)})

    def factory() -> FakeEmbedder:
        loads.append(threading.current_thread() is threading.main_thread())
        return embedder

    d = SemanticDedup(SemanticDedupConfig(enabled=True), embedder=factory)
    d.warm_up()
    d.warm_up()
    await asyncio.gather(d.check_one("1", "a"), d.check_one("2", "b"))
    assert loads == [False]


async def test_a_cancelled_caller_is_skipped_and_others_proceed() -> None:
    gate = threading.Event()
    vecs = {"first": unit(1, 0, 0), "gone": unit(0, 1, 0), "later": unit(0, 0, 1)}
    embedder = FakeEmbedder(vecs, gate=gate)
    d = dedup(embedder, batch_size=1)
    async with asyncio.timeout(20):
        first = asyncio.ensure_future(d.check_one("1", "first"))
        # The first batch is in the worker thread, blocked on the gate.
        assert await asyncio.to_thread(embedder.entered.wait, 10.0)
        gone = asyncio.ensure_future(d.check_one("2", "gone"))
        later = asyncio.ensure_future(d.check_one("3", "later"))
        await asyncio.sleep(0.01)
        gone.cancel()
        gate.set()
        assert await first is None and await later is None
        with pytest.raises(asyncio.CancelledError):
            await gone
    assert embedder.batches == [["first"], ["later"]]
    assert len(d.index) == 2


# ------------------------------------------------------------- config, extra
def _lab_config(tmp_path: Path, table: str) -> Path:
    leaf = tmp_path / "taxonomy" / "compositional_skills" / "x"
    leaf.mkdir(parents=True)
    (leaf / "qna.yaml").write_text(
        "version: 3\ncreated_by: t\ntask_description: T.\nseed_examples:\n"
        "  - question: Q?\n    answer: A.\n"
    )
    path = tmp_path / "job.toml"
    path.write_text(
        f"""[run]
method = "lab"
input = "taxonomy"

[endpoints.t]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "t"

[method.lab.semantic_dedup]
{table}
"""
    )
    return path


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("threshold = 1.5", "method.lab.semantic_dedup.threshold"),
        ("batch_size = 0", "method.lab.semantic_dedup.batch_size"),
        ("treshold = 0.9", "method.lab.semantic_dedup.treshold"),
    ],
)
def test_bad_table_is_a_config_error_with_its_line(tmp_path: Path, table: str, field: str) -> None:
    config = load_config(_lab_config(tmp_path, table))
    with pytest.raises(ConfigError) as info:
        method_config(config)
    assert info.value.field == field
    assert info.value.line == 13


def _ctx(config: Any) -> MethodContext:
    stages: dict[str, Counts] = {}
    return MethodContext(
        config=config,
        callers={},
        input_path=config.resolve(config.run.input),
        stage=lambda name: stages.setdefault(name, Counts()),
    )


def test_enabled_without_the_extra_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # "not installed"
    config = load_config(_lab_config(tmp_path, "enabled = true"))
    with pytest.raises(ConfigError) as info:
        create_method(config, _ctx(config))
    err = info.value
    assert err.field == "method.lab.semantic_dedup.enabled"
    assert err.line == 13 and err.path == str(tmp_path / "job.toml")
    assert "sentence-transformers is not installed" in err.reason
    assert err.hint is not None and "pip install 'synth-engine[dedup]'" in err.hint


@pytest.mark.parametrize("method", ["codeclm", "selfguide"])
def test_other_methods_check_the_extra_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    (tmp_path / "in.json").write_text("{}")
    (tmp_path / "job.toml").write_text(
        f"""[run]
method = "{method}"
input = "in.json"

[endpoints.t]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "t"

[method.{method}.semantic_dedup]
enabled = true
"""
    )
    config = load_config(tmp_path / "job.toml")
    with pytest.raises(ConfigError) as info:
        create_method(config, _ctx(config))
    assert info.value.field == f"method.{method}.semantic_dedup.enabled"
    assert info.value.line == 13


async def test_disabled_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    config = load_config(_lab_config(tmp_path, "enabled = false"))
    method = create_method(config, _ctx(config))
    assert isinstance(method, Adapter)  # LabMethod runs on the public method API
    await method.prepare()  # where LAB builds its dedup
    assert getattr(method.method, "semantic", "missing") is None
    assert "semantic_dedup" not in method.report()
    assert "near_duplicate" not in method.report()["dropped_by_filter"]


# ----------------------------------------------------------- the real model
# Hand-written measurement set (figures in docs/dedup.md): the same instruction with a
# trivial edit (punctuation, casing, a spelling, a word or number changed) ...
NEAR = [
    ("Write a short poem about the ocean at night.", "write a short poem about the ocean at night"),
    (
        "Explain how a hash table handles collisions.",
        "Explain how a hash table handles collisions?",
    ),
    (
        "Summarize the main causes of the French Revolution.",
        "Summarize the main causes of the French revolution!",
    ),
    (
        "List five tips for improving sleep quality.",
        "List five tips for improving your sleep quality.",
    ),
    ("Translate 'good morning' into Spanish.", 'Translate "good morning" into Spanish.'),
    (
        "Write a Python function that reverses a string.",
        "Write a Python function that reverses a given string.",
    ),
    (
        "Give me three ideas for a birthday party for my daughter.",
        "Give me 3 ideas for a birthday party for my daughter.",
    ),
    ("What are the benefits of regular exercise?", "What are the benefits of regular exercise ?"),
    (
        "Draft an email asking my manager for a day off on Friday.",
        "Draft an email asking my boss for a day off on Friday.",
    ),
    (
        "Compare the pros and cons of electric cars and petrol cars.",
        "Compare the pros and cons of electric cars and gasoline cars.",
    ),
    ("Write a haiku about autumn leaves.", "Write a haiku about the autumn leaves."),
    (
        "Explain the difference between a list and a tuple in Python.",
        "Explain the difference between a tuple and a list in Python.",
    ),
    (
        "How do I reset my router to factory settings?",
        "How can I reset my router to factory settings?",
    ),
    (
        "Write a SQL query that returns the ten most recent orders.",
        "Write an SQL query that returns the 10 most recent orders.",
    ),
    (
        "Write a cover letter for a junior data analyst position.",
        "Write a cover letter for a junior data analyst role.",
    ),
    ("Explain recursion with a simple example.", "Explain recursion using a simple example."),
    ("What is the capital of Australia?", "what is the capital of australia"),
    ("Suggest a name for my new coffee shop.", "Suggest a name for my new coffee shop!!"),
    (
        "Write a limerick about a cat who loves cheese.",
        "Write a limerick about a cat that loves cheese.",
    ),
    ("Explain what inflation is in simple terms.", "Explain what inflation is, in simple terms."),
    (
        "Convert 100 degrees Fahrenheit to Celsius and show your work.",
        "Convert 100 degrees Fahrenheit to Celsius and show the work.",
    ),
    (
        "Give me a recipe for chocolate chip cookies.",
        "Give me a recipe for chocolate-chip cookies.",
    ),
    (
        "Write a product description for a stainless steel water bottle.",
        "Write a product description for a stainless-steel water bottle.",
    ),
    ("Summarize this article in three sentences.", "Summarise this article in three sentences."),
    (
        "Write unit tests for a function that checks if a number is prime.",
        "Write unit tests for a function that checks whether a number is prime.",
    ),
    ("Plan a three-day trip to Rome on a budget.", "Plan a 3-day trip to Rome on a budget."),
    (
        "Explain the rules of chess to a beginner.",
        "Explain the rules of chess to a complete beginner.",
    ),
]
# ... one word that changes what is asked (reported, not asserted: they straddle it) ...
CONTENT_EDITS = [
    ("Create a weekly meal plan for a vegetarian.", "Create a weekly meal plan for a vegan."),
    ("Outline a 30-minute beginner yoga routine.", "Outline a 20-minute beginner yoga routine."),
    ("Describe the water cycle for a 10-year-old.", "Describe the water cycle for a 9-year-old."),
]
# ... the same intent in different words ...
PARAPHRASES = [
    (
        "Write a short poem about the ocean at night.",
        "Compose a few lines of verse describing the sea after dark.",
    ),
    (
        "Explain how a hash table handles collisions.",
        "When two keys map to the same bucket in a hash map, what happens?",
    ),
    (
        "Summarize the main causes of the French Revolution.",
        "Why did the revolution break out in France in 1789? Give the key reasons briefly.",
    ),
    (
        "List five tips for improving sleep quality.",
        "How can I get better rest at night? Give me a handful of suggestions.",
    ),
    ("Translate 'good morning' into Spanish.", "How do Spanish speakers say 'good morning'?"),
    (
        "Write a Python function that reverses a string.",
        "In Python, implement a routine that returns its text argument backwards.",
    ),
    (
        "Describe the water cycle for a 10-year-old.",
        "Explain to a child how rain forms and water moves around the Earth.",
    ),
    (
        "Give me three ideas for a birthday party for my daughter.",
        "My girl is turning seven; suggest a few themes for her celebration.",
    ),
    (
        "What are the benefits of regular exercise?",
        "Why is working out often good for your health?",
    ),
    (
        "Draft an email asking my manager for a day off on Friday.",
        "Help me write a message to my supervisor requesting leave at the end of this week.",
    ),
    (
        "Compare the pros and cons of electric cars and petrol cars.",
        "Is an EV better than a combustion-engine vehicle? Weigh the advantages and drawbacks.",
    ),
    ("Write a haiku about autumn leaves.", "Compose a 5-7-5 poem on foliage falling in the fall."),
    (
        "Explain the difference between a list and a tuple in Python.",
        "In Python, when should I use an immutable sequence instead of a mutable one?",
    ),
    (
        "Create a weekly meal plan for a vegetarian.",
        "Plan seven days of meat-free breakfasts, lunches and dinners.",
    ),
    (
        "How do I reset my router to factory settings?",
        "My wifi box is misbehaving; walk me through restoring its original configuration.",
    ),
    (
        "Write a SQL query that returns the ten most recent orders.",
        "Using SQL, fetch the latest 10 rows from the orders table sorted by date.",
    ),
    (
        "Write a cover letter for a junior data analyst position.",
        "Help me apply for an entry-level analytics job with a letter to the hiring manager.",
    ),
    (
        "Explain recursion with a simple example.",
        "What does it mean for a function to call itself? Illustrate it.",
    ),
    ("What is the capital of Australia?", "Which city is the seat of Australia's government?"),
    ("Suggest a name for my new coffee shop.", "I'm opening a cafe; what could I call it?"),
    (
        "Outline a 30-minute beginner yoga routine.",
        "Put together a half-hour sequence of easy poses for someone new to yoga.",
    ),
    (
        "Explain what inflation is in simple terms.",
        "In plain language, why do prices tend to go up over time?",
    ),
    (
        "Convert 100 degrees Fahrenheit to Celsius and show your work.",
        "How many degrees Celsius is 100°F? Walk through the calculation.",
    ),
    ("Give me a recipe for chocolate chip cookies.", "How do I bake cookies with chocolate chips?"),
    (
        "Plan a three-day trip to Rome on a budget.",
        "I have a long weekend and little money; make an itinerary for the Italian capital.",
    ),
    (
        "Explain the rules of chess to a beginner.",
        "Teach someone who has never played how the pieces move and how a game is won.",
    ),
    (
        "Summarize this article in three sentences.",
        "Condense the following text into a brief summary of about three lines.",
    ),
    (
        "Write unit tests for a function that checks if a number is prime.",
        "Create test cases for an is_prime routine.",
    ),
    ("How do I make pancakes?", "What is the way to cook pancakes at home?"),
    (
        "Recommend some books for learning machine learning.",
        "What should I read to get started with ML?",
    ),
]
# ... and different instructions, some sharing a template.
DISTINCT = [
    (
        "Write a short poem about the ocean at night.",
        "Explain how a hash table handles collisions.",
    ),
    (
        "Summarize the main causes of the French Revolution.",
        "List five tips for improving sleep quality.",
    ),
    ("Write a haiku about autumn leaves.", "Write a haiku about a busy train station."),
    ("Create a weekly meal plan for a vegetarian.", "Create a weekly workout plan for a beginner."),
    (
        "Give me three ideas for a birthday party for my daughter.",
        "Give me three ideas for a science fair project.",
    ),
    ("Plan a three-day trip to Rome on a budget.", "Plan a three-day trip to Tokyo on a budget."),
    ("What is the capital of Australia?", "What is the capital of Canada?"),
    (
        "Explain recursion with a simple example.",
        "Explain dynamic programming with a simple example.",
    ),
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    """The shipped all-MiniLM-L6-v2, loaded once for this module, with the hub offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        pytest.importorskip("sentence_transformers", reason="needs the dedup extra")
        yield SentenceTransformerEmbedder(batch_size=32)


def _cosines(model: SentenceTransformerEmbedder, pairs: list[tuple[str, str]]) -> list[float]:
    a = model.encode([x for x, _ in pairs])
    b = model.encode([y for _, y in pairs])
    return [float(x) for x in (a * b).sum(axis=1)]


def test_default_threshold_separates_trivial_edits_from_paraphrases(
    minilm: SentenceTransformerEmbedder,
) -> None:
    near, para, distinct, edits = (
        _cosines(minilm, p) for p in (NEAR, PARAPHRASES, DISTINCT, CONTENT_EDITS)
    )
    figures = {
        name: f"n={len(c)} min={min(c):.4f} median={np.median(c):.4f} max={max(c):.4f}"
        for name, c in (
            ("near", near),
            ("paraphrase", para),
            ("distinct", distinct),
            ("content edit", edits),
        )
    }
    assert min(near) > DEFAULT_THRESHOLD, figures
    assert max(para) < DEFAULT_THRESHOLD and max(distinct) < DEFAULT_THRESHOLD, figures
    # The margins docs/dedup.md reports (so a model or threshold change shows up here).
    assert min(near) - DEFAULT_THRESHOLD > 0.005, figures
    assert DEFAULT_THRESHOLD - max(para) > 0.002, figures


def test_model_vectors_are_unit_length_and_deterministic(
    minilm: SentenceTransformerEmbedder,
) -> None:
    texts = [x for x, _ in NEAR[:8]]
    one = minilm.encode(texts)
    assert one.dtype == np.float32 and one.shape == (8, 384)
    assert np.allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)
    # Batch composition does not change a vector beyond float noise.
    alone = minilm.encode(texts[:1])
    assert np.allclose(alone[0], one[0], atol=1e-5)


async def test_real_model_drops_near_duplicates_and_keeps_paraphrases(
    minilm: SentenceTransformerEmbedder,
) -> None:
    d = SemanticDedup(SemanticDedupConfig(enabled=True), embedder=lambda: minilm)
    entries: list[tuple[str, str]] = []
    for group in (NEAR, PARAPHRASES):
        for i, (a, b) in enumerate(group):
            entries += [(f"{id(group)}-{i}-a", a), (f"{id(group)}-{i}-b", b)]
    originals = {a for a, _ in NEAR + PARAPHRASES}
    # Checked concurrently, one request per pair: originals first, then the variants.
    async with asyncio.timeout(60):
        await asyncio.gather(*(d.check([e]) for e in entries if e[1] in originals))
        variants = [e for e in entries if e[1] not in originals]
        verdicts = await asyncio.gather(*(d.check_one(*e) for e in variants))
    got = {text: v for (_, text), v in zip(variants, verdicts, strict=True)}
    for a, b in NEAR:
        v = got[b]
        assert v is not None, (a, b)
        assert v.fields()["reason"] == "near_duplicate"
        assert v.similarity > DEFAULT_THRESHOLD
    for a, b in PARAPHRASES:
        assert got[b] is None, (a, b)


# ------------------------------------------------- SELF-GUIDE, scripted student
class Student:
    """A ChatCaller writing the scripted inputs in order, then the same label."""

    name = "student"
    model = "m"
    structured_output = False

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Reply:
        if params.get("stage") == "generate":
            return Reply(self.inputs[int(params["sample_index"])])
        return Reply(["An output."] * int(params.get("n") or 1))


async def test_selfguide_drops_near_duplicate_inputs(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    inputs = [
        "Write a short poem about the ocean at night.",
        "Explain how a hash table handles collisions.",
        "Write a short poem about the ocean at night!",  # near dup of prompt 0, same round
        "When two keys map to the same bucket in a hash map, what happens?",  # paraphrase
        "Explain how a hash table handles collisions?",  # near dup of round 1, prompt 1
        "Describe the water cycle for a 10-year-old.",
    ]
    task = {"instruction": "Do it.", "examples": [{"input": "gold", "output": "out"}]}
    (tmp_path / "task.json").write_text(json.dumps(task))
    (tmp_path / "sg.toml").write_text(
        """[run]
method = "selfguide"
input = "task.json"

[endpoints.s]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "s"

[method.selfguide]
generation_rounds = 2
per_round = 3
noise_filter = false
output_length_filter = false
annotate_n = 1

[method.selfguide.semantic_dedup]
enabled = true
"""
    )
    config = load_config(tmp_path / "sg.toml")
    cfg = method_config(config)
    assert isinstance(cfg, SelfGuideConfig)
    student = Student(inputs)
    stages: dict[str, Counts] = {}
    ctx = MethodContext(
        config=config,
        callers={"strong": student, "target": student, "judge": student},
        input_path=config.resolve("task.json"),
        stage=lambda name: stages.setdefault(name, Counts()),
    )
    method = SelfGuideMethod(cfg)
    adapter = Adapter(method, ctx)
    method.bind(adapter.ctx)
    assert method.semantic is not None
    method.semantic = SemanticDedup(cfg.semantic_dedup, embedder=lambda: minilm)  # loaded once
    await adapter.prepare()
    out: list[RowOut] = []
    for item in adapter.work():
        out += await adapter.process(item)  # type: ignore[arg-type]
    kept = [r for k, r in out if k == "kept"]
    dups = [r for k, r in out if k == "rejected" and r["filter"] == "near_duplicate"]
    assert [r["input"] for r in kept] == [inputs[0], inputs[1], inputs[3], inputs[5]]
    assert [r["input"] for r in dups] == [inputs[2], inputs[4]]
    ids = {r["input"]: r["id"] for r in kept}
    assert dups[0]["duplicate_of"] == ids[inputs[0]] and dups[1]["duplicate_of"] == ids[inputs[1]]
    assert all(r["reason"] == "near_duplicate" and r["similarity"] > 0.89 for r in dups)
    report = method.report()
    assert [r["dropped"]["near_duplicate"] for r in report["rounds"]] == [1, 1]
    assert report["inputs"]["dropped"]["near_duplicate"] == 2
    assert report["semantic_dedup"]["dropped"] == 2


# ---------------------------------------------------- CodecLM, scripted roles
class CodecRole:
    """A ChatCaller for one CodecLM role, answering by stage (instructions from a list)."""

    structured_output = False

    def __init__(self, role: str, instructions: list[str]) -> None:
        self.name = self.model = role
        self.instructions = instructions
        self.stages: list[str] = []

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Reply:
        content = str(messages[-1]["content"])
        stage = params.get("stage")
        self.stages.append(str(stage))
        if stage == "encode":
            return Reply("Use case: Writing help\nSkills: Poetry, Explaining")
        if stage == "decode":
            return Reply("\n".join(f"{i}. {t}" for i, t in enumerate(self.instructions, 1)))
        if stage == "rubrics":
            return Reply("Rubrics:\n1. Depth\nActions:\n1. Add a constraint.")
        if stage == "judge":
            strong_first = content.index("STRONG") < content.index("TARGET")
            return Reply("8 4" if strong_first else "4 8")
        return Reply(f"{self.name.upper()} answer.")


class SequentialCodecRole(CodecRole):
    """A CodecRole whose k-th decode answers ``decodes[k]`` and whose encode names a use
    case after the seed (so each seed is its own metadata item)."""

    def __init__(self, role: str, decodes: list[list[str]]) -> None:
        super().__init__(role, [])
        self.decodes = decodes

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Reply:
        content = str(messages[-1]["content"])
        stage = params.get("stage")
        if stage == "encode":
            self.stages.append("encode")
            topic = "Poetry" if "poem" in content else "Hashing"
            return Reply(f"Use case: {topic} help\nSkills: {topic}")
        if stage == "decode":
            self.stages.append("decode")
            lines = self.decodes[self.stages.count("decode") - 1]
            return Reply("\n".join(f"{i}. {t}" for i, t in enumerate(lines, 1)))
        return await super().chat(messages, **params)


async def _run_codeclm(
    tmp_path: Path,
    seeds: list[str],
    counts: tuple[int, int],
    callers: dict[str, CodecRole],
    embedder: SentenceTransformerEmbedder,
) -> tuple[Any, list[RowOut]]:
    """A CodecLM method with semantic dedup on ``embedder``, its items processed one
    after the other; ``counts`` = (metadata_count, instructions_per_metadata)."""
    (tmp_path / "seeds.jsonl").write_text(
        "".join(json.dumps({"instruction": seed}) + "\n" for seed in seeds)
    )
    (tmp_path / "c.toml").write_text(
        f"""[run]
method = "codeclm"
input = "seeds.jsonl"
output = "out"

[endpoints.e]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "e"

[method.codeclm]
metadata_count = {counts[0]}
instructions_per_metadata = {counts[1]}

[method.codeclm.semantic_dedup]
enabled = true
"""
    )
    config = load_config(tmp_path / "c.toml")
    stages: dict[str, Counts] = {}
    ctx = MethodContext(
        config=config,
        callers=dict(callers),
        input_path=config.resolve("seeds.jsonl"),
        stage=lambda name: stages.setdefault(name, Counts()),
    )
    method = create_method(config, ctx)
    assert isinstance(method, Adapter) and isinstance(method.method, CodecLM)
    codec = method.method
    await method.prepare()  # builds the method's dedup, replaced by one on the shared model
    assert codec.semantic is not None
    codec.semantic = SemanticDedup(SemanticDedupConfig(enabled=True), embedder=lambda: embedder)
    out: list[RowOut] = []
    for item in method.work():
        out += await method.process(item)  # type: ignore[arg-type]
    return codec, out


async def test_codeclm_checks_each_instruction_when_it_is_kept(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    instructions = [
        "Write a short poem about the ocean at night.",
        "Explain how a hash table handles collisions.",
        "Write a short poem about the ocean at night!",
    ]
    callers = {r: CodecRole(r, instructions) for r in ("strong", "target", "judge")}
    method, out = await _run_codeclm(tmp_path, ["Write a poem."], (1, 3), callers, minilm)
    kept = [r for k, r in out if k == "kept"]
    dups = [r for k, r in out if k == "rejected"]
    assert len(kept) == 2 and len(dups) == 1
    assert instructions[1] in {r["instruction"] for r in kept}
    (dup,) = dups
    poem = next(r for r in kept if r["instruction"] != instructions[1])
    assert dup["filter"] == dup["reason"] == "near_duplicate"
    assert dup["duplicate_of"] == poem["id"] and dup["similarity"] > DEFAULT_THRESHOLD
    assert {dup["instruction"], poem["instruction"]} == {instructions[0], instructions[2]}
    # The three pairs of one item run at once: all pass the probe (nothing is kept
    # yet), so the duplicate's calls are paid and the check at keep drops it.
    last = dup["history"][-1]  # rejected rows keep responses and scores in their history
    assert last["strong_response"] == "STRONG answer." and last["scores"]["gap"] > 0
    report = method.report()
    assert report["kept"] == 2
    sd = report["semantic_dedup"]
    assert (sd["probed"], sd["dropped_before_calls"], sd["dropped"], sd["indexed"]) == (3, 0, 1, 2)
    assert sd["embeddings_reused"] == 3  # each instruction embedded once, at its probe
    assert method.semantic._probed == {}  # nothing left behind


async def test_codeclm_drops_a_near_duplicate_before_paying_for_its_responses(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    poem, poem2 = (
        "Write a short poem about the ocean at night.",
        "Write a short poem about the ocean at night!",
    )
    callers = {r: SequentialCodecRole(r, [[poem], [poem2]]) for r in ("strong", "target", "judge")}
    # One item after the other: the poem is kept before its twin is probed.
    method, out = await _run_codeclm(
        tmp_path, ["Write a poem.", "Explain hashing."], (2, 1), dict(callers), minilm
    )
    assert [k for k, _ in out] == ["kept", "rejected"]
    (_, kept), (_, dup) = out
    assert kept["instruction"] == poem and dup["instruction"] == poem2
    assert dup["filter"] == dup["reason"] == "near_duplicate" and dup["duplicate_of"] == kept["id"]
    # Dropped before its responses: no response, no scores, no calls paid for it.
    assert dup["response"] is None and dup["scores"] is None and dup["iteration"] == 1
    assert dup["history"] == []  # no answer was paid for
    assert callers["target"].stages == ["respond"]  # the kept pair's response only
    assert callers["judge"].stages.count("judge") == 2  # the kept pair's two orders
    sd = method.report()["semantic_dedup"]
    assert (sd["probed"], sd["dropped_before_calls"], sd["dropped"], sd["indexed"]) == (2, 1, 0, 1)
    assert method.semantic._probed == {}
