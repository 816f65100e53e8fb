"""The Engine embeds in another asyncio program: two engines share one loop; cancelling one
leaves the other untouched and its own output resumable."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from engine import Engine, load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"
SMALL = [
    "method.codeclm.metadata_count=8",
    "method.codeclm.instructions_per_metadata=3",
    "run.shard_records=5",
]


def _rows(out: Path) -> dict[str, dict[str, object]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: dict[str, dict[str, object]] = {}
    for shard in manifest["shards"]:
        for line in (out / shard["name"]).read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


async def _run(out: Path, extra: list[str] | None = None) -> bool:
    config = load_config(CONFIG, [f"run.output={out}", *SMALL, *(extra or [])])
    async with Engine(config) as engine:
        result = await engine.run()
    return result.complete


async def test_two_engines_in_one_loop(tmp_path: Path) -> None:
    a, b = await asyncio.gather(_run(tmp_path / "a"), _run(tmp_path / "b", ["run.seed=1"]))
    assert a and b
    rows_a, rows_b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert len(rows_a) == len(rows_b) == 24
    assert rows_a != rows_b  # different seeds, separate state
    # Alone, each gives the same rows as it did side by side.
    assert await _run(tmp_path / "a2")
    assert _rows(tmp_path / "a2") == rows_a


async def test_cancelling_one_engine_leaves_the_other_and_resumes(tmp_path: Path) -> None:
    slow = ["endpoints.strong.sim={latency_ms = 40}", "method.codeclm.metadata_count=12"]
    victim = asyncio.create_task(_run(tmp_path / "victim", slow))
    other = asyncio.create_task(_run(tmp_path / "other"))
    await asyncio.sleep(0.8)
    victim.cancel()
    assert await other
    try:
        await victim
        raise AssertionError("the victim finished before it was cancelled")
    except asyncio.CancelledError:
        pass
    manifest = json.loads((tmp_path / "victim" / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert await _run(tmp_path / "victim", slow)  # resumes to completion
    assert await _run(tmp_path / "fresh", slow)
    assert _rows(tmp_path / "victim") == _rows(tmp_path / "fresh")
