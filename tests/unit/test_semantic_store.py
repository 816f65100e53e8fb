"""The embeddings file beside the shards: round trip, keys, model, torn tails, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

from engine.dedup.semantic import SemanticDedup, SemanticDedupConfig  # noqa: E402
from engine.dedup.store import VectorStore, vector_key  # noqa: E402
from tests.unit.test_semantic_dedup import FakeEmbedder, rows, unit  # noqa: E402


def test_round_trip_by_row_id_and_text(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v", "m")
    assert store.open() == 0 and store.lookup([vector_key("1", "a")]) == [None]
    a, b = unit(1, 0, 0), unit(0, 1, 0)
    store.append([vector_key("1", "a"), vector_key("2", "b")], rows(a, b))
    store.append([vector_key("3", "c")], rows(unit(0, 0, 1)))
    assert store.open() == 3
    got = store.lookup([vector_key("2", "b"), vector_key("1", "a"), vector_key("1", "b")])
    assert got[0] is not None and np.array_equal(got[0], b)
    assert got[1] is not None and np.array_equal(got[1], a)
    assert got[2] is None  # same id, another text: not this row's embedding
    assert vector_key("1", "a") != vector_key("1a", "")  # id and text are kept apart
    store.close()
    assert store.lookup([vector_key("1", "a")]) == [None]


def test_keys_sharing_their_first_half_are_told_apart(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v", "m")
    head = b"\x07" * 8
    k1, k2, k3 = head + b"\x01" * 8, head + b"\x02" * 8, head + b"\x03" * 8
    store.append([k1, k2], rows(unit(1, 0), unit(0, 1)))
    store.open()
    got = store.lookup([k2, k1, k3])
    assert np.array_equal(got[0], unit(0, 1)) and np.array_equal(got[1], unit(1, 0))
    assert got[2] is None


def test_another_model_or_a_bad_header_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "v"
    VectorStore(path, "model-a").append([vector_key("1", "a")], rows(unit(1, 0)))
    other = VectorStore(path, "model-b")
    assert other.open() == 0 and other.lookup([vector_key("1", "a")]) == [None]
    other.append([vector_key("2", "b")], rows(unit(0, 1)))  # restarts the file for model-b
    assert other.open() == 1 and other.lookup([vector_key("1", "a")]) == [None]
    assert VectorStore(path, "model-a").open() == 0
    path.write_bytes(b"not a vectors file\n" + b"\0" * 100)
    assert VectorStore(path, "model-b").open() == 0


def test_a_torn_last_record_is_ignored_then_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "v"
    store = VectorStore(path, "m")
    store.append([vector_key("1", "a")], rows(unit(1, 0)))
    whole = path.stat().st_size
    record = whole - (path.read_bytes().index(b"\n") + 1)  # after the header line
    with path.open("ab") as f:
        f.write(b"\x01" * 11)  # a crash mid-append
    assert store.open() == 1
    store.close()
    store.append([vector_key("2", "b")], rows(unit(0, 1)))
    assert path.stat().st_size == whole + record  # the torn bytes are gone
    assert store.open() == 2
    got = store.lookup([vector_key("2", "b")])[0]
    assert got is not None and np.array_equal(got, unit(0, 1))


def test_another_dimension_restarts_the_file(tmp_path: Path) -> None:
    store = VectorStore(tmp_path / "v", "m")
    store.append([vector_key("1", "a")], rows(unit(1, 0)))
    store.append([vector_key("2", "b")], rows(unit(0, 0, 1)))
    assert store.open() == 1 and store.lookup([vector_key("1", "a")]) == [None]


async def test_a_resume_reads_committed_embeddings_instead_of_embedding_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "semantic_dedup.vectors"
    vecs = {"a": unit(1, 0, 0), "b": unit(0, 1, 0), "b2": unit(0.02, 1, 0), "c": unit(0, 0, 1)}
    cfg = SemanticDedupConfig(enabled=True, threshold=0.9)
    first_embedder = FakeEmbedder(vecs)
    first = SemanticDedup(
        cfg, embedder=lambda: first_embedder, committed=list, store=VectorStore(path, "m")
    )
    verdicts = await first.check([("1", "a"), ("2", "b"), ("3", "b2")])
    assert verdicts[:2] == [None, None] and verdicts[2] is not None  # "3" is not stored
    assert VectorStore(path, "m").open() == 2
    # Rows "1" and "2" were committed; "9" (text "c") was committed by a run whose
    # embeddings never reached the file.
    committed = [("1", "a"), ("2", "b"), ("9", "c")]
    embedder = FakeEmbedder(vecs)
    resumed = SemanticDedup(
        cfg,
        embedder=lambda: embedder,
        committed=lambda: iter(committed),
        store=VectorStore(path, "m"),
    )
    dup = await resumed.probe("4", "b2")
    assert dup is not None and dup.duplicate_of == "2"  # found through the stored "b"
    assert embedder.batches[0] == ["c"]  # the rebuild embedded only what was not stored
    report = resumed.report()
    assert (report["rebuilt_from_output"], report["rebuilt_from_stored_embeddings"]) == (3, 2)
    # "c" was stored by that rebuild: a third start embeds nothing.
    again = FakeEmbedder(vecs)
    third = SemanticDedup(
        cfg, embedder=lambda: again, committed=lambda: iter(committed), store=VectorStore(path, "m")
    )
    assert await third.probe("5", "c") is not None
    assert again.batches == [["c"]]  # the probe's own text only
    assert third.report()["rebuilt_from_stored_embeddings"] == 3


async def test_an_unwritable_store_warns_once_and_dedup_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vecs = {"a": unit(1, 0), "b": unit(0, 1), "a2": unit(1, 0.02)}
    d = SemanticDedup(
        SemanticDedupConfig(enabled=True),
        embedder=lambda: FakeEmbedder(vecs),
        store=VectorStore(tmp_path / "missing-dir" / "v", "m"),
    )
    with caplog.at_level(logging.WARNING, logger="engine"):
        assert await d.check([("1", "a")]) == [None]
        assert await d.check([("2", "b")]) == [None]
        verdict = await d.check_one("3", "a2")
    assert verdict is not None and verdict.duplicate_of == "1"
    warnings = [r for r in caplog.records if "embeddings are not kept" in r.getMessage()]
    assert len(warnings) == 1
