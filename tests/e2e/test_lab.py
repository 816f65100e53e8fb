"""End to end: LAB on configs/lab.toml (sample taxonomy, simulated endpoint) via the CLI."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import CONFIGS, run_cli


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(line) for line in (out / shard["name"]).read_text().splitlines())
    return rows


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lab_config_runs_and_counts_add_up(tmp_path: Path) -> None:
    out = tmp_path / "lab"
    proc = run_cli("run", str(CONFIGS / "lab.toml"), "--quiet", "--set", f"run.output={out}")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["simulated"] is True
    kept, rejected, failed = (_rows(out, k) for k in ("kept", "rejected", "failed"))
    report = json.loads((out / "report.json").read_text())["method_report"]
    per_leaf = report["per_leaf"]
    assert set(per_leaf) == {
        "compositional_skills/extraction/summarization/meeting_notes",
        "compositional_skills/writing/freeform/haiku",
        "knowledge/science/astronomy/solar_system",
    }
    assert {e["kind"] for e in per_leaf.values()} == {
        "freeform_skill",
        "grounded_skill",
        "knowledge",
    }
    for leaf, entry in per_leaf.items():
        leaf_kept = [r for r in kept if r["leaf"] == leaf]
        leaf_rej = [r for r in rejected if r["leaf"] == leaf]
        assert entry["kept"] == len(leaf_kept)
        assert entry["failed"] == sum(r.get("leaf") == leaf for r in failed)
        assert {f: n for f, n in entry["dropped"].items() if n} == dict(
            Counter(r["filter"] for r in leaf_rej)
        )
    assert report["kept"] == len(kept) > 0
    assert sum(report["dropped_by_filter"].values()) == len(rejected)
    assert any(r["kind"] == "knowledge" for r in kept)
    # Derived sets: recorded in the manifest with matching checksums and counts.
    derived = {d["name"]: d for d in manifest["extra"]["derived"]}
    assert set(derived) == {"knowledge.jsonl", "skills.jsonl", "mixed.jsonl"}
    for name, d in derived.items():
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == d["sha256"]
        assert len(data.splitlines()) == d["rows"]
    knowledge = _jsonl(out / "knowledge.jsonl")
    skills = _jsonl(out / "skills.jsonl")
    kept_knowledge = {r["id"] for r in kept if r["kind"] == "knowledge"}
    qa = [r for r in knowledge if r["dataset"] == "knowledge_qa"]
    assert {r["source_id"] for r in qa} == kept_knowledge and all(r["unmask"] for r in qa)
    per_dataset = Counter(r["dataset"] for r in skills)
    skill_leaves = {r["leaf"] for r in kept if r["kind"] != "knowledge"}
    assert per_dataset["knowledge_qa"] == len(kept_knowledge)  # the replay
    assert per_dataset["knowledge_qa_raft_p0.4"] == len(kept_knowledge)
    assert sum(n for d, n in per_dataset.items() if d.endswith("_skill")) == 30 * len(skill_leaves)
    for sample in knowledge + skills:
        assert sample["messages"][0]["role"] == "system"
    mixed = _jsonl(out / "mixed.jsonl")
    haiku = "compositional_skills/writing/freeform/haiku"
    counts = Counter(r["leaf"] for r in mixed)
    assert counts[haiku] == 10  # the recipe's per-leaf count
    assert len(mixed) == 10 + sum(1 for r in kept if r["leaf"] != haiku)
    assert all(r["messages"][1]["content"] for r in mixed)
