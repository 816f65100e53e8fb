"""Catalog and queries over outputs written by the real ShardSink, finished or still going."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.io.shards import ShardSink
from engine.viewer.catalog import Catalog
from engine.viewer.query import RowQuery, facets, reason_class, run_query, summarize


def _row(i: int) -> tuple[str, dict[str, Any]]:
    if i % 3 == 0:
        return "kept", {"id": f"k{i}", "instruction": f"task {i}", "scores": {"gap": i % 7}}
    if i % 3 == 1:
        gap = -(i % 5) / 2
        return "rejected", {
            "id": f"r{i}",
            "instruction": f"task {i} about caf\u00e9",
            "scores": {"gap": gap},
            "reason": f"gap {gap:+.2f} within theta 3 after 4 iterations",
        }
    return "failed", {"id": f"f{i}", "stage": "judge" if i % 2 else "respond", "error": "timeout"}


def _output(out: Path, items: int, shard_records: int = 10) -> ShardSink:
    sink, _ = ShardSink.open(
        out,
        shard_records=shard_records,
        config_hash="h",
        input_fingerprint="f",
        method="test",
        engine_version="0",
        simulated=True,
    )
    for i in range(items):
        sink.write_item(i, [_row(i)])
    return sink


def _expected(items: int, kind: str) -> list[str]:
    return [row["id"] for k, row in map(_row, range(items)) if k == kind]


def test_pages_follow_the_manifest_across_shards(tmp_path: Path) -> None:
    _output(tmp_path, 300).close(complete=True)
    catalog = Catalog(tmp_path)
    snap = catalog.snapshot()
    assert snap.manifest is not None and snap.manifest.complete
    assert snap.rows("rejected") == 100 and snap.uncommitted("rejected") == 0
    assert len(snap.shards["rejected"]) > 3  # several shards
    ids = [orjson.loads(f.raw)["id"] for f in catalog.read("rejected", 0, 1000)]
    assert ids == _expected(300, "rejected")
    page = catalog.read("rejected", 95, 50)
    assert [f.position for f in page] == [95, 96, 97, 98, 99]
    assert catalog.locate("kept", 100) is None


def test_a_run_still_writing_shows_its_partial_shard_and_keeps_positions(tmp_path: Path) -> None:
    sink, _ = ShardSink.open(
        tmp_path,
        shard_records=1000,
        config_hash="h",
        input_fingerprint="f",
        method="test",
        engine_version="0",
        simulated=True,
    )
    pad = "x" * 30_000  # rows past the sink's 256 KiB buffer reach the disk uncommitted
    for i in range(20):
        sink.write_item(i, [("kept", {"id": f"k{i}", "pad": pad})])
    assert (tmp_path / "kept-00000.jsonl.partial").exists()
    catalog = Catalog(tmp_path, ttl_s=0.0)
    snap = catalog.snapshot()
    on_disk = snap.rows("kept")
    assert 0 < on_disk < 20 and snap.uncommitted("kept") == on_disk  # a half line is not a row
    before = [(f.position, f.raw) for f in catalog.read("kept", 0, 100)]
    assert all(not f.shard.committed for f in catalog.read("kept", 0, 100))
    sink.commit()  # renames kept-00000.jsonl.partial -> kept-00000.jsonl
    after = catalog.read("kept", 0, 100)
    assert [(f.position, f.raw) for f in after][:on_disk] == before
    assert len(after) == 20 and all(f.shard.committed for f in after)
    assert [orjson.loads(f.raw)["id"] for f in after] == [f"k{i}" for i in range(20)]


def test_an_orphan_shard_below_the_manifest_is_not_shown(tmp_path: Path) -> None:
    _output(tmp_path, 30).close(complete=True)
    (tmp_path / "kept-00000.jsonl.partial").write_bytes(b'{"id": "orphan"}\n')
    catalog = Catalog(tmp_path)
    assert "orphan" not in b"".join(f.raw for f in catalog.read("kept", 0, 100)).decode()


def test_no_manifest_yet(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "missing")
    snap = catalog.snapshot()
    assert snap.manifest is None and snap.rows("kept") == 0
    assert catalog.read("kept", 0, 10) == []


def test_filters_by_reason_stage_score_and_text(tmp_path: Path) -> None:
    _output(tmp_path, 300).close(complete=True)
    catalog = Catalog(tmp_path)
    cls = reason_class("gap -1.00 within theta 3 after 4 iterations")
    assert cls == "gap # within theta # after # iterations"
    page = run_query(catalog, RowQuery(kind="rejected", reason=cls), limit=500)
    assert len(page.rows) == 100 and page.next is None
    page = run_query(catalog, RowQuery(kind="failed", stage="judge"), limit=500)
    assert {row["stage"] for _, row in page.rows} == {"judge"}
    assert len(page.rows) == sum(1 for i in range(300) if i % 3 == 2 and i % 2)
    page = run_query(
        catalog, RowQuery(kind="rejected", score="scores.gap", score_min=-1.0, score_max=-0.5)
    )
    gaps = {row["scores"]["gap"] for _, row in page.rows}
    assert gaps == {-1.0, -0.5}
    page = run_query(catalog, RowQuery(kind="rejected", text="TASK 13 ABOUT CAF\u00c9"))
    assert [row["id"] for _, row in page.rows] == ["r13"]


def test_a_filtered_search_stops_on_its_budget_and_goes_on_from_there(tmp_path: Path) -> None:
    _output(tmp_path, 300).close(complete=True)
    catalog = Catalog(tmp_path)
    query = RowQuery(kind="rejected", text="task 298")  # not a rejected row: no match
    page = run_query(catalog, query, max_rows=40)
    assert page.rows == [] and page.budget_spent and page.next == 40
    page = run_query(catalog, query, start=page.next or 0, max_rows=40)
    assert page.next == 80
    page = run_query(catalog, RowQuery(kind="rejected", text="task 295"), start=80)
    assert [row["id"] for _, row in page.rows] == ["r295"] and page.next is None


def test_facets_and_summaries(tmp_path: Path) -> None:
    _output(tmp_path, 60).close(complete=True)
    catalog = Catalog(tmp_path)
    f = facets(catalog, "rejected")
    assert f["sampled"] == f["total"] == 20
    assert f["reasons"][0][0] == "gap # within theta # after # iterations"
    assert f["scores"] == ["scores.gap"]
    assert facets(catalog, "failed")["stages"]
    found = catalog.read("rejected", 0, 1)[0]
    summary = summarize(found, orjson.loads(found.raw), simulated=True)
    assert summary["title"] == "task 1 about caf\u00e9" and summary["simulated"]
    assert summary["scores"] == {"gap": -0.5} and summary["reason"].startswith("gap -0.50")


def test_an_unreadable_line_is_shown_not_raised(tmp_path: Path) -> None:
    _output(tmp_path, 9).close(complete=True)
    path = tmp_path / "kept-00000.jsonl"
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(b"{broken\n" + data.split(b"\n", 1)[1])
    page = run_query(Catalog(tmp_path), RowQuery(kind="kept"))
    assert "_unreadable" in page.rows[0][1]


@pytest.mark.parametrize("text", ['"quoted"', "back\\slash", "line\nbreak"])
def test_text_search_decodes_escaped_characters(tmp_path: Path, text: str) -> None:
    sink, _ = ShardSink.open(
        tmp_path,
        shard_records=10,
        config_hash="h",
        input_fingerprint="f",
        method="t",
        engine_version="0",
        simulated=False,
    )
    sink.write_item(0, [("kept", {"id": "a", "instruction": f"say {text} now"})])
    sink.write_item(1, [("kept", {"id": "b", "instruction": "other"})])
    sink.close(complete=True)
    page = run_query(Catalog(tmp_path), RowQuery(kind="kept", text=text))
    assert [row["id"] for _, row in page.rows] == ["a"]
