"""A method written outside engine/ runs with every guarantee of the built-in ones:
from Python and the CLI, exactly once after SIGKILL, on Ray with 2 workers, as a stream."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine import ConfigError, Engine, load_config
from engine.io.shards import KINDS, iter_rows
from tests.conftest import ROOT, run_cli
from tests.pipeline.jokes import Jokes

TOPICS = ["cats", "compilers", "coffee", "trains", "tax forms", "mondays", "penguins", "git"]


def _project(
    tmp: Path, *, latency_ms: float = 1.0, method: str = "tests.pipeline.jokes:Jokes"
) -> Path:
    (tmp / "topics.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "topic": t}) + "\n" for i, t in enumerate(TOPICS))
    )
    config = tmp / "jokes.toml"
    config.write_text(
        f"""
[run]
method = "{method}"
input = "topics.jsonl"
output = "out"
shard_records = 3

[endpoints.sim]
base_url = "sim"
model = "sim-model"
sim = {{ latency_ms = {latency_ms} }}

[roles]
strong = "sim"

[method.jokes]
threshold = 4
"""
    )
    return config


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: {"kind": kind, **row} for kind in KINDS for row in iter_rows(out, kind)}


async def test_runs_from_python_with_its_own_options(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path))
    async with Engine(config, method=Jokes) as engine:
        result = await engine.run()
    assert result.complete and result.report is not None
    rows = _rows(tmp_path / "out")
    assert len(rows) == 2 * len(TOPICS)
    for row in rows.values():
        assert set(row) >= {"id", "topic", "setup", "punchline", "variant", "score", "item"}
        assert row["simulated"] is True and row["setup"].startswith("[simulated]")
        if row["kind"] == "rejected":
            assert row["score"] < 4 and row["reason"].startswith("score")
        else:
            assert row["score"] >= 4
    assert result.report.method_report["judged"] == 2 * len(TOPICS)
    assert set(result.report.stages) == {"joke", "judge"}


def test_runs_from_the_cli_and_validates_its_table(tmp_path: Path) -> None:
    config = _project(tmp_path)
    val = run_cli("validate", str(config))
    assert val.returncode == 0, val.stderr
    assert f"{len(TOPICS)} usable" in val.stdout
    proc = run_cli("run", str(config), "--quiet")
    assert proc.returncode in (0, 5), proc.stderr
    assert len(_rows(tmp_path / "out")) == 2 * len(TOPICS)
    bad = run_cli("validate", str(config), "--set", "method.jokes.treshold=3")
    assert bad.returncode == 2 and "method.jokes.treshold: unknown key" in bad.stderr
    missing = run_cli("validate", str(config), "--set", 'run.method="tests.pipeline.jokes:Nope"')
    assert missing.returncode == 2 and "has no 'Nope'" in missing.stderr
    not_one = run_cli("validate", str(config), "--set", 'run.method="tests.pipeline.jokes:Joke"')
    assert not_one.returncode == 2 and "is not a method" in not_one.stderr


def test_an_unknown_module_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="jokes.toml:3: run.method: cannot import module 'no_such_pkg.mod'"
    ):
        Engine(load_config(_project(tmp_path, method="no_such_pkg.mod:Thing")))


def test_resumes_exactly_once_after_sigkill(tmp_path: Path) -> None:
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    assert run_cli("run", str(_project(ref_dir, latency_ms=100)), "--quiet").returncode in (0, 5)
    work = tmp_path / "work"
    work.mkdir()
    config = _project(work, latency_ms=100)
    cmd = [sys.executable, "-m", "engine", "run", str(config), "--quiet",
           "--set", "run.max_items_in_flight=2", "--set", "endpoints.sim.max_concurrency=2"]  # fmt: skip
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(cmd, cwd=ROOT)
        time.sleep(0.9)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    final = subprocess.run(cmd, cwd=ROOT, timeout=120, check=False)
    assert final.returncode in (0, 5)
    assert kills >= 1, "the run finished before any kill"
    assert _rows(work / "out") == _rows(ref_dir / "out")


async def test_streams_its_rows_as_items_finish(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path))
    items = [{"id": "x1", "topic": "owls"}, {"id": "x2", "topic": "jazz"}]
    async with Engine(config, method=Jokes) as engine:
        seen = [row.id async for row in engine.stream(items)]
    assert len(seen) == 4 and set(seen) == set(_rows(tmp_path / "out"))


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_runs_on_ray_with_two_workers(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    import asyncio

    from engine.distributed import run_on_ray

    single = tmp_path / "single"
    single.mkdir()
    assert run_cli("run", str(_project(single)), "--quiet").returncode in (0, 5)
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    config = load_config(_project(fleet))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
    )
    try:
        result = asyncio.run(run_on_ray(config, workers=2))
    finally:
        ray.shutdown()
    assert result.complete and result.workers == 2
    assert _rows(fleet / "out") == _rows(single / "out")
