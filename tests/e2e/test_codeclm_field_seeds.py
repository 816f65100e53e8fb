"""CodecLM on real seeds made elsewhere: the first 12 Self-Instruct seed tasks as Stanford
Alpaca ships them (tests/fixtures/field/codeclm, source and licence in its README), read
unchanged by ``validate`` and by a run on the SIMULATED endpoint (127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, run_cli

SEEDS = ROOT / "tests" / "fixtures" / "field" / "codeclm" / "seed_tasks_head12.jsonl"


def codeclm_config(tmp: Path, seeds: Path = SEEDS) -> Path:
    """A small CodecLM job over ``seeds`` on the simulated endpoint (``tmp/codeclm.toml``)."""
    cfg = tmp / "codeclm.toml"
    cfg.write_text(
        f"""
[run]
method = "codeclm"
input = "{seeds}"
output = "out"
seed = 0

[endpoints.strong]
base_url = "sim"
model = "sim-strong"
max_concurrency = 32
sim = {{ latency_ms = 1, seed = 1 }}

[endpoints.target]
base_url = "sim"
model = "sim-target"
max_concurrency = 32
sim = {{ latency_ms = 1, seed = 2 }}

[roles]
strong = "strong"
target = "target"
judge = "strong"

[method.codeclm]
metadata_count = 14
instructions_per_metadata = 1
max_tokens = 128
response_max_tokens = 64
"""
    )
    return cfg


def test_alpaca_seed_tasks_are_read_and_run_unchanged(tmp_path: Path) -> None:
    seeds = [json.loads(line) for line in SEEDS.read_text().splitlines()]
    assert len(seeds) == 12 and all({"id", "instruction", "instances"} <= set(s) for s in seeds)
    cfg = codeclm_config(tmp_path)
    val = run_cli("validate", str(cfg), "--json")
    assert val.returncode == 0, val.stderr
    doc = json.loads(val.stdout)["input"]
    assert (doc["items_ok"], doc["items_bad"], doc["problems"]) == (12, 0, [])

    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["totals"]["failed"] == 0
    rows = [
        json.loads(line)
        for shard in manifest["shards"]
        if shard["kind"] in ("kept", "rejected")
        for line in (out / shard["name"]).read_text().splitlines()
    ]
    assert all(r["simulated"] is True for r in rows)
    assert manifest["totals"]["kept"] > 0
    # 14 metadata items: each of the 12 seeds' own metadata first, then 2 augmented ones
    # (a seed's use case with skills drawn from all seeds).
    assert len(rows) == 14
    own = [r for r in rows if r["origin"] == "seed"]
    assert sorted(r["seed_id"] for r in own) == sorted(s["id"] for s in seeds)
    assert all(r["basic_instruction"] and r["history"] for r in rows)
    report = json.loads((out / "report.json").read_text())["method_report"]
    assert (report["seeds_read"], report["seeds_failed"], report["metadata_items"]) == (12, 0, 14)


def test_bad_seed_lines_are_failed_rows_naming_their_line(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    lines = SEEDS.read_text().splitlines()[:2]
    bad = ['{"id": "x1", "name": "no_instruction"}', "not json", lines[0]]
    seeds.write_text("\n".join([*lines, *bad]) + "\n")
    cfg = codeclm_config(tmp_path, seeds)
    val = run_cli("validate", str(cfg), "--json")
    doc = json.loads(val.stdout)["input"]
    assert (doc["items_ok"], doc["items_bad"]) == (2, 3)
    assert [p["line"] for p in doc["problems"]] == [3, 4, 5]
    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode in (0, 5), proc.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    failed = [
        json.loads(line)
        for shard in manifest["shards"]
        if shard["kind"] == "failed"
        for line in (out / shard["name"]).read_text().splitlines()
    ]
    assert sorted(r["source"] for r in failed) == [f"seeds.jsonl:{n}" for n in (3, 4, 5)]
    assert {r["stage"] for r in failed} == {"input"}
    assert any("duplicate id 'seed_task_0'" in r["error"] for r in failed)

    seeds.write_text("")
    empty = run_cli("run", str(cfg), "--quiet", "--force-new")
    assert empty.returncode == 2, empty.stderr
    assert "holds no seed records" in empty.stderr
