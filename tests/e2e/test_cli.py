"""End to end: the CLI in a subprocess, on the built-in simulated endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tests.conftest import CONFIGS, run_cli

SMALL = [
    "method.codeclm.metadata_count=10",
    "method.codeclm.instructions_per_metadata=3",
    "run.shard_records=7",
]


def _sets(out: Path, extra: list[str] | None = None) -> list[str]:
    args: list[str] = []
    for item in [f"run.output={out}", *SMALL, *(extra or [])]:
        args += ["--set", item]
    return args


def _rows(out: Path, kind: str) -> list[dict[str, object]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: list[dict[str, object]] = []
    for shard in manifest["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(line) for line in (out / shard["name"]).read_text().splitlines())
    return rows


class _Scores(msgspec.Struct, forbid_unknown_fields=True):
    strong: float
    target: float
    gap: float


class _Meta(msgspec.Struct, forbid_unknown_fields=True):
    use_case: str
    skills: list[str]


class _Iteration(msgspec.Struct, forbid_unknown_fields=True):
    iteration: int
    instruction: str
    action: str
    strong_response: str
    target_response: str
    judge_strong_first: list[float]
    judge_target_first: list[float]
    scores: _Scores


class Row(msgspec.Struct, forbid_unknown_fields=True):
    """The CodecLM row schema: one for every kind (null where the kind has no value)."""

    id: str
    seed_id: str
    source: str
    metadata: _Meta | None
    origin: str | None
    basic_instruction: str
    instruction: str
    iteration: int | None
    response: str | None
    response_source: str | None
    scores: _Scores | None
    history: list[_Iteration] | None
    filter: str | None
    reason: str | None
    similarity: float | None
    duplicate_of: str | None
    stage: str | None
    error_kind: str | None
    error: str | None
    models: dict[str, str]
    simulated: bool


def test_demo_runs_and_resume_is_a_no_op(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_cli("run", str(CONFIGS / "demo.toml"), "--quiet", *_sets(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["simulated"] is True
    kept = _rows(out, "kept")
    rejected = _rows(out, "rejected")
    failed = _rows(out, "failed")
    assert kept, "the demo must keep rows"
    for row in kept:
        k = msgspec.convert(row, Row)
        assert k.response_source in ("strong", "target")
        assert k.iteration is not None and 1 <= k.iteration <= 4
        assert k.scores is not None and abs(k.scores.gap) > 3
        assert k.instruction.startswith("[simulated]")
        # the whole history: every iteration, with both answers and both judge orders
        assert k.history is not None and [h.iteration for h in k.history] == list(
            range(1, k.iteration + 1)
        )
        assert k.history[0].instruction == k.basic_instruction and k.history[0].action == ""
        assert all(h.action for h in k.history[1:])
        assert k.history[-1].scores == k.scores
        assert k.response in (k.history[-1].strong_response, k.history[-1].target_response)
    for row in rejected:
        r = msgspec.convert(row, Row)
        assert r.reason and r.filter == "contrastive" and r.scores is None
        assert r.history is not None and abs(r.history[-1].scores.gap) <= 3
    # 10 metadata items x 3 instructions, every one accounted for.
    assert len(kept) + len(rejected) + len(failed) == 30
    ids = [r["id"] for r in kept + rejected + failed]
    assert len(ids) == len(set(ids))
    report = json.loads((out / "report.json").read_text())
    assert report["simulated"] is True
    assert set(report["endpoints"]) == {"strong", "target"}
    # Strong (also the judge) and target calls overlap: both endpoints busy at once.
    assert report["method_report"]["endpoint_overlap"]["all_endpoints_busy"] >= 1
    # Two judge calls (answers swapped) per iteration of every instruction.
    assert not failed
    iterations = sum(int(str(r["iteration"])) for r in [*kept, *rejected])
    assert report["method_report"]["judge_calls"] == 2 * iterations
    # Running again on a complete output does nothing.
    again = run_cli("run", str(CONFIGS / "demo.toml"), "--quiet", *_sets(out))
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert _rows(out, "kept") == kept


def test_validate_ok_and_bad_config_exit_2(tmp_path: Path) -> None:
    ok = run_cli("validate", str(CONFIGS / "demo.toml"))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text((CONFIGS / "demo.toml").read_text().replace("seed = 0", "seed = 0\nsede = 1"))
    proc = run_cli("run", str(bad))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "bad.toml:" in lines[0] and "run.sede" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("run.input=missing.jsonl", "not found"),
        ("roles.judge=nope", "roles.judge"),
        ("endpoints.strong.max_concurrency=0", "endpoints.strong.max_concurrency"),
        ("run.seed=abc", "run.seed"),
    ],
)
def test_bad_config_one_clear_line(tmp_path: Path, override: str, needle: str) -> None:
    proc = run_cli(
        "run", str(CONFIGS / "demo.toml"), "--set", f"run.output={tmp_path}", "--set", override
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_malformed_input_line_goes_to_failed_with_line_number(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    good = (CONFIGS / "data" / "seeds.jsonl").read_text().splitlines()
    seeds.write_text("\n".join([*good[:3], "{not json", good[3], '{"id": "x"}']) + "\n")
    out = tmp_path / "out"
    proc = run_cli(
        "run", str(CONFIGS / "demo.toml"), "--quiet", *_sets(out, [f"run.input={seeds}"])
    )
    assert proc.returncode == 0, proc.stderr
    failed = _rows(out, "failed")
    sources = {r["source"]: r for r in failed}
    assert "seeds.jsonl:4" in sources and sources["seeds.jsonl:4"]["stage"] == "input"
    assert "seeds.jsonl:6" in sources and "instruction" in str(sources["seeds.jsonl:6"]["error"])
    assert "Traceback" not in proc.stderr
