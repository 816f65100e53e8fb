"""End to end: the backtranslation CLI on configs/backtranslation.toml (simulated endpoints)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from tests.conftest import CONFIGS, run_cli


class _Round(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    model: str
    score: float
    scores: list[float]
    reasoning: str


class Row(msgspec.Struct, forbid_unknown_fields=True):
    """The backtranslation row schema (every kind; null where the kind has no value)."""

    id: str
    seed_id: str
    source: str
    doc_id: str
    offset: int | None
    part: int | None
    header: str | None
    instruction: str
    response: str | None
    score: float | None
    scores: list[float] | None
    reasoning: str | None
    rounds: list[_Round] | None
    threshold: float | None
    tag: str | None
    system: str | None
    reason: str | None
    stage: str | None
    error_kind: str | None
    error: str | None
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
        k = msgspec.convert(row, Row)
        assert k.tag == "S_w" and k.system == "Answer with knowledge from web search."
        assert k.score is not None and k.threshold == 4.5 and k.score >= 4.5  # A5
        assert k.instruction.startswith("[simulated]") and k.simulated
        assert k.rounds is not None and [r.role for r in k.rounds] == ["strong"]
    for row in rejected:
        r = msgspec.convert(row, Row)
        assert r.score is not None and r.threshold is not None and r.score < r.threshold
        assert r.tag is None and r.reason
    for row in failed:
        msgspec.convert(row, Row)
    mix = [json.loads(x) for x in (out / "training_mix.jsonl").read_text().splitlines()]
    assert [m["origin"] for m in mix] == ["seed"] * 5 + ["augmented"] * len(kept)
    assert {m["messages"][0]["content"] for m in mix[:5]} == {
        "Answer in the style of an AI Assistant."
    }
    derived = {d["name"]: d["rows"] for d in manifest["extra"]["derived"]}
    assert derived == {"training_mix.jsonl": 5 + len(kept)}
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
