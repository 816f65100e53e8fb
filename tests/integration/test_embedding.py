"""The Engine embeds in another asyncio program: two engines share one loop; cancelling one
leaves the other untouched and its own output resumable."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import Config, ConfigError, Engine, load_config
from engine.api import Records

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
    # Slow enough (about 2 s alone) that it is still running when cancelled at 0.8 s.
    slow = ["endpoints.strong.sim={latency_ms = 100}", "method.codeclm.metadata_count=12"]
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


# ------------------------------------------------------------------ Engine.stream
SEEDS = CONFIG.parent / "data" / "seeds.jsonl"


def _config(out: Path, extra: list[str] | None = None) -> Config:
    return load_config(CONFIG, [f"run.output={out}", *SMALL, *(extra or [])])


async def _stream_ids(config: Config, items: Records | None = None) -> list[str]:
    async with Engine(config) as engine:
        ids = [row.id async for row in engine.stream(items)]
        assert engine.result is not None and engine.result.complete
    return ids


async def test_stream_yields_every_row_it_writes(tmp_path: Path) -> None:
    out = tmp_path / "s"
    ids = await _stream_ids(_config(out))
    assert len(ids) == len(set(ids)) == 24
    assert set(ids) == set(_rows(out))
    assert await _run(tmp_path / "plain")  # the same job through run()
    assert set(_rows(tmp_path / "plain")) == set(ids)


async def test_stream_takes_records_from_an_async_generator(tmp_path: Path) -> None:
    records = [json.loads(line) for line in SEEDS.read_text().splitlines() if line.strip()]

    async def produce() -> AsyncIterator[dict[str, Any]]:
        for record in records:
            await asyncio.sleep(0)
            yield record

    out = tmp_path / "gen"
    ids = await _stream_ids(_config(out), produce())
    assert (out / "input.jsonl").read_text().count("\n") == len(records)
    # The same seeds from a list, and from the configured file: the same rows.
    listed = await _stream_ids(_config(tmp_path / "list"), records)
    assert await _run(tmp_path / "file")
    assert set(ids) == set(listed) == set(_rows(tmp_path / "file"))


async def test_two_streams_share_a_loop_and_install_no_signal_handlers(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGINT)
    handlers_before = dict(getattr(loop, "_signal_handlers", {}))
    a, b = await asyncio.gather(
        _stream_ids(_config(tmp_path / "a")),
        _stream_ids(_config(tmp_path / "b", ["run.seed=1"])),
    )
    assert len(a) == len(b) == 24
    assert _rows(tmp_path / "a") != _rows(tmp_path / "b")  # different seeds, separate state
    assert signal.getsignal(signal.SIGINT) is before
    assert dict(getattr(loop, "_signal_handlers", {})) == handlers_before


async def test_leaving_the_stream_early_cancels_and_a_new_stream_resumes(tmp_path: Path) -> None:
    out = tmp_path / "early"
    slow = ["endpoints.strong.sim={latency_ms = 20}"]
    first: list[str] = []
    async with Engine(_config(out, slow)) as engine:
        async for row in engine.stream():
            first.append(row.id)
            if len(first) == 5:
                break
        assert engine.result is None  # the run was cancelled, not finished
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    rest = await _stream_ids(_config(out, slow))
    assert await _run(tmp_path / "whole")
    expected = set(_rows(tmp_path / "whole"))
    assert set(first) | set(rest) == expected
    assert set(_rows(out)) == expected  # the files hold every row exactly once
    # Only rows the consumer took can have been committed: none is lost to it.
    assert expected - set(rest) <= set(first)


async def test_a_slow_consumer_holds_the_window_instead_of_buffering(tmp_path: Path) -> None:
    window = 3
    config = _config(tmp_path / "slow", [f"run.max_items_in_flight={window}"])
    most_in_flight = 0
    async with Engine(config) as engine:
        async for _ in engine.stream():
            await asyncio.sleep(0.01)
            m = engine.metrics
            most_in_flight = max(most_in_flight, m.items_started - m.items_done)
    # Items wait for the consumer inside the window; none run beyond it.
    assert 1 <= most_in_flight <= window


async def test_stream_rejects_items_for_a_method_that_reads_files(tmp_path: Path) -> None:
    lab = CONFIG.parent / "lab.toml"
    config = load_config(lab, [f"run.output={tmp_path / 'lab'}"])
    async with Engine(config) as engine:
        with pytest.raises(ConfigError, match="reads its input from files"):
            async for _ in engine.stream([{"instruction": "x"}]):
                pass
