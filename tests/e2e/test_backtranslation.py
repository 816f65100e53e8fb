"""End to end: the backtranslation CLI on configs/backtranslation.toml (simulated endpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from tests.conftest import CONFIGS, run_cli


class _Source(msgspec.Struct, forbid_unknown_fields=True):
    doc_id: str
    offset: int


class KeptRow(msgspec.Struct, forbid_unknown_fields=True):
    """The backtranslation kept-row schema."""

    id: str
    instruction: str
    response: str
    header: str
    score: float
    scores: list[float]
    reasoning: str
    threshold: float
    source: _Source
    tag: str
    system: str
    models: dict[str, str]
    simulated: bool


class RejectedRow(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    instruction: str
    response: str
    header: str
    score: float
    scores: list[float]
    reasoning: str
    threshold: float
    source: _Source
    reason: str
    models: dict[str, str]
    simulated: bool


def _rows(out: Path, kind: str) -> list[dict[str, object]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: list[dict[str, object]] = []
    for shard in manifest["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(line) for line in (out / shard["name"]).read_text().splitlines())
    return rows


def test_backtranslation_config_runs_offline(tmp_path: Path) -> None:
    out = tmp_path / "bt"
    proc = run_cli(
        "run", str(CONFIGS / "backtranslation.toml"), "--quiet", "--set", f"run.output={out}"
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["simulated"] is True
    assert manifest["method"] == "backtranslation"
    kept, rejected, failed = _rows(out, "kept"), _rows(out, "rejected"), _rows(out, "failed")
    assert kept and rejected
    for row in kept:
        k = msgspec.convert(row, KeptRow)
        assert k.tag == "S_w" and k.system == "Answer with knowledge from web search."
        assert k.score >= k.threshold and 1 <= k.score <= 5
        assert k.instruction.startswith("[simulated]") and k.simulated
    for row in rejected:
        r = msgspec.convert(row, RejectedRow)
        assert r.score < r.threshold
    report = json.loads((out / "report.json").read_text())["method_report"]
    corpus = report["corpus"]
    # every segment that survived the rules became exactly one row; bad records failed rows
    assert len(kept) + len(rejected) + len(failed) == corpus["segments"] + corpus["bad_records"]
    assert corpus["segments"] == corpus["segments_read"] - sum(corpus["dropped"].values())
    assert manifest["totals"]["items"] == corpus["segments"] + corpus["bad_records"]
    assert set(corpus["dropped"]) >= {"duplicate", "header_caps", "no_header", "too_short"}
    assert sum(report["score_histogram"].values()) == len(kept) + len(rejected)
    assert {r["stage"] for r in failed} <= {"input", "backtranslate", "curate"}
    assert len({r["id"] for r in kept + rejected + failed}) == len(kept + rejected + failed)
