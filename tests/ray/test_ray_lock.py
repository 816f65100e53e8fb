"""One writer per output, Ray driver included (docs/reliability.md, "One writer per output").

While ``run_on_ray`` drives a run, the driver holds ``OUT/.lock`` (each worker holds its
own partition's). A second writer on the same output is refused at once and the Ray run
goes on undisturbed:

* a plain ``synth-engine run`` on ``OUT`` (which would otherwise write its own shards
  beside the partitions), and ``run --force-new`` (which would delete them): exit 2,
  "another run is writing this output", naming the driver's pid;
* a second ``run_on_ray`` on ``OUT`` from the same process: ``OutputLocked``.

Afterwards the Ray run is complete with every row exactly once and the lock is free.
A local two-CPU Ray cluster against the simulated endpoint on 127.0.0.1; skipped without
Ray, as the other tests here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import load_config
from engine.config import Config
from engine.distributed import partition_dir, run_on_ray
from engine.errors import OutputLocked
from engine.io.lock import LOCK_NAME, OutputLock
from engine.io.manifest import load_manifest
from engine.io.shards import KINDS, iter_rows
from engine.sim.process import sim_process

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
ITEMS = 40

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local two-CPU Ray cluster for the module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _sets(url: str, inp: Path, out: Path) -> list[str]:
    # One call at a time per worker at 250 ms each: the run lasts ~5 s once started,
    # long enough for two CLI runs to start, be refused and exit.
    return [
        f"run.input={inp}",
        f"run.output={out}",
        "run.shard_records=4",
        "run.max_items_in_flight=1",
        f"endpoints.strong.base_url={url}",
        "endpoints.strong.sim={}",
        "endpoints.strong.max_concurrency=1",
        "endpoints.strong.adaptive_concurrency=false",
    ]


def _config(sets: list[str]) -> Config:
    return load_config(CONFIGS / "respond.toml", sets)


def _cli_run(sets: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    flags: list[str] = []
    for item in sets:
        flags += ["--set", item]
    return subprocess.run(
        [sys.executable, "-m", "engine", "run", str(CONFIGS / "respond.toml"), "--quiet"]
        + [*extra, *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_second_writer_beside_a_ray_run_is_refused(
    ray_cluster: None, tmp_path: Path
) -> None:
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "instruction": f"Explain idea number {i} briefly."}) + "\n"
            for i in range(ITEMS)
        )
    )
    out = tmp_path / "out"
    with sim_process("--latency-ms", "250", cwd=ROOT) as url:
        sets = _sets(url, inp, out)
        config = _config(sets)
        run = asyncio.create_task(run_on_ray(config, workers=2))
        try:
            # Until a worker has committed something: the run is under way, at most 60 s.
            for _ in range(1200):
                await asyncio.sleep(0.05)
                assert not run.done(), run.result()
                m = load_manifest(partition_dir(out, 0, 2))
                if m is not None and m.totals.get("items", 0) >= 1:
                    break
            else:
                pytest.fail("the Ray run committed nothing in 60 s")
            assert (out / LOCK_NAME).exists()

            for extra in ([], ["--force-new"]):
                start = time.monotonic()
                second = await asyncio.to_thread(_cli_run, sets, *extra)
                assert time.monotonic() - start < 30
                assert second.returncode == 2, (extra, second.stdout, second.stderr)
                assert "another run is writing this output" in second.stderr, second.stderr
                assert f"pid {os.getpid()}" in second.stderr, second.stderr  # the driver
            with pytest.raises(OutputLocked):
                await run_on_ray(_config(sets), workers=2)
            # The refusals happened while the Ray run was still going.
            assert not run.done()
            result = await asyncio.wait_for(run, 120)
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

    assert result.complete and result.stop_reason is None
    ids: list[str] = []
    for kind in KINDS:
        ids += [row["id"] for row in iter_rows(out, kind)]
    assert len(ids) == len(set(ids)) == ITEMS  # each row exactly once
    merged = load_manifest(out)
    assert merged is not None and merged.complete and merged.totals["items"] == ITEMS
    # Nothing of the refused runs was written beside the partitions.
    assert {s.name.split("/")[0] for s in merged.shards} == {"partitions"}
    # The driver let go of OUT when it finished.
    with OutputLock(out):
        pass
