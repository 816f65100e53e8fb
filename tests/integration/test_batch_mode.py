"""Batch mode and the Anthropic transport, on the simulated endpoint (docs/batch.md).

* a CodecLM run in batch mode gives the rows of the online run (same ids and contents),
  at the batch price, with the online cost reported beside it;
* requests a batch did not run (expired) are submitted again and the rows still match;
* Anthropic's native Messages API runs the same methods, online and in batch mode;
* SIGKILL during submission, polling and reading, then a rerun: no request is submitted
  twice (the simulated server counts submissions per custom_id), nothing is lost.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import Engine, load_config
from engine.io.shards import KINDS, iter_rows
from engine.sim import SimServer, SimSettings
from engine.sim.process import sim_process

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.toml"
SMALL = ["method.codeclm.metadata_count=4", "method.codeclm.instructions_per_metadata=2"]
FAST_BATCHES = "{max_wait_s = 0.2, poll_s = 0.1, poll_max_s = 0.3}"


def _settings(batches: dict[str, Any]) -> SimSettings:
    return msgspec.convert({"latency_ms": 1.0, "batches": batches}, SimSettings)


def _rows(out: Path) -> dict[str, str]:
    return {
        row["id"]: json.dumps(row, sort_keys=True) for kind in KINDS for row in iter_rows(out, kind)
    }


def _sets(
    out: Path, url: str, mode: str, *, kind: str = "openai", extra: list[str] | None = None
) -> list[str]:
    sets = [f"run.output={out}", *SMALL]
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.kind={kind}",
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.mode={mode}",
            f"endpoints.{ep}.batch={FAST_BATCHES}",
        ]
        if kind == "anthropic":
            sets.append(f"endpoints.{ep}.api_key_env=SIM_ANTHROPIC_KEY")
    return [*sets, *(extra or [])]  # after the batch tables they may refine


async def _run(sets: list[str]) -> Any:
    async with Engine(load_config(DEMO, sets)) as engine:
        return await engine.run()


async def test_batch_mode_gives_the_online_rows_at_the_batch_price(tmp_path: Path) -> None:
    async with SimServer(_settings({"processing_s": 0.2})) as sim:
        online = await _run(_sets(tmp_path / "online", sim.url, "online"))
        batched = await _run(
            _sets(
                tmp_path / "batch",
                sim.url,
                "batch",
                extra=[
                    "endpoints.strong.price={prompt = 2.0, completion = 8.0}",
                    "endpoints.target.price={prompt = 1.0, completion = 2.0}",
                ],
            )
        )
        stats = sim.stats()["batches"]
    assert online.complete and batched.complete
    assert _rows(tmp_path / "batch") == _rows(tmp_path / "online")
    report = batched.report.method_report
    submitted = sum(b["requests_submitted"] for b in report["batch"].values())
    assert submitted == stats["lines_submitted"] > 0 and stats["batches_submitted"] > 1
    assert max(stats["submissions_by_custom_id"].values()) == 1
    # Charged at half the online price, with what it would have cost online beside it.
    assert batched.report.cost_usd is not None
    spent = sum(
        c["cost"]
        for per in json.loads((tmp_path / "batch" / "manifest.json").read_text())["extra"][
            "spend"
        ].values()
        for c in per.values()
    )
    assert spent == pytest.approx(report["online_cost_usd"] / 2, rel=1e-6)


async def test_requests_a_batch_did_not_run_are_submitted_again(tmp_path: Path) -> None:
    # Simulated time runs 100,000 times faster: a batch takes 0.2 s and the 24-hour window,
    # after which the requests drawn not to run expire, under a second.
    settings = _settings({"speed": 100_000, "processing_s": 20_000, "expire_fraction": 0.3})
    async with SimServer(settings) as sim:
        batched = await _run(
            _sets(
                tmp_path / "batch",
                sim.url,
                "batch",
                extra=[f"endpoints.{e}.batch.max_resubmits=10" for e in ("strong", "target")],
            )
        )
        await _run(_sets(tmp_path / "online", sim.url, "online"))
    assert batched.complete
    resubmitted = sum(
        b["requests_resubmitted"] for b in batched.report.method_report["batch"].values()
    )
    assert resubmitted > 0
    assert _rows(tmp_path / "batch") == _rows(tmp_path / "online")


@pytest.mark.parametrize("mode", ["online", "batch"])
async def test_anthropic_runs_the_methods(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_ANTHROPIC_KEY", "sk-ant-sim-0123456789")
    async with SimServer(_settings({"processing_s": 0.2})) as sim:
        base = sim.url  # the simulated endpoint serves /v1/messages beside /v1/chat/completions
        result = await _run(_sets(tmp_path / "out", base, mode, kind="anthropic"))
        stats = sim.stats()
    assert result.complete, result.stop_reason
    rows = _rows(tmp_path / "out")
    assert len(rows) == 8 and result.report.rows.kept > 0
    # A numbered list splits into items; the label heads the reply each row's response is.
    kept = list(iter_rows(tmp_path / "out", "kept"))
    assert kept and all(r["response"].startswith("[simulated]") for r in kept)
    if mode == "batch":
        assert stats["anthropic"]["message_batches"]["batches_submitted"] > 0


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/sim/stats", timeout=5) as resp:
        return dict(json.loads(resp.read()))


@pytest.mark.slow
def test_sigkill_anywhere_never_submits_a_request_twice(tmp_path: Path) -> None:
    seed = random.randrange(1 << 16)
    rng = random.Random(seed)
    batches = json.dumps({"processing_s": 0.6, "validating_s": 0.1, "finalizing_s": 0.1})
    with sim_process("--latency-ms", "1", "--batches", batches, cwd=ROOT) as url:
        reference = tmp_path / "ref"
        cmd = [sys.executable, "-m", "engine", "run", str(DEMO), "--quiet"]
        flags = [f for s in _sets(reference, url, "online") for f in ("--set", s)]
        assert subprocess.run(cmd + flags, cwd=ROOT, timeout=300, check=False).returncode in (0, 5)
        work = tmp_path / "work"
        flags = [f for s in _sets(work, url, "batch") for f in ("--set", s)]
        kills = 0
        for _ in range(8):
            proc = subprocess.Popen(cmd + flags, cwd=ROOT)
            time.sleep(rng.uniform(0.3, 2.5))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        final = subprocess.run(cmd + flags, cwd=ROOT, timeout=300, check=False)
        stats = _stats(url)["batches"]
    assert final.returncode in (0, 5), f"seed {seed}"
    assert kills >= 1, f"seed {seed}: the run ended before any kill"
    assert _rows(work) == _rows(reference), f"seed {seed}"
    twice = {cid: n for cid, n in stats["submissions_by_custom_id"].items() if n > 1}
    assert not twice, f"seed {seed}: submitted more than once: {twice}"
