"""A run in which every item fails (fail-fast off): it finishes, keeps nothing, says why and
exits 5, as docs/reliability.md documents; the fix is a rerun with --retry-failed.

The endpoint is the project's hostile proxy on 127.0.0.1 in front of the simulated endpoint;
here it refuses every request with the same 400.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import run_cli
from tests.hostile import ServedInThread, Upstream
from tests.newcomer.test_first_hour import SEEDS, _project

Fetch = Callable[[], Awaitable[Upstream]]


@pytest.fixture
def served() -> Iterator[ServedInThread]:
    with ServedInThread() as server:
        yield server


def test_a_run_where_every_item_failed_exits_5_and_says_so(
    tmp_path: Path, served: ServedInThread
) -> None:
    async def refused(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        message = {"error": {"message": "This prompt was flagged by the content filter"}}
        return web.json_response(message, status=400)

    served.server.behaviour = refused
    # threshold 1: once the endpoint answers, every judged row is kept
    config = _project(tmp_path, served.url, threshold=1, extra="fail_fast_after = 0")
    proc = run_cli("run", str(config))
    assert proc.returncode == 5, proc.stderr
    assert "the run finished but kept no row: every item failed" in proc.stderr
    assert f"({len(SEEDS)} failed rows; see failed-*.jsonl for each error)" in proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["totals"]["kept"] == 0 and manifest["totals"]["failed"] == len(SEEDS)
    rows = [
        json.loads(line)
        for f in sorted((tmp_path / "out").glob("failed-*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert sorted(r["seed_id"] for r in rows) == sorted(s["id"] for s in SEEDS)
    assert {r["error"] for r in rows} == {
        "endpoint 'local': HTTP 400: This prompt was flagged by the content filter"
    }
    assert "NOTHING KEPT every item failed" in proc.stdout
    assert "failed      6: respond: bad_request 6" in proc.stdout
    # The fix (the server answers again), then the advised rerun: the failed items only.
    served.server.behaviour = None
    paid_before = served.server.requests
    again = run_cli("run", str(config), "--quiet", "--retry-failed")
    assert again.returncode == 0, again.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["failed"] == 0 and manifest["totals"]["kept"] == len(SEEDS)
    assert served.server.requests - paid_before == 2 * len(SEEDS)  # respond + judge each
