"""Scale-out on a local Ray cluster (2 CPUs) against the simulated endpoint on 127.0.0.1.

* a Ray run's output equals a single-process run's (same row ids and contents);
* killing one worker mid-run, then rerunning, gives every row exactly once and pays
  again only for the calls that were in flight;
* SELF-GUIDE's derived dataset (built over the merged rows) equals the single-process one;
* the fleet shares one quota: the sim (enforcing it) never answers 429, no 60 s window
  and no shorter interval goes over it, and the ledger never hands out more than 1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, load_config
from engine.config import Config
from engine.distributed import partition_dir, run_on_ray
from engine.io.manifest import load_manifest
from engine.io.shards import KINDS, iter_rows
from engine.sim.process import sim_process

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local two-CPU Ray cluster for the whole module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/sim/stats", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def write_input(path: Path, n: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "instruction": f"Explain idea number {i} briefly."}) + "\n"
            for i in range(n)
        )
    )
    return path


def respond_config(url: str, inp: Path, out: Path, *extra: str) -> Config:
    return load_config(
        CONFIGS / "respond.toml",
        [
            f"run.input={inp}",
            f"run.output={out}",
            "run.shard_records=4",
            f"endpoints.strong.base_url={url}",
            "endpoints.strong.sim={}",
            "endpoints.strong.adaptive_concurrency=false",
            *extra,
        ],
    )


def rows(out: Path) -> dict[str, dict[str, Any]]:
    """Every committed row of a (merged or single) output by id; no id twice."""
    found: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        for row in iter_rows(out, kind):
            assert row["id"] not in found, f"duplicate row {row['id']}"
            found[row["id"]] = {"kind": kind, **row}
    return found


async def single_process(config: Config) -> dict[str, dict[str, Any]]:
    async with Engine(config) as engine:
        result = await engine.run()
    assert result.complete
    return rows(result.output)


async def test_ray_run_equals_single_process_run(ray_cluster: None, tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", 30)
    with sim_process("--latency-ms", "5", cwd=ROOT) as url:
        expected = await single_process(respond_config(url, inp, tmp_path / "single"))
        config = respond_config(url, inp, tmp_path / "ray")
        result = await run_on_ray(config, workers=2)
        assert result.complete and result.stop_reason is None
        got = rows(tmp_path / "ray")
        assert got == expected
        assert len(got) == 30
        merged = load_manifest(tmp_path / "ray")
        assert merged is not None and merged.complete
        assert merged.totals["items"] == 30
        assert {s.name.split("/")[1] for s in merged.shards} == {"0-of-2", "1-of-2"}
        for k in range(2):  # each partition is an ordinary, complete output of its own
            part = load_manifest(partition_dir(tmp_path / "ray", k, 2))
            assert part is not None and part.complete and part.totals["items"] == 15
        again = await run_on_ray(config, workers=2)
        assert again.already_complete and again.complete


async def test_kill_one_worker_then_rerun_is_exactly_once(
    ray_cluster: None, tmp_path: Path
) -> None:
    inp = write_input(tmp_path / "in.jsonl", 40)
    limits = ("endpoints.strong.max_concurrency=2", "run.max_items_in_flight=2")
    with sim_process("--latency-ms", "40", cwd=ROOT) as url:
        before = stats(url)["requests"]
        expected = await single_process(respond_config(url, inp, tmp_path / "single", *limits))
        reference_calls = stats(url)["requests"] - before

        config = respond_config(url, inp, tmp_path / "ray", *limits)
        out = tmp_path / "ray"
        handles: list[Any] = []
        before = stats(url)["requests"]
        run = asyncio.create_task(run_on_ray(config, workers=2, on_started=handles.extend))
        victim = partition_dir(out, 1, 2)
        for _ in range(600):  # until worker 1 has committed some items, at most 30 s
            await asyncio.sleep(0.05)
            m = load_manifest(victim)
            if m is not None and m.totals.get("items", 0) >= 4:
                break
        else:
            pytest.fail("worker 1 committed nothing")
        ray.kill(handles[1], no_restart=True)
        first = await run
        assert not first.complete
        assert "partition 1" in (first.stop_reason or "")
        killed = load_manifest(victim)
        assert killed is not None and not killed.complete
        assert killed.totals["items"] < 20  # the kill landed mid-partition

        second = await run_on_ray(config, workers=2)
        assert second.complete
        skipped = [p["partition"] for p in second.partitions if p.get("skipped")]
        assert skipped == [0]  # the finished partition is not run again
        assert rows(out) == expected
        repaid = stats(url)["requests"] - before - reference_calls
        assert 0 <= repaid <= 2 * 2  # at most the calls in flight at the kill


async def test_selfguide_derived_set_is_built_over_the_merged_rows(
    ray_cluster: None, tmp_path: Path
) -> None:
    def config(out: Path) -> Config:
        return load_config(
            CONFIGS / "selfguide_classification.toml",
            [f"run.output={out}", "run.shard_records=16"],
        )

    await single_process(config(tmp_path / "single"))
    result = await run_on_ray(config(tmp_path / "ray"), workers=2)
    assert result.complete
    assert rows(tmp_path / "ray") == rows(tmp_path / "single")
    for name in ("balanced.jsonl", "balanced_dropped.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()
    merged = load_manifest(tmp_path / "ray")
    single = load_manifest(tmp_path / "single")
    assert merged is not None and single is not None
    assert merged.extra["derived"] == single.extra["derived"]


def interval_excess(per_second: list[list[int]], rpm: float, slack_s: float = 2.0) -> float:
    """Most requests over ``rpm / 60 * (T + slack_s)`` in any T consecutive seconds.

    A window-safe fleet admits at most one second's burst plus ``rpm / 60`` per second
    in any interval; the slack covers that burst and a request crossing a second's edge
    between the client's grant and the sim's log. A fleet that ignored its leases
    (each worker at the full rate) goes over within a few seconds.
    """
    counts = {int(s): int(c) for s, c, *_ in per_second}
    if not counts:
        return 0.0
    lo, hi = min(counts), max(counts)
    worst = -float("inf")
    for start in range(lo, hi + 1):
        total = 0
        for end in range(start, hi + 1):
            total += counts.get(end, 0)
            worst = max(worst, total - rpm / 60.0 * (end - start + 1 + slack_s))
    return worst


def windows_over(per_second: list[list[int]], limit: float) -> int:
    """60 s windows (1 s steps) of the sim's admission log holding more than ``limit``."""
    counts = {int(s): int(c) for s, c, *_ in per_second}
    if not counts:
        return 0
    lo, hi = min(counts), max(counts)
    return sum(
        sum(counts.get(s, 0) for s in range(start, start + 60)) > limit
        for start in range(lo - 59, hi + 1)
    )


