"""Hostile endpoints: each attack of the reliability review, against the engine on loopback.

A server of the test suite's own (:mod:`tests.hostile`) proxies the simulated endpoint and
misbehaves on purpose: bodies without end, a gzip bomb, SSE without newlines, absurd and
non-finite rate-limit headers, a key revoked mid-run, headers and bodies echoing the key,
negative usage, an error object inside a 200. Each test states the promise it checks
(docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine import Engine, load_config
from engine.errors import EndpointError, MalformedResponse, ResponseTooLarge
from engine.llm.client import Client
from tests.hostile import (
    Hostile,
    MiB,
    Upstream,
    endless_body,
    gzip_bomb,
    proxied,
    sse_without_newlines,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
KEY = "sk-hostile-test-0123456789abcdefABCDEF"
Fetch = Callable[[], Awaitable[Upstream]]

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Hostile]]]:
    servers: list[Hostile] = []

    async def start(behaviour: Any = None) -> Hostile:
        server = Hostile(behaviour)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.aclose()


# ------------------------------------------------------------- bodies are bounded


async def test_an_endless_body_stops_at_the_limit_and_is_not_retried(serve: Any) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return await endless_body(request, 1024 * MiB)

    server = await serve(behave)
    async with Client("h", server.url, max_response_bytes=2 * MiB) as client:
        with pytest.raises(ResponseTooLarge, match="2,097,152-byte limit"):
            await client.chat(BODY)
    assert server.requests == 1


async def test_a_gzip_bomb_costs_at_most_the_limit(serve: Any) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return await gzip_bomb(request, 256 * MiB)

    server = await serve(behave)
    async with Client("h", server.url, max_response_bytes=1 * MiB) as client:
        with pytest.raises(ResponseTooLarge):
            await client.chat(BODY)


async def test_compressed_answers_within_the_limit_are_read(serve: Any) -> None:
    import gzip as gz

    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        up = await fetch()
        return web.Response(
            body=gz.compress(up.body),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    server = await serve(behave)
    async with Client("h", server.url) as client:
        result = await client.chat(BODY)
    assert result.texts and result.texts[0].startswith("[simulated]")


async def test_sse_without_newlines_is_bounded_and_linear(serve: Any) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return await sse_without_newlines(request, 64 * MiB, chunk=256)

    server = await serve(behave)
    start = time.monotonic()
    async with Client("h", server.url, max_response_bytes=16 * MiB) as client:
        with pytest.raises(ResponseTooLarge):
            await client.chat({**BODY, "stream": True})
    # About 65,000 writes of 256 bytes: a pending line copied on every read (quadratic)
    # moves hundreds of GiB and takes minutes; appended in place, a second or two.
    assert time.monotonic() - start < 20.0


async def test_an_error_object_in_a_200_keeps_the_servers_message(serve: Any) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return web.json_response({"error": {"message": "upstream model overloaded, code 77"}})

    server = await serve(behave)
    async with Client("h", server.url) as client:
        with pytest.raises(MalformedResponse, match="upstream model overloaded, code 77"):
            await client.chat(BODY)


@pytest.mark.parametrize("pad", [0, 55, 62, 70, 190])
async def test_client_errors_quoting_the_key_are_redacted_before_they_are_cut(
    serve: Any, pad: int
) -> None:
    # The key is placed so that the text's cut (the HTTP parser's at about 100 bytes of an
    # over-long header, ours at 300 characters of an error body) falls inside it.
    async def echo(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if n == 1:
            return web.Response(status=200, headers={"X-Echo": "y" * pad + auth + "z" * 9000})
        return web.json_response({"error": "x" * (pad + 50) + auth}, status=400)

    server = await serve(echo)
    async with Client("h", server.url, api_key=KEY) as client:
        for _ in range(2):
            with pytest.raises(EndpointError) as info:
                await client.chat(BODY)
            message = str(info.value)
            assert KEY[:6] not in message, message


def test_peak_memory_under_hostile_bodies_is_the_limit_times_calls_in_flight() -> None:
    # The client in its own process (ru_maxrss is per process), the server in another.
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.hostile_memory",
            "--concurrency",
            "8",
            "--limit-mib",
            "4",
            "--attack-mib",
            "256",
            "--json",
        ],
        cwd=root,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    rows = json.loads(proc.stdout)
    assert {r["mode"] for r in rows} == {"huge", "bomb", "sse"}
    for row in rows:
        assert row["refused"] == 8, row
        # 8 calls x 4 MiB, plus a constant for buffers and the event loop's bookkeeping.
        assert row["peak_growth_mib"] < 8 * 4 + 24, row


# ------------------------------------------------------------------ whole runs


def _respond(out: Path, url: str, *extra: str) -> list[str]:
    return [
        f"run.output={out}",
        f"endpoints.strong.base_url={url}",
        "endpoints.strong.sim={}",
        "endpoints.strong.max_retries=2",
        "endpoints.strong.max_concurrency=4",
        "run.max_items_in_flight=4",
        *extra,
    ]


async def _run(sets: list[str], **kw: Any) -> Any:
    config = load_config(CONFIGS / "respond.toml", sets)
    async with Engine(config, **kw) as engine:
        return await engine.run()


def _rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: dict[str, list[dict[str, Any]]] = {"kept": [], "rejected": [], "failed": []}
    for shard in manifest["shards"]:
        rows[shard["kind"]] += [
            json.loads(line) for line in (out / shard["name"]).read_text().splitlines()
        ]
    return rows


def _texts(out: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for p in out.iterdir()
        if p.is_file() and p.suffix in (".jsonl", ".json")
    )


async def test_retry_after_of_days_stops_the_run_resumably(tmp_path: Path, serve: Any) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        if n > 6:
            return web.json_response(
                {"error": {"message": "quota"}}, status=429, headers={"Retry-After": "999999"}
            )
        return proxied()(await fetch())

    server = await serve(behave)
    out = tmp_path / "out"
    start = time.monotonic()
    result = await _run(_respond(out, server.url))
    assert time.monotonic() - start < 30.0  # not 11.6 days
    assert not result.complete and result.stop_reason.startswith("endpoint:")
    assert "999,999 s (Retry-After)" in result.stop_reason
    assert not _rows(out)["failed"], "an endpoint's failure is no item's failed row"
    # The quota is back: the rerun resumes and finishes.
    server.behaviour = None
    again = await _run(_respond(out, server.url))
    assert again.complete and not again.already_complete
    assert len(_rows(out)["kept"]) + len(_rows(out)["rejected"]) == 22


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("retry-after-inf", {"Retry-After": "inf"}),
        ("retry-after-nan", {"Retry-After": "nan"}),
    ],
)
async def test_non_finite_retry_after_is_ignored(
    tmp_path: Path, serve: Any, name: str, headers: dict[str, str]
) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        if n in (3, 4):
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers=headers
            )
        return proxied()(await fetch())

    server = await serve(behave)
    result = await asyncio.wait_for(_run(_respond(tmp_path / name, server.url)), 60)
    assert result.complete, result.stop_reason
    assert result.report.endpoints["strong"].http_429 == 2


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        (
            "negative-remaining",
            {
                "x-ratelimit-limit-tokens": "100000",
                "x-ratelimit-remaining-tokens": "-5000000",
                "x-ratelimit-reset-tokens": "1s",
            },
        ),
        ("infinite-limit", {"x-ratelimit-limit-requests": "inf"}),
        ("tiny-limit", {"x-ratelimit-limit-tokens": "1e-9"}),
        (
            "nan-limit",
            {"x-ratelimit-limit-requests": "nan", "x-ratelimit-remaining-requests": "nan"},
        ),
    ],
)
async def test_absurd_rate_limit_headers_neither_hang_nor_crash(
    tmp_path: Path, serve: Any, name: str, headers: dict[str, str]
) -> None:
    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return proxied(headers=headers)(await fetch())

    server = await serve(behave)
    result = await asyncio.wait_for(_run(_respond(tmp_path / name, server.url)), 60)
    assert result.complete, result.stop_reason
    assert not _rows(tmp_path / name)["failed"]


async def test_a_key_revoked_mid_run_stops_resumably_and_resumes_exactly(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)

    async def revoked(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        if n > 10:
            return web.json_response(
                {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
                status=401,
            )
        return proxied()(await fetch())

    server = await serve(revoked)
    out = tmp_path / "out"
    sets = _respond(out, server.url, "endpoints.strong.api_key_env=HOSTILE_KEY")
    result = await _run(sets)
    assert not result.complete and result.stop_reason.startswith("endpoint:")
    assert "HTTP 401" in result.stop_reason
    rows = _rows(out)
    assert not rows["failed"], "a revoked key must not become failed rows"
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    # After the key is fixed, the same command resumes (it is not "already complete")
    # and ends with exactly the rows of an uninterrupted run.
    server.behaviour = None
    again = await _run(sets)
    assert again.complete and not again.already_complete
    fresh = tmp_path / "fresh"
    assert (
        await _run(_respond(fresh, server.url, "endpoints.strong.api_key_env=HOSTILE_KEY"))
    ).complete
    for kind in ("kept", "rejected", "failed"):
        assert sorted(r["id"] for r in _rows(out)[kind]) == sorted(
            r["id"] for r in _rows(fresh)[kind]
        )


async def test_a_header_echoing_the_key_never_reaches_a_row(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOSTILE_KEY", KEY)

    async def echo(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if n % 2:
            # An over-long header quoting the request's Authorization: the client's HTTP
            # parser fails below the status line, with the header in its message.
            return web.Response(status=200, headers={"X-Echo": (auth + " ") * 400})
        # An error body with the key placed across the old 200-byte cut.
        return web.json_response(
            {"error": "x" * 180 + " you sent " + auth + " which is wrong"}, status=400
        )

    server = await serve(echo)
    out = tmp_path / "out"
    result = await _run(_respond(out, server.url, "endpoints.strong.api_key_env=HOSTILE_KEY"))
    assert result.complete
    failed = _rows(out)["failed"]
    assert len(failed) == 22
    text = _texts(out)
    for fragment in (KEY, KEY[:10], KEY[-10:]):
        assert fragment not in text
    assert "[redacted]" in text


async def test_negative_usage_never_reaches_the_ledger(tmp_path: Path, serve: Any) -> None:
    def negative(data: dict[str, Any]) -> None:
        data["usage"] = {"prompt_tokens": -10_000_000, "completion_tokens": -5, "total_tokens": -1}

    async def behave(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return proxied(change=negative)(await fetch())

    server = await serve(behave)
    out = tmp_path / "out"
    sets = _respond(
        out,
        server.url,
        "endpoints.strong.price={prompt = 1000.0, completion = 1000.0}",
        "budget.max_cost=0.5",
    )
    result = await _run(sets)
    # The budget triggers on the estimates; nothing negative is recorded.
    assert result.stop_reason and result.stop_reason.startswith("budget:")
    manifest = json.loads((out / "manifest.json").read_text())
    for per_endpoint in manifest["extra"]["spend"].values():
        for counters in per_endpoint.values():
            assert min(counters.values()) >= 0, counters
    for usage in manifest["usage"].values():
        assert min(usage.values()) >= 0, usage


async def test_a_tpm_smaller_than_one_request_stops_instead_of_failing_rows(
    tmp_path: Path, serve: Any
) -> None:
    server = await serve(None)
    out = tmp_path / "out"
    result = await _run(_respond(out, server.url, "endpoints.strong.tpm=100"))
    assert not result.complete and result.stop_reason.startswith("endpoint:")
    assert "can never be sent" in result.stop_reason and server.requests == 0
    assert not _rows(out)["failed"]
