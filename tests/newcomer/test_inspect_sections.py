"""``synth-engine inspect OUT`` on an output with kept, rejected and failed rows: the counts,
the reasons per kind, the spend with its cost, the config line and sample rows, each
checked against the output's own files (manifest.json, config.json, the row shards).

The endpoint is the project's hostile proxy on 127.0.0.1 in front of the simulated
endpoint: it refuses two of the six seeds with a 400, and answers the rest."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import run_cli
from tests.hostile import ServedInThread, Upstream, proxied
from tests.newcomer.test_first_hour import SEEDS, _project

Fetch = Callable[[], Awaitable[Upstream]]
PRICE = "price = { prompt = 1000.0, completion = 2000.0 }"  # USD per 1M tokens


@pytest.fixture
def served() -> Iterator[ServedInThread]:
    with ServedInThread() as server:
        yield server


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted(out.glob(f"{kind}-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_inspect_shows_reasons_spend_config_and_samples(
    tmp_path: Path, served: ServedInThread
) -> None:
    async def flaky(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        body = json.dumps(await request.json())
        if "haiku" in body or "lasagne" in body:
            return web.json_response({"error": {"message": "content filter"}}, status=400)
        return proxied()(await fetch())

    served.server.behaviour = flaky
    # threshold 10: the simulated judge (seeded, so the same every run) rejects most rows
    config = _project(tmp_path, served.url, threshold=10, extra=f"{PRICE}\nfail_fast_after = 0")
    assert run_cli("run", str(config), "--quiet").returncode in (0, 5)
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    totals = manifest["totals"]
    kept, rejected, failed = (_rows(out, k) for k in ("kept", "rejected", "failed"))
    assert len(failed) == 2 and len(rejected) >= 1
    assert (totals["kept"], totals["rejected"], totals["failed"]) == (
        len(kept),
        len(rejected),
        len(failed),
    )

    proc = run_cli("inspect", str(out), "--samples", "1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        f"{out}: respond, complete (verified)"
        "  ** SIMULATED ENDPOINT: rows are fake, not real model output **"
    )
    assert lines[1].startswith(
        f"items       {len(SEEDS)}   rows: kept {len(kept)}   rejected {len(rejected)}   "
        f"failed {len(failed)}   in "
    )
    # reasons, per kind, with their counts (what the rows themselves say)
    assert "  failed          2  respond: bad_request" in proc.stdout
    reasons = [ln for ln in lines if ln.startswith("  rejected ")]
    assert sum(int(ln.split()[1]) for ln in reasons) == len(rejected)
    assert all("judge score" in ln for ln in reasons)
    # spend: the requests and tokens the report counted, priced at the configured price
    spent = [ln for ln in lines if ln.startswith("spent ")]
    assert len(spent) == 1
    summary = json.loads(run_cli("inspect", str(out), "--json").stdout)
    s = summary["spent"]
    assert s["requests"] == served.server.requests
    cost = (s["prompt_tokens"] * 1000.0 + s["completion_tokens"] * 2000.0) / 1e6
    assert s["cost"] == pytest.approx(cost, rel=1e-6) and cost > 0
    assert spent[0] == (
        f"spent       {s['requests']} requests   {s['prompt_tokens']} prompt + "
        f"{s['completion_tokens']} completion tokens   ${cost:.4f} (every run on this output)"
    )
    # config: the models per role and the seed, from OUT/config.json, and its hash
    saved = json.loads((out / "config.json").read_text())
    assert summary["config"] == saved
    config_line = next(ln for ln in lines if ln.startswith("config "))
    assert config_line == (
        f"config      strong sim-model, target sim-model, judge sim-model; seed "
        f"{saved['run']['seed']} (OUT/config.json, hash {summary['config_hash']})"
    )
    # samples: one row of each kind, the first in its shard, showing what it is
    samples = {ln.split()[1]: ln for ln in lines if ln.startswith("sample ")}
    assert set(samples) == {"kept", "rejected", "failed"} if kept else {"rejected", "failed"}
    assert "error=endpoint 'local': HTTP 400: content filter" in samples["failed"]
    assert f"reason={rejected[0]['reason']}" in samples["rejected"]
    assert f"instruction={rejected[0]['instruction'][:40]}" in samples["rejected"]
    assert len([ln for ln in lines if ln.startswith("sample failed ")]) == 1  # --samples 1
    assert [r["id"] for r in summary["samples"]["failed"]] == [r["id"] for r in failed[:2]]