async def test_fleet_shares_one_quota_and_never_exceeds_it(
    ray_cluster: None, tmp_path: Path
) -> None:
    rpm, duration = 240.0, 25.0
    inp = write_input(tmp_path / "in.jsonl", 2000)  # more than the quota allows in time
    with sim_process("--latency-ms", "20", "--rpm", str(rpm), "--tpm", "10000000", cwd=ROOT) as url:
        config = respond_config(
            url,
            inp,
            tmp_path / "ray",
            f"endpoints.strong.rpm={rpm}",
            "endpoints.strong.max_concurrency=16",
            "run.max_items_in_flight=4",  # a stop drains these at the quota's pace
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(duration, stop.set)
        result = await run_on_ray(config, workers=2, stop=stop)
        st = stats(url)
    assert not result.complete  # stopped by time, resumably
    assert st["http_429"] == 0 and st["rate_limited"] == 0
    per_second = st["per_second"]
    assert windows_over(per_second, rpm) == 0
    assert interval_excess(per_second, rpm) <= 0
    lease = result.leases["strong"]
    assert lease.max_allocated <= 1.0 + 1e-9 and lease.expired == 0
    # Not vacuous: over the seconds both workers were sending, the fleet used the quota.
    seconds = [int(s) for s, *_ in per_second]
    busy = [c for s, c, *_ in per_second if seconds[0] + 3 <= s < seconds[-1]]
    assert sum(busy) >= 0.85 * rpm / 60.0 * len(busy)


def codeclm_config(url: str, out: Path, *extra: str) -> Config:
    sets = [f"run.output={out}", "run.shard_records=8", *extra]
    sets += ["method.codeclm.metadata_count=8", "method.codeclm.instructions_per_metadata=2"]
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.adaptive_concurrency=false",
        ]
    return load_config(CONFIGS / "demo.toml", sets)


async def test_codeclm_global_phase_is_paid_once_and_shared(
    ray_cluster: None, tmp_path: Path
) -> None:
    """Partition 0 encodes the seeds; its cache is copied to partition 1, which replays
    the phase from it: the fleet pays exactly the calls of a single-process run."""
    with sim_process("--latency-ms", "2", cwd=ROOT) as url:
        before = stats(url)["requests"]
        expected = await single_process(codeclm_config(url, tmp_path / "single"))
        single_calls = stats(url)["requests"] - before
        before = stats(url)["requests"]
        result = await run_on_ray(codeclm_config(url, tmp_path / "ray"), workers=2)
        ray_calls = stats(url)["requests"] - before
    assert result.complete
    assert rows(tmp_path / "ray") == expected
    assert ray_calls == single_calls  # before sharing: + one encode call per seed
    part1 = partition_dir(tmp_path / "ray", 1, 2)
    manifest = load_manifest(part1)
    assert manifest is not None and manifest.complete
    report = json.loads((part1 / "report.json").read_text())
    replayed = report["endpoints"]["strong"]["cache_hits"]
    assert replayed >= 22  # the 22 seeds' encode calls, at least, came from the copy
    assert not list(part1.glob("*.partial"))


async def test_stop_during_the_shared_phase_then_rerun_completes_exactly(
    ray_cluster: None, tmp_path: Path
) -> None:
    """A stop while worker 0 runs the global phase alone: partition 1 never started; the
    rerun finishes the phase, shares it, and the output equals a single-process run."""
    with sim_process("--latency-ms", "2", cwd=ROOT) as fast:
        expected = await single_process(codeclm_config(fast, tmp_path / "single"))
    with sim_process("--latency-ms", "200", cwd=ROOT) as slow:
        # One encode at a time: worker 0's phase takes 22 x 0.2 s; stop well before.
        config = codeclm_config(slow, tmp_path / "ray", "endpoints.strong.max_concurrency=1")
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        first = await run_on_ray(config, workers=2, stop=stop)
    assert not first.complete
    by_part = {p["partition"]: p for p in first.partitions}
    assert by_part[1] == {"partition": 1, "complete": False, "stop_reason": "stopped"}
    with sim_process("--latency-ms", "2", cwd=ROOT) as fast:
        again = await run_on_ray(
            codeclm_config(fast, tmp_path / "ray", "endpoints.strong.max_concurrency=1"),
            workers=2,
        )
    assert again.complete
    assert rows(tmp_path / "ray") == expected
