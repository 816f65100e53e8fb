"""The simulated Anthropic Messages API and Message Batches, on a real SimServer on 127.0.0.1.

Shapes are checked against the event stream Anthropic's own SDK tests with
(tests/fixtures/providers) and through the official ``anthropic`` SDK; batch lifecycles
are stepped with an injected FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

from engine.clock import FakeClock
from engine.sim import FaultWindow, SimServer, SimSettings
from engine.sim.lifecycle import BatchSettings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "providers"
HEADERS = {"x-api-key": "sk-ant-sim", "anthropic-version": "2023-06-01"}
PARAMS: dict[str, Any] = {
    "model": "claude-sim",
    "max_tokens": 48,
    "system": "You are terse.",
    "messages": [{"role": "user", "content": "Name three colours."}],
    "temperature": 0.7,
}


class Sim:
    def __init__(self, server: SimServer, clock: FakeClock, session: aiohttp.ClientSession):
        self.server = server
        self.clock = clock
        self.session = session
        self.root = server.url.removesuffix("/v1")

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        async with self.session.request(
            method, self.root + path, headers=HEADERS if headers is None else headers, **kw
        ) as resp:
            raw = await resp.read()
            assert resp.headers["x-synth-engine-simulated"] == "true"
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                return resp.status, orjson.loads(raw), resp.headers
            return resp.status, raw, resp.headers

    async def message(self, **params: Any) -> dict[str, Any]:
        status, body, _ = await self.call("POST", "/v1/messages", json={**PARAMS, **params})
        assert status == 200, body
        return dict(body)

    async def create(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST", "/v1/messages/batches", json={"requests": requests}
        )
        assert status == 200, body
        return dict(body)

    async def get(self, batch_id: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"/v1/messages/batches/{batch_id}")
        assert status == 200, body
        return dict(body)

    async def results(self, batch_id: str) -> dict[str, dict[str, Any]]:
        status, raw, headers = await self.call("GET", f"/v1/messages/batches/{batch_id}/results")
        assert status == 200 and headers["Content-Type"].startswith("application/x-jsonl")
        rows = [orjson.loads(x) for x in raw.splitlines()]
        return {r["custom_id"]: r["result"] for r in rows}


@contextlib.asynccontextmanager
async def sim(**kw: Any) -> AsyncIterator[Sim]:
    batches = kw.pop("batches", {})
    settings = SimSettings(latency_ms=1.0, **kw, batches=BatchSettings(**batches))
    clock = FakeClock()
    async with (
        SimServer(settings, clock=clock) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):
        yield Sim(server, clock, session)


def requests(n: int, prefix: str = "r", **params: Any) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "params": {
                **PARAMS,
                "messages": [{"role": "user", "content": f"Question {i}?"}],
                **params,
            },
        }
        for i in range(n)
    ]


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


# ------------------------------------------------------------------ messages
async def test_a_message_has_anthropics_shape_and_the_chat_reply_text() -> None:
    async with sim() as s:
        message = await s.message()
        chat = {
            "model": "claude-sim",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name three colours."},
            ],
            "max_tokens": 48,
            "temperature": 0.7,
        }
        async with s.session.post(s.server.url + "/chat/completions", json=chat) as resp:
            online = await resp.json()
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_") and message["model"] == "claude-sim"
    [block] = message["content"]
    assert block["type"] == "text"
    assert block["text"] == online["choices"][0]["message"]["content"]
    assert block["text"].startswith("[simulated] ")
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    usage = message["usage"]
    assert usage["input_tokens"] == online["usage"]["prompt_tokens"]
    assert usage["output_tokens"] == online["usage"]["completion_tokens"]
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0


async def test_stop_reasons_max_tokens_and_stop_sequence() -> None:
    async with sim() as s:
        short = await s.message(max_tokens=1)
        assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 1
        full = (await s.message())["content"][0]["text"]
        word = full.split()[3]
        cut = await s.message(stop_sequences=["zzz-never", " " + word])
    text = cut["content"][0]["text"]
    assert cut["stop_reason"] == "stop_sequence" and cut["stop_sequence"] == " " + word
    assert full.startswith(text) and len(text) < len(full)
    # one token per simulated word, the label excluded
    assert 0 < cut["usage"]["output_tokens"] < len(full.split()) - 1


async def test_block_content_and_system_blocks_are_read_as_text() -> None:
    async with sim() as s:
        plain = await s.message()
        blocks = await s.message(
            system=[{"type": "text", "text": "You are terse."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Name three colours."}]}
            ],
        )
    assert blocks["content"] == plain["content"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": None}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": "STOP"}, "stop_sequences"),
        ({"system": 3}, "system"),
    ],
)
async def test_invalid_requests_get_anthropics_error_shape(
    change: dict[str, Any], needle: str
) -> None:
    body = {k: v for k, v in {**PARAMS, **change}.items() if v is not None}
    async with sim() as s:
        status, err, headers = await s.call("POST", "/v1/messages", json=body)
    assert status == 400 and err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error" and needle in err["error"]["message"]
    assert err["request_id"] == headers["request-id"]


async def test_the_key_and_version_headers_are_required() -> None:
    async with sim(api_key="sk-ant-sim") as s:
        status, err, _ = await s.call(
            "POST", "/v1/messages", headers={"anthropic-version": "2023-06-01"}, json=PARAMS
        )
        assert status == 401 and err["error"]["type"] == "authentication_error"
        status, err, _ = await s.call(
            "POST",
            "/v1/messages",
            headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"},
            json=PARAMS,
        )
        assert status == 401
        status, err, _ = await s.call(
            "POST", "/v1/messages", headers={"x-api-key": "sk-ant-sim"}, json=PARAMS
        )
        assert status == 400 and "anthropic-version" in err["error"]["message"]
        bearer = {"Authorization": "Bearer sk-ant-sim", "anthropic-version": "2023-06-01"}
        status, _, _ = await s.call("POST", "/v1/messages", headers=bearer, json=PARAMS)
        assert status == 200
        assert s.server.stats()["unauthorized"] == 2


# ------------------------------------------------------------------ streaming
async def test_the_stream_has_the_event_sequence_and_fields_of_a_real_stream() -> None:
    real = sse((FIXTURES / "anthropic_sse_basic_response.txt").read_bytes())

    def collapsed(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        names: list[str] = []
        for name, _ in events:
            if not names or names[-1] != name:
                names.append(name)
        return names

    async with sim() as s:
        status, raw, headers = await s.call("POST", "/v1/messages", json={**PARAMS, "stream": True})
        plain = await s.message()
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    ours = sse(raw)
    assert collapsed(ours) == collapsed(real)
    for (name, data), (real_name, real_data) in zip(
        _first_of_each(ours), _first_of_each(real), strict=True
    ):
        assert name == real_name and data["type"] == name
        assert set(real_data) <= set(data), name
        for key in ("message", "delta", "content_block", "usage"):
            if isinstance(real_data.get(key), dict):
                assert set(real_data[key]) <= set(data[key]), (name, key)
    text = "".join(d["delta"]["text"] for n, d in ours if n == "content_block_delta")
    assert text == plain["content"][0]["text"]
    delta = next(d for n, d in ours if n == "message_delta")
    assert delta["delta"]["stop_reason"] == plain["stop_reason"]
    assert delta["usage"]["output_tokens"] == plain["usage"]["output_tokens"]
    start = next(d for n, d in ours if n == "message_start")
    assert start["message"]["usage"]["input_tokens"] == plain["usage"]["input_tokens"]


def _first_of_each(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    seen: dict[str, dict[str, Any]] = {}
    for name, data in events:
        seen.setdefault(name, data)
    return list(seen.items())


# ------------------------------------------------------------------ limits, faults, caching
async def test_rate_limit_headers_and_429_with_retry_after() -> None:
    async with sim(rpm=2, tpm=100_000) as s:
        before = datetime.now(UTC).replace(microsecond=0)
        statuses = []
        for _ in range(3):
            status, body, headers = await s.call("POST", "/v1/messages", json=PARAMS)
            statuses.append(status)
        assert statuses == [200, 200, 429]
        assert body["error"]["type"] == "rate_limit_error"
        assert int(headers["retry-after"]) >= 1
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-tokens-limit"] == "100000"
        reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
        assert before <= reset <= before + timedelta(seconds=65)  # a full minute of quota
        assert int(headers["anthropic-ratelimit-tokens-remaining"]) < 100_000
        assert s.server.stats()["http_429"] == 1


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("503", 529, "overloaded_error"),
        ("down", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("502", 502, "api_error"),
        ("429", 429, "rate_limit_error"),
    ],
)
async def test_injected_faults_use_anthropics_statuses(
    kind: str, status: int, error_type: str
) -> None:
    async with sim(schedule=[FaultWindow(start_s=0, end_s=3600, kind=kind)]) as s:
        got, body, _ = await s.call("POST", "/v1/messages", json=PARAMS)
    assert got == status and body["error"]["type"] == error_type


async def test_connection_faults_behave_as_on_the_chat_route() -> None:
    async with sim(schedule=[FaultWindow(start_s=0, end_s=3600, kind="malformed")]) as s:
        with pytest.raises(orjson.JSONDecodeError):  # a 200 whose JSON body is cut
            await s.call("POST", "/v1/messages", json=PARAMS)
    async with sim(schedule=[FaultWindow(start_s=0, end_s=3600, kind="reset")]) as s:
        with pytest.raises(aiohttp.ClientError):
            await s.call("POST", "/v1/messages", json=PARAMS)
    async with sim(schedule=[FaultWindow(start_s=0, end_s=3600, kind="truncated")]) as s:
        with pytest.raises(aiohttp.ClientError):
            await s.call("POST", "/v1/messages", json={**PARAMS, "stream": True})


async def test_the_stream_is_paced_by_the_token_rate() -> None:
    async with sim(tokens_per_s=400.0) as s:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, raw, _ = await s.call("POST", "/v1/messages", json={**PARAMS, "stream": True})
        took = loop.time() - started
    tokens = next(d for n, d in sse(raw) if n == "message_delta")["usage"]["output_tokens"]
    assert status == 200 and tokens >= 8 and took >= 0.9 * tokens / 400.0


async def test_prompt_caching_writes_then_reads_a_marked_prefix() -> None:
    long_system = [
        {"type": "text", "text": "Rules. " * 800, "cache_control": {"type": "ephemeral"}}
    ]
    async with sim() as s:
        first = await s.message(system=long_system)
        second = await s.message(
            system=long_system, messages=[{"role": "user", "content": "Another question."}]
        )
        short = await s.message(system=[{**long_system[0], "text": "Short."}])
        stats = s.server.stats()["anthropic"]
        s.clock.advance(301)  # past the 5-minute lifetime: written again
        expired = await s.message(system=long_system)
        hour = [{**long_system[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        await s.message(system=hour)
        s.clock.advance(3000)
        kept = await s.message(system=hour)
    written = first["usage"]["cache_creation_input_tokens"]
    assert written >= 1024 and first["usage"]["cache_read_input_tokens"] == 0
    assert second["usage"]["cache_read_input_tokens"] == written
    assert second["usage"]["cache_creation_input_tokens"] == 0
    assert second["usage"]["input_tokens"] < 50  # only what follows the breakpoint
    assert short["usage"]["cache_creation_input_tokens"] == 0  # under the 1,024 minimum
    assert stats["cache_writes"] == 1 and stats["cache_reads"] == 1
    assert expired["usage"]["cache_creation_input_tokens"] == written
    assert kept["usage"]["cache_read_input_tokens"] == written


# ------------------------------------------------------------------ the official SDK
async def test_the_anthropic_sdk_creates_streams_and_runs_batches() -> None:
    settings = SimSettings(
        latency_ms=1.0, api_key="sk-ant-sim", batches=BatchSettings(speed=100.0, processing_s=10)
    )
    async with SimServer(settings) as server:
        async with anthropic.AsyncAnthropic(
            base_url=server.url.removesuffix("/v1"), api_key="sk-ant-sim", max_retries=0
        ) as client:
            message = await client.messages.create(
                model="claude-sim",
                max_tokens=40,
                system="You are terse.",
                messages=[{"role": "user", "content": "Hello"}],
            )
            assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
            async with client.messages.stream(
                model="claude-sim",
                max_tokens=40,
                system="You are terse.",
                messages=[{"role": "user", "content": "Hello"}],
            ) as stream:
                final = await stream.get_final_message()
            assert [b.model_dump()["text"] for b in final.content] == [
                b.model_dump()["text"] for b in message.content
            ]
            assert final.usage.output_tokens == message.usage.output_tokens
            batch = await client.messages.batches.create(
                requests=[
                    {
                        "custom_id": f"q{i}",
                        "params": {
                            "model": "claude-sim",
                            "max_tokens": 30,
                            "messages": [{"role": "user", "content": f"Hello {i}"}],
                        },
                    }
                    for i in range(6)
                ]
            )
            assert batch.processing_status == "in_progress"
            for _ in range(200):  # bounded; 0.1 s of real time expected
                batch = await client.messages.batches.retrieve(batch.id)
                if batch.processing_status == "ended":
                    break
                await asyncio.sleep(0.02)
            assert batch.request_counts.succeeded == 6 and batch.results_url is not None
            results = [r async for r in await client.messages.batches.results(batch.id)]
            assert sorted(r.custom_id for r in results) == [f"q{i}" for i in range(6)]
            assert all(r.result.type == "succeeded" for r in results)
            page = await client.messages.batches.list(limit=10)
            assert [b.id for b in page.data] == [batch.id]
            deleted = await client.messages.batches.delete(batch.id)
            assert deleted.type == "message_batch_deleted"
            other = await client.messages.batches.create(
                requests=[
                    {
                        "custom_id": "c",
                        "params": {
                            "model": "m",
                            "max_tokens": 5,
                            "messages": [{"role": "user", "content": "x"}],
                        },
                    }
                ]
            )
            canceling = await client.messages.batches.cancel(other.id)
            assert canceling.processing_status == "canceling"
            async with anthropic.AsyncAnthropic(
                base_url=server.url.removesuffix("/v1"), api_key="wrong", max_retries=0
            ) as bad:
                with pytest.raises(anthropic.AuthenticationError):
                    await bad.messages.create(
                        model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
                    )


# ------------------------------------------------------------------ message batches
async def test_a_message_batch_moves_from_in_progress_to_ended() -> None:
    bad = {
        "custom_id": "bad",
        "params": {"model": "claude-sim", "messages": [{"role": "user", "content": "x"}]},
    }
    async with sim(batches={"processing_s": 10}) as s:
        batch = await s.create([*requests(20), bad])
        assert batch["type"] == "message_batch" and batch["processing_status"] == "in_progress"
        assert batch["request_counts"]["processing"] == 21 and batch["results_url"] is None
        assert batch["ended_at"] is None and batch["archived_at"] is None
        created = datetime.fromisoformat(batch["created_at"])
        assert datetime.fromisoformat(batch["expires_at"]) - created == timedelta(seconds=86_400)
        status, err, _ = await s.call("GET", f"/v1/messages/batches/{batch['id']}/results")
        assert status == 404 and err["error"]["type"] == "not_found_error"
        s.clock.advance(5)
        mid = await s.get(batch["id"])
        counts = mid["request_counts"]
        assert 0 < counts["processing"] < 21
        assert sum(counts.values()) == 21
        s.clock.advance(6)
        done = await s.get(batch["id"])
        assert done["processing_status"] == "ended" and done["ended_at"] is not None
        assert done["request_counts"] == {
            "processing": 0,
            "succeeded": 20,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert done["results_url"].endswith(f"/v1/messages/batches/{batch['id']}/results")
        results = await s.results(batch["id"])
        again = await s.results(batch["id"])
        single = await s.message(messages=[{"role": "user", "content": "Question 3?"}])
    assert results == again  # results are stable across downloads
    assert results["bad"]["type"] == "errored"
    assert results["bad"]["error"]["type"] == "error"
    assert results["bad"]["error"]["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in results["bad"]["error"]["error"]["message"]
    ok = results["r3"]["message"]
    assert ok["content"] == single["content"] and ok["usage"]["service_tier"] == "batch"
    assert ok["stop_reason"] == single["stop_reason"]


async def test_partial_failures_expiry_and_forced_statuses() -> None:
    async with sim(batches={"fail_fraction": 0.4}) as s:
        batch = await s.create(requests(30))
        s.clock.advance(100)
        results = await s.results(batch["id"])
        errored = [k for k, r in results.items() if r["type"] == "errored"]
        assert 4 <= len(errored) <= 20
        assert all(results[k]["error"]["error"]["type"] == "api_error" for k in errored)
        retry = await s.create([r for r in requests(30) if r["custom_id"] in errored])
        s.clock.advance(100)
        assert (await s.get(retry["id"]))["request_counts"]["succeeded"] >= 1
        submissions = s.server.stats()["anthropic"]["message_batches"]["submissions_by_custom_id"]
        assert all(submissions[k] == 2 for k in errored)
    async with sim(batches={"expire_fraction": 0.5, "completion_window_s": 30}) as s:
        batch = await s.create(requests(30))
        s.clock.advance(10)
        assert (await s.get(batch["id"]))["processing_status"] == "in_progress"
        s.clock.advance(25)
        done = await s.get(batch["id"])
        expired = done["request_counts"]["expired"]
        assert done["processing_status"] == "ended" and 5 <= expired <= 25
        results = await s.results(batch["id"])
        assert sum(r == {"type": "expired"} for r in results.values()) == expired
    async with sim(batches={"force_status": "expired", "completion_window_s": 30}) as s:
        batch = await s.create(requests(4))
        s.clock.advance(31)
        assert (await s.get(batch["id"]))["request_counts"]["expired"] == 4
    async with sim(batches={"force_status": "failed"}) as s:
        batch = await s.create(requests(4))
        s.clock.advance(31)
        assert (await s.get(batch["id"]))["request_counts"]["errored"] == 4


async def test_cancel_and_delete_rules() -> None:
    async with sim(batches={"processing_s": 10, "cancelling_s": 2}) as s:
        batch = await s.create(requests(20))
        status, _, _ = await s.call("DELETE", f"/v1/messages/batches/{batch['id']}")
        assert status == 400  # cannot delete a batch in progress
        s.clock.advance(5)
        status, canceling, _ = await s.call("POST", f"/v1/messages/batches/{batch['id']}/cancel")
        assert status == 200 and canceling["processing_status"] == "canceling"
        assert canceling["cancel_initiated_at"] is not None
        s.clock.advance(2)
        done = await s.get(batch["id"])
        counts = done["request_counts"]
        assert done["processing_status"] == "ended"
        assert counts["canceled"] > 0 and counts["succeeded"] > 0
        assert counts["succeeded"] + counts["canceled"] == 20
        results = await s.results(batch["id"])
        assert sum(r == {"type": "canceled"} for r in results.values()) == counts["canceled"]
        status, err, _ = await s.call("POST", f"/v1/messages/batches/{batch['id']}/cancel")
        assert status == 400 and err["error"]["type"] == "invalid_request_error"
        status, deleted, _ = await s.call("DELETE", f"/v1/messages/batches/{batch['id']}")
        assert status == 200 and deleted == {"id": batch["id"], "type": "message_batch_deleted"}
        status, _, _ = await s.call("GET", f"/v1/messages/batches/{batch['id']}")
        assert status == 404


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"requests": []}, 400, "requests"),
        ({"requests": [{"custom_id": "has space", "params": PARAMS}]}, 400, "custom_id"),
        ({"requests": [{"custom_id": "x" * 65, "params": PARAMS}]}, 400, "custom_id"),
        (
            {
                "requests": [
                    {"custom_id": "a", "params": PARAMS},
                    {"custom_id": "a", "params": PARAMS},
                ]
            },
            400,
            "unique",
        ),
        ({"requests": [{"custom_id": "a"}]}, 400, "params"),
        (
            {"requests": [{"custom_id": f"n{i}", "params": PARAMS} for i in range(6)]},
            400,
            "at most 5",
        ),
        (
            {"requests": [{"custom_id": "big", "params": {**PARAMS, "system": "x" * 5000}}]},
            413,
            "maximum size",
        ),
    ],
)
async def test_the_create_call_checks_the_envelope(
    body: dict[str, Any], status: int, needle: str
) -> None:
    async with sim(batches={"anthropic_max_requests": 5, "anthropic_max_bytes": 4000}) as s:
        got, err, _ = await s.call("POST", "/v1/messages/batches", json=body)
    assert got == status and err["type"] == "error" and needle in err["error"]["message"]


async def test_lists_and_counters() -> None:
    async with sim() as s:
        ids = [(await s.create(requests(2, f"b{i}-")))["id"] for i in range(3)]
        status, page, _ = await s.call("GET", "/v1/messages/batches?limit=2")
        assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"]
        status, rest, _ = await s.call("GET", f"/v1/messages/batches?after_id={page['last_id']}")
        assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]
        await s.message()
        s.clock.advance(100)
        stats = s.server.stats()["anthropic"]
    assert stats["messages_requests"] == 1 and stats["messages_completed"] == 1
    batches = stats["message_batches"]
    assert batches["batches_submitted"] == 3 and batches["requests_submitted"] == 6
    assert batches["requests_processed"] == 6 and batches["custom_ids"] == 6
    assert set(batches["submissions_by_custom_id"].values()) == {1}
