"""The viewer's HTTP API on 127.0.0.1: read-only, loopback-only, pages and live state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from engine.io.shards import ShardSink
from engine.viewer import ViewerServer


def _write_output(out: Path, *, complete: bool = True) -> None:
    sink, _ = ShardSink.open(
        out,
        shard_records=25,
        config_hash="h",
        input_fingerprint="f",
        method="codeclm",
        engine_version="0",
        simulated=True,
    )
    for i in range(120):
        if i % 2:
            row = {
                "id": f"r{i}",
                "instruction": f"instruction {i}",
                "scores": {"strong": 6.0, "target": 5.0, "gap": 1.0},
                "reason": "gap +1.00 within theta 3 after 4 iterations",
                "history": [{"iteration": 1, "instruction": "first", "scores": {"gap": 0.5}}],
                "simulated": True,
            }
            sink.write_item(i, [("rejected", row)])
        else:
            sink.write_item(i, [("kept", {"id": f"k{i}", "instruction": "<b>not html</b>"})])
    if complete:
        sink.close(complete=True)
    else:
        sink.commit()
        sink.abandon()


class _Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def viewer(tmp_path: Path) -> AsyncIterator[tuple[str, Path, _Wall]]:
    wall = _Wall(1_000.0)
    async with ViewerServer(tmp_path / "out", port=0, wall=wall) as server:
        assert server.host == "127.0.0.1"
        yield server.url, tmp_path / "out", wall


async def _get(url: str, **kw: Any) -> tuple[int, Any, CIMultiDictProxy[str]]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as resp:
        body = await resp.read()
        kind = resp.headers.get("Content-Type", "")
        return resp.status, (json.loads(body) if "json" in kind else body), resp.headers


async def test_an_output_that_does_not_exist_yet(viewer: tuple[str, Path, _Wall]) -> None:
    url, _, _ = viewer
    status, run, _ = await _get(url + "api/run")
    assert status == 200 and run["state"] == "empty" and run["manifest"] is None


async def test_finished_output_pages_and_one_row(viewer: tuple[str, Path, _Wall]) -> None:
    url, out, _ = viewer
    _write_output(out)
    _, run, _ = await _get(url + "api/run")
    assert run["state"] == "complete" and run["simulated"] is True
    assert run["rows"]["rejected"] == {"total": 60, "uncommitted": 0}
    _, page, _ = await _get(url + "api/rows?kind=rejected&start=50&limit=20")
    assert [r["position"] for r in page["rows"]] == list(range(50, 60))
    assert page["next"] is None and page["rows"][0]["simulated"] is True
    _, page, _ = await _get(
        url + "api/rows?kind=rejected&reason=gap+%23+within+theta+%23+after+%23+iterations"
    )
    assert page["filtered"] and len(page["rows"]) == 50 and page["next"] is not None
    _, one, _ = await _get(url + "api/row?kind=rejected&pos=3")
    assert one["row"]["id"] == "r7" and one["file"] == "rejected-00000.jsonl" and one["line"] == 4
    assert one["committed"] and one["simulated"]
    status, missing, _ = await _get(url + "api/row?kind=kept&pos=999")
    assert status == 404 and "hint" in missing
    _, f, _ = await _get(url + "api/facets?kind=rejected")
    assert f["reasons"] == [["gap # within theta # after # iterations", 60]]


async def test_live_stale_and_stopped_states(viewer: tuple[str, Path, _Wall]) -> None:
    url, out, wall = viewer
    _write_output(out, complete=False)
    status_doc = {"state": "running", "updated_at": 999.0, "rows": {"kept": 61}, "series": {}}
    (out / "status.json").write_text(json.dumps(status_doc))
    _, run, _ = await _get(url + "api/run")
    assert run["state"] == "live" and run["status"]["rows"] == {"kept": 61}
    wall.now = 1_100.0  # no update for 101 s: the run was killed
    _, run, _ = await _get(url + "api/run")
    assert run["state"] == "stopped" and "killed" in run["state_detail"]
    (out / "status.json").write_text(json.dumps({**status_doc, "state": "ended"}))
    _, run, _ = await _get(url + "api/run")
    assert run["state"] == "incomplete"


async def test_read_only_loopback_only_and_no_outside_resources(
    viewer: tuple[str, Path, _Wall],
) -> None:
    url, out, _ = viewer
    _write_output(out)
    status, page, headers = await _get(url)
    assert status == 200 and b'type="module"' in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert b"http://" not in page and b"https://" not in page  # nothing fetched from outside
    for name in ("app.js", "charts.js", "style.css"):
        status, body, _ = await _get(url + "static/" + name)
        assert status == 200 and b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
    async with aiohttp.ClientSession() as s:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            async with s.request(method, url + "api/rows") as resp:
                assert resp.status == 405, method
    status, body, _ = await _get(url + "api/run", headers={"Host": "evil.example:80"})
    assert status == 403 and "not allowed" in body["error"]
    status, _, _ = await _get(url + "static/../../manifest.json")
    assert status == 404
    status, body, _ = await _get(url + "api/rows?kind=nope")
    assert status == 400 and "kept" in body["hint"]
    status, body, _ = await _get(url + "api/rows?kind=kept&min=abc&score=score")
    assert status == 400


async def test_a_corrupt_manifest_is_an_error_with_a_hint(viewer: tuple[str, Path, _Wall]) -> None:
    url, out, _ = viewer
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    status, body, _ = await _get(url + "api/run")
    assert status == 500 and "corrupt manifest" in body["error"] and body["hint"]
