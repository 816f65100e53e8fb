"""Fault matrix: CodecLM runs to completion against a simulated endpoint injecting each fault.

For each fault the run completes, every instruction ends kept, rejected or failed with a
reason, retries stay within max_retries per call, and the manifest records what happened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
METADATA = 6
PER_ITEM = 3
MAX_RETRIES = 4


def _overrides(out: Path, sim: str, extra: list[str] | None = None) -> list[str]:
    return [
        f"run.output={out}",
        f"method.codeclm.metadata_count={METADATA}",
        f"method.codeclm.instructions_per_metadata={PER_ITEM}",
        "run.shard_records=10",
        f"endpoints.target.sim={sim}",
        f"endpoints.target.max_retries={MAX_RETRIES}",
        "endpoints.target.timeout_s=1.0",
        *(extra or []),
    ]


async def _run(out: Path, sim: str, extra: list[str] | None = None) -> dict[str, Any]:
    config = load_config(CONFIG, _overrides(out, sim, extra))
    async with Engine(config) as engine:
        result = await engine.run()
    assert result.complete, result.stop_reason
    manifest = json.loads((out / "manifest.json").read_text())
    rows: dict[str, list[dict[str, Any]]] = {"kept": [], "rejected": [], "failed": []}
    for shard in manifest["shards"]:
        rows[shard["kind"]].extend(
            json.loads(line) for line in (out / shard["name"]).read_text().splitlines()
        )
    return {
        "manifest": manifest,
        "rows": rows,
        "report": json.loads((out / "report.json").read_text()),
    }


def _check_accounting(run: dict[str, Any]) -> None:
    rows = run["rows"]
    # Every instruction of every metadata item ends in exactly one shard.
    assert sum(len(v) for v in rows.values()) == METADATA * PER_ITEM
    for row in rows["failed"]:
        assert row["error"] and row["error_kind"] and row["stage"], row
    target = run["manifest"]["extra"]["endpoints"]["target"]
    # Retries within bounds: each logical call makes at most 1 + max_retries attempts.
    calls = target["requests"] - target["retries"]
    assert target["retries"] <= MAX_RETRIES * calls
    assert run["manifest"]["complete"] is True


FAULTS = [
    ("500", '{fault_rate = 0.3, faults = ["500"], latency_ms = 1}'),
    ("502-503", '{fault_rate = 0.3, faults = ["502", "503"], latency_ms = 1}'),
    ("reset", '{fault_rate = 0.3, faults = ["reset"], latency_ms = 1}'),
    ("malformed", '{fault_rate = 0.3, faults = ["malformed"], latency_ms = 1}'),
    ("read-timeout", '{fault_rate = 0.05, faults = ["timeout"], hang_s = 3.0, latency_ms = 1}'),
    ("slow-body", '{fault_rate = 0.05, faults = ["slow"], slow_body_s = 3.0, latency_ms = 1}'),
    ("429", '{fault_rate = 0.3, faults = ["429"], retry_after_s = 0.05, latency_ms = 1}'),
]


@pytest.mark.parametrize(("name", "sim"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_run_completes_under_fault(tmp_path: Path, name: str, sim: str) -> None:
    run = await _run(tmp_path / name, sim)
    _check_accounting(run)
    target = run["manifest"]["extra"]["endpoints"]["target"]
    assert target["retries"] > 0, f"{name}: no fault was injected"
    assert target["errors"], target


async def test_truncated_streams_are_retried(tmp_path: Path) -> None:
    run = await _run(
        tmp_path / "truncated",
        '{fault_rate = 0.3, faults = ["truncated"], latency_ms = 1}',
        ["endpoints.target.stream=true"],
    )
    _check_accounting(run)
    errors = run["manifest"]["extra"]["endpoints"]["target"]["errors"]
    assert set(errors) <= {"malformed_response", "connection_lost"} and errors


async def test_429_storm_pauses_and_recovers(tmp_path: Path) -> None:
    run = await _run(
        tmp_path / "storm",
        '{schedule = [{start_s = 0.0, end_s = 1.0, kind = "429"}], retry_after_s = 0.4, latency_ms = 1}',
    )
    _check_accounting(run)
    target = run["manifest"]["extra"]["endpoints"]["target"]
    assert target["http_429"] > 0
    assert not run["rows"]["failed"], "a storm shorter than the retry budget loses nothing"


async def test_endpoint_down_for_good_fails_rows_with_reasons(tmp_path: Path) -> None:
    run = await _run(tmp_path / "down", '{fault_rate = 1.0, faults = ["503"], latency_ms = 1}')
    _check_accounting(run)
    assert not run["rows"]["kept"]
    assert len(run["rows"]["failed"]) == METADATA * PER_ITEM
    assert {r["stage"] for r in run["rows"]["failed"]} == {"respond"}
    assert all(r["error_kind"] == "server_error" for r in run["rows"]["failed"])
