"""The simulated endpoint, end to end: a real SimServer on 127.0.0.1 and an aiohttp client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import aiohttp
import msgspec
import orjson
import pytest

from engine.llm.wire import chunk_decoder, completion_decoder, parse_duration, parse_rate_headers
from engine.sim import FaultWindow, SimServer, SimSettings, format_duration

BODY: dict[str, Any] = {
    "model": "any-model",
    "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Write one short line about tests."},
    ],
    "max_tokens": 24,
    "temperature": 0.7,
}
HEADER = "x-synth-engine-simulated"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


def fast(**kw: Any) -> SimSettings:
    return SimSettings(**{"latency_ms": 1.0, **kw})


async def post(
    session: aiohttp.ClientSession, server: SimServer, body: dict[str, Any], **kw: Any
) -> tuple[int, bytes, Any]:
    async with session.post(server.url + "/chat/completions", json=body, **kw) as resp:
        return resp.status, await resp.read(), resp.headers


async def sse(
    session: aiohttp.ClientSession, server: SimServer, body: dict[str, Any]
) -> list[bytes]:
    async with session.post(
        server.url + "/chat/completions", json={**body, "stream": True}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers[HEADER] == "true"
        return [line[5:].strip() async for line in resp.content if line.startswith(b"data:")]


def content_of(raw: bytes) -> str:
    return completion_decoder.decode(raw).choices[0].message.content or ""


# ------------------------------------------------------------------ plain completions
async def test_plain_completion_shape_and_usage(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        status, raw, headers = await post(session, server, BODY)
    assert status == 200
    assert headers[HEADER] == "true"
    assert headers["Content-Type"].startswith("application/json")
    doc = orjson.loads(raw)
    assert doc["id"].startswith("chatcmpl-sim-")
    assert doc["object"] == "chat.completion"
    assert isinstance(doc["created"], int)
    assert doc["model"] == "any-model"
    [choice] = doc["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    assert text.startswith("[simulated] ")
    words = len(text.split()) - 1
    usage = doc["usage"]
    assert usage["completion_tokens"] == words
    assert min(8, 24) <= words <= 24
    assert choice["finish_reason"] == ("length" if words == 24 else "stop")
    chars = sum(len(m["content"]) for m in BODY["messages"])
    assert usage["prompt_tokens"] == -(-chars // 4) + 4 * 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_default_length_and_length_finish(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(max_tokens_default=12)) as server:
        body = {k: v for k, v in BODY.items() if k != "max_tokens"}
        _, raw, _ = await post(session, server, body)
        done = completion_decoder.decode(raw)
        assert done.usage is not None and done.usage.completion_tokens == 12
        assert done.choices[0].finish_reason == "stop"
        reasons = set()
        for i in range(40):
            _, raw, _ = await post(session, server, {**BODY, "max_tokens": 10, "seed": i})
            done = completion_decoder.decode(raw)
            assert done.usage is not None
            tokens = done.usage.completion_tokens
            assert 8 <= tokens <= 10
            reason = done.choices[0].finish_reason
            assert reason == ("length" if tokens == 10 else "stop")
            reasons.add(reason)
        assert reasons == {"length", "stop"}


async def test_determinism(session: aiohttp.ClientSession) -> None:
    async with (
        SimServer(fast(seed=1)) as a,
        SimServer(fast(seed=1)) as b,
        SimServer(fast(seed=2)) as c,
    ):
        first = content_of((await post(session, a, BODY))[1])
        again = content_of((await post(session, a, BODY))[1])
        other_server = content_of((await post(session, b, BODY))[1])
        other_seed = content_of((await post(session, c, BODY))[1])
        other_request_seed = content_of((await post(session, a, {**BODY, "seed": 7}))[1])
        other_temperature = content_of((await post(session, a, {**BODY, "temperature": 0.0}))[1])
    assert first == again == other_server
    assert other_seed != first
    assert other_request_seed != first
    # temperature is hashed with the rest of the body: different body, different text
    assert other_temperature != first
    for text in (first, other_seed, other_request_seed, other_temperature):
        assert text.startswith("[simulated] ")


async def test_n_choices(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        _, raw, _ = await post(session, server, {**BODY, "n": 3})
    done = completion_decoder.decode(raw)
    assert [c.index for c in done.choices] == [0, 1, 2]
    texts = [c.message.content or "" for c in done.choices]
    assert len(set(texts)) == 3
    assert all(t.startswith("[simulated] ") for t in texts)
    assert done.usage is not None
    assert done.usage.completion_tokens == sum(len(t.split()) - 1 for t in texts)


async def test_models_health_and_404(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(model="m-1")) as server:
        async with session.get(server.url + "/models") as resp:
            assert resp.status == 200
            assert resp.headers[HEADER] == "true"
            doc = await resp.json()
        assert doc["object"] == "list"
        assert doc["data"][0]["id"] == "m-1"
        assert doc["data"][0]["object"] == "model"
        assert doc["data"][0]["owned_by"] == "synth-engine-sim"
        base = server.url.removesuffix("/v1")
        async with session.get(base + "/health") as resp:
            assert resp.status == 200
        async with session.get(base + "/nope") as resp:
            assert resp.status == 404
            assert resp.headers[HEADER] == "true"
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    assert server.port > 0


# ------------------------------------------------------------------ streaming
async def test_stream_chunks_done_and_usage(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        plain = content_of((await post(session, server, BODY))[1])
        events = await sse(session, server, {**BODY, "stream_options": {"include_usage": True}})
        no_usage = await sse(session, server, BODY)
    assert events[-1] == b"[DONE]"
    chunks = [chunk_decoder.decode(e) for e in events[:-1]]
    assert all(orjson.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])
    assert orjson.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(plain.split()) - 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert no_usage[-1] == b"[DONE]"
    assert all(chunk_decoder.decode(e).usage is None for e in no_usage[:-1])


async def test_stream_pacing_and_chunk_count(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(latency_ms=20.0, tokens_per_s=400.0)) as server:
        body = {**BODY, "max_tokens": 100}
        start = time.perf_counter()
        _, raw, _ = await post(session, server, body)
        plain_elapsed = time.perf_counter() - start
        tokens = completion_decoder.decode(raw).usage.completion_tokens  # type: ignore[union-attr]
        start = time.perf_counter()
        events = await sse(session, server, body)
        stream_elapsed = time.perf_counter() - start
    expected = 0.02 + tokens / 400.0
    assert plain_elapsed >= expected * 0.9
    assert stream_elapsed >= expected * 0.9
    assert stream_elapsed < expected + 1.0
    # at most 20 content steps + the finish chunk + [DONE]
    assert len(events) <= 22


async def test_stream_n_choices(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        _, raw, _ = await post(session, server, {**BODY, "n": 2})
        events = await sse(session, server, {**BODY, "n": 2})
    plain = completion_decoder.decode(raw)
    parts: dict[int, str] = {0: "", 1: ""}
    for e in events[:-1]:
        for c in chunk_decoder.decode(e).choices:
            parts[c.index] += c.delta.content or ""
    assert [parts[0], parts[1]] == [c.message.content for c in plain.choices]


# ------------------------------------------------------------------ structured output
class Item(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=20, max_length=60)]
    score: Annotated[int, msgspec.Meta(ge=3, le=5)]
    weight: Annotated[float, msgspec.Meta(ge=0.5, le=0.75)]
    kind: Literal["alpha", "beta"]
    ok: bool


class Report(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    items: Annotated[list[Item], msgspec.Meta(min_length=2, max_length=3)]
    tags: Annotated[list[str], msgspec.Meta(max_length=1)]
    note: str | None
    count: int


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "report", "strict": True, "schema": schema},
    }


async def test_json_schema_output_validates(session: aiohttp.ClientSession) -> None:
    schema = msgspec.json.schema(Report)  # with $ref / $defs
    assert "$defs" in schema
    async with SimServer(fast()) as server:
        for seed in range(15):
            body = {**BODY, "seed": seed, "response_format": schema_format(schema)}
            status, raw, _ = await post(session, server, body)
            assert status == 200
            done = completion_decoder.decode(raw)
            assert done.choices[0].finish_reason == "stop"
            text = done.choices[0].message.content or ""
            report = msgspec.json.decode(text, type=Report)
            assert report.title.startswith("[simulated] ")
            assert 2 <= len(report.items) <= 3
            assert len(report.tags) <= 1
            assert 1 <= report.count <= 10
            for item in report.items:
                assert item.name.startswith("[simulated] ")
                assert 3 <= item.score <= 5
            assert done.usage is not None and done.usage.completion_tokens == -(-len(text) // 4)


async def test_json_schema_handwritten(session: aiohttp.ClientSession) -> None:
    properties: dict[str, Any] = {
        "label": {"const": "fixed"},
        "level": {"enum": ["low", "high"]},
        "n": {"type": "integer", "minimum": 100},
        "x": {"type": "number", "exclusiveMaximum": 0},
        "pick": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
        "nested": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
        },
        "nothing": {"type": "null"},
        "when": {"type": "string", "format": "date-time"},
    }
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    async with SimServer(fast()) as server:
        _, raw, _ = await post(session, server, {**BODY, "response_format": schema_format(schema)})
    doc = orjson.loads(content_of(raw))
    assert set(doc) == set(properties)
    assert doc["label"] == "fixed"
    assert doc["level"] in ("low", "high")
    assert isinstance(doc["n"], int) and doc["n"] >= 100
    assert doc["x"] < 0
    assert isinstance(doc["pick"], bool)
    assert doc["nested"] and all(len(row) >= 2 for row in doc["nested"])
    assert doc["nothing"] is None
    assert doc["when"] == "2024-01-01T00:00:00Z"


async def test_json_object(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        _, raw, _ = await post(
            session, server, {**BODY, "response_format": {"type": "json_object"}}
        )
    doc = orjson.loads(content_of(raw))
    assert list(doc) == ["text"]
    assert doc["text"].startswith("[simulated] ")


# ------------------------------------------------------------------ errors
async def test_bad_requests(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(max_context_tokens=100)) as server:
        async with session.post(server.url + "/chat/completions", data=b"{nope") as resp:
            assert resp.status == 400
            doc = await resp.json()
            assert doc["error"]["type"] == "invalid_request_error"
            assert resp.headers[HEADER] == "true"
        status, raw, _ = await post(session, server, {"model": "m"})
        assert status == 400
        assert "messages" in orjson.loads(raw)["error"]["message"]
        status, raw, _ = await post(session, server, {**BODY, "max_tokens": 200})
        assert status == 400
        err = orjson.loads(raw)["error"]
        assert err["code"] == "context_length_exceeded"
        assert err["message"].startswith("This model's maximum context length is 100 tokens")
        status, _, _ = await post(session, server, {**BODY, "max_tokens": 50})
        assert status == 200
        assert server.stats()["bad_requests"] == 3


async def test_api_key(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(api_key="sk-sim")) as server:
        status, raw, headers = await post(session, server, BODY)
        assert status == 401
        assert headers[HEADER] == "true"
        err = orjson.loads(raw)["error"]
        assert err["type"] == "invalid_request_error"
        assert err["code"] == "invalid_api_key"
        status, _, _ = await post(session, server, BODY, headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, _ = await post(session, server, BODY, headers={"Authorization": "Bearer sk-sim"})
        assert status == 200
        async with session.get(server.url + "/models") as resp:
            assert resp.status == 401


# ------------------------------------------------------------------ rate limits
async def test_rpm_limit_429_headers_and_refill(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(rpm=120)) as server:
        ok = 0
        last_ok: Any = None
        for _ in range(200):  # the bucket holds 120 and refills 2/s: a 429 comes soon after 120
            status, raw, headers = await post(session, server, BODY)
            if status != 200:
                break
            ok += 1
            last_ok = headers
        assert status == 429
        assert 120 <= ok < 200
        rate = parse_rate_headers(last_ok)
        assert rate is not None
        assert rate.limit_requests == 120
        assert rate.remaining_requests is not None and rate.remaining_requests <= 1
        assert rate.reset_requests is not None and 0.0 < rate.reset_requests <= 60.0
        err = orjson.loads(raw)["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
        assert err["message"].startswith("Rate limit reached")
        retry = float(headers["Retry-After"])
        assert 0.0 < retry <= 0.5 + 0.01
        assert headers["x-ratelimit-remaining-requests"] == "0"
        await asyncio.sleep(retry + 0.02)
        status, _, _ = await post(session, server, BODY)
        assert status == 200
        stats = server.stats()
    assert stats["rate_limited"] >= 1
    assert stats["http_429"] == stats["rate_limited"]
    assert stats["admitted"] == stats["requests"] - stats["rate_limited"]
    assert sum(r[1] for r in stats["per_second"]) == stats["admitted"]
    assert sum(r[1] for r in stats["per_second_429"]) == stats["rate_limited"]


async def test_tpm_limit(session: aiohttp.ClientSession) -> None:
    """Admission needs prompt + max_tokens; the bucket keeps only what was used (usage-based)."""
    async with SimServer(fast(tpm=1000)) as server:
        body = {**BODY, "max_tokens": 900}
        status, raw, headers = await post(session, server, body)
        assert status == 200
        usage = orjson.loads(raw)["usage"]
        prompt = 8 + 13  # 4 per message + ceil(49 chars / 4)
        used = usage["total_tokens"]
        assert usage["prompt_tokens"] == prompt
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        remaining = int(headers["x-ratelimit-remaining-tokens"])
        # Only the tokens really used stay charged (plus at most a token of refill).
        assert 1000 - used <= remaining <= 1000 - used + 1
        assert "x-ratelimit-limit-requests" not in headers
        # A request whose reservation exceeds what is left is refused with a matching Retry-After.
        max_tokens = remaining - prompt + 50
        status, _, headers = await post(session, server, {**BODY, "max_tokens": max_tokens})
        assert status == 429
        wait = (max_tokens + prompt - remaining) / (1000 / 60)
        assert float(headers["Retry-After"]) == pytest.approx(wait, abs=0.1)
        reset = parse_duration(headers["x-ratelimit-reset-tokens"])
        assert reset is not None and reset == pytest.approx((1000 - remaining) * 0.06, abs=0.1)
        status, _, _ = await post(session, server, {**BODY, "max_tokens": 10})
        assert status == 200


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(0.0001) == "1ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3725.5) == "1h2m5.5s"
    for value in (0.017, 0.999, 1.0, 59.25, 61.0, 7322.125):
        assert parse_duration(format_duration(value)) == pytest.approx(value, abs=0.001)


# ------------------------------------------------------------------ faults
@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("502", 502), ("503", 503)])
async def test_fault_5xx(session: aiohttp.ClientSession, kind: str, status: int) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=[kind])) as server:
        got, raw, headers = await post(session, server, BODY)
        assert server.stats()["faults"] == {kind: 1}
    assert got == status
    assert headers[HEADER] == "true"
    assert orjson.loads(raw)["error"]["type"] == "server_error"


async def test_fault_429(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["429"], retry_after_s=0.35)) as server:
        status, raw, headers = await post(session, server, BODY)
        stats = server.stats()
    assert status == 429
    assert headers["Retry-After"] == "0.35"
    assert orjson.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert stats["http_429"] == 1 and stats["rate_limited"] == 0


async def test_fault_reset(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["reset"])) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, server, BODY)
        assert server.stats()["faults"] == {"reset": 1}


async def test_fault_malformed(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["malformed", "truncated"])) as server:
        for i in range(4):  # truncated on a non-stream request behaves like malformed
            status, raw, headers = await post(session, server, {**BODY, "seed": i})
            assert status == 200
            assert headers["Content-Type"].startswith("application/json")
            assert raw == b'{"choices": ['
            with pytest.raises(msgspec.DecodeError):
                completion_decoder.decode(raw)


async def test_fault_truncated_stream(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["truncated"])) as server:
        events: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(
                server.url + "/chat/completions", json={**BODY, "stream": True}
            ) as resp:
                assert resp.status == 200
                # a plain loop, not a comprehension: keep the events read before the cut
                async for line in resp.content:
                    if line.startswith(b"data:"):
                        events.append(line[5:].strip())  # noqa: PERF401
    assert events and b"[DONE]" not in events
    assert all(c.finish_reason is None for e in events for c in chunk_decoder.decode(e).choices)


async def test_fault_timeout(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["timeout"], hang_s=20.0)) as server:
        start = time.perf_counter()
        with pytest.raises(asyncio.TimeoutError):
            await post(session, server, BODY, timeout=aiohttp.ClientTimeout(total=0.3))
        assert time.perf_counter() - start < 1.0
        await asyncio.sleep(0.05)
        assert server.stats()["in_flight"] == 0  # the hanging handler was cancelled
    assert time.perf_counter() - start < 2.0


async def test_fault_slow(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(fault_rate=1.0, faults=["slow"], slow_body_s=0.4)) as server:
        start = time.perf_counter()
        status, raw, _ = await post(session, server, BODY)
        elapsed = time.perf_counter() - start
        assert status == 200
        assert content_of(raw).startswith("[simulated] ")
        assert 0.3 <= elapsed < 1.5
        events = await sse(session, server, BODY)
        assert events[-1] == b"[DONE]"


async def test_fault_rate_is_per_attempt_and_deterministic(session: aiohttp.ClientSession) -> None:
    settings = fast(fault_rate=0.5, faults=["500", "503"], seed=3)
    runs: list[list[int]] = []
    for _ in range(2):
        async with SimServer(settings) as server:
            runs.append([(await post(session, server, BODY))[0] for _ in range(24)])
            faults = server.stats()["faults"]
        assert sum(faults.values()) == sum(1 for s in runs[-1] if s != 200)
    assert runs[0] == runs[1]
    assert 200 in runs[0]
    assert set(runs[0]) - {200}


async def test_schedule_windows(session: aiohttp.ClientSession) -> None:
    schedule = [
        FaultWindow(start_s=0.0, end_s=0.3, kind="down"),
        FaultWindow(start_s=0.3, end_s=0.6, kind="429"),
    ]
    async with SimServer(fast(schedule=schedule)) as server:
        status, raw, _ = await post(session, server, BODY)
        assert status == 503
        assert orjson.loads(raw)["error"]["type"] == "server_error"
        await asyncio.sleep(0.35)
        status, _, headers = await post(session, server, BODY)
        assert status == 429 and "Retry-After" in headers
        await asyncio.sleep(0.3)
        status, _, _ = await post(session, server, BODY)
        assert status == 200
        assert server.stats()["faults"] == {"429": 1, "down": 1}


# ------------------------------------------------------------------ stats and settings
async def test_stats_counters(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast(latency_ms=50.0)) as server:
        results = await asyncio.gather(
            *(post(session, server, {**BODY, "seed": i}) for i in range(8))
        )
        assert all(r[0] == 200 for r in results)
        async with session.get(server.url.removesuffix("/v1") + "/sim/stats") as resp:
            assert resp.status == 200
            stats = await resp.json()
    assert stats["simulated"] is True
    assert stats["requests"] == stats["admitted"] == stats["completed"] == 8
    assert stats["in_flight"] == 0
    assert 2 <= stats["max_in_flight"] <= 8
    assert stats["rate_limited"] == stats["http_429"] == 0
    assert stats["faults"] == {}
    assert sum(r[1] for r in stats["per_second"]) == 8
    usages = [completion_decoder.decode(r[1]).usage for r in results]
    assert stats["completion_tokens"] == sum(u.completion_tokens for u in usages if u)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        SimSettings(faults=["explode"])
    with pytest.raises(ValueError, match="fault_rate"):
        SimSettings(fault_rate=0.5)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"latency_ms": 1, "bogus": 2}, SimSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"schedule": [{"start_s": 0, "end_s": 1, "kind": "nope"}]}, SimSettings)
    settings = msgspec.convert(
        {
            "rpm": 60,
            "faults": ["500"],
            "fault_rate": 0.1,
            "schedule": [{"start_s": 0, "end_s": 1, "kind": "down"}],
        },
        SimSettings,
    )
    assert settings.schedule[0].kind == "down"


async def test_low_temperature_samples_mostly_agree(session: aiohttp.ClientSession) -> None:
    async with SimServer(fast()) as server:
        low = {**BODY, "n": 10, "temperature": 0.2}
        high = {**BODY, "n": 10, "temperature": 0.9}
        status, raw, _ = await post(session, server, low)
        assert status == 200
        texts = [c["message"]["content"] for c in orjson.loads(raw)["choices"]]
        top = max(texts.count(t) for t in texts)
        assert top >= 4  # a majority to vote on (p=0.7 each; seeded, so stable)
        status, raw, _ = await post(session, server, high)
        texts = [c["message"]["content"] for c in orjson.loads(raw)["choices"]]
        assert len(set(texts)) == 10


async def test_prompt_answers_over_http_streamed_or_not(session: aiohttp.ClientSession) -> None:
    """The default server answers from the prompt: a listed label, the same streamed or
    not; ``answers = "random"`` answers with the fixed vocabulary whatever the prompt."""
    from engine.sim.model import _VOCAB

    body = {
        **BODY,
        "messages": [
            {"role": "user", "content": "Is the sky green? Answer with YES or NO.\nThink."},
        ],
    }
    async with SimServer(fast()) as server, SimServer(fast(answers="random")) as old:
        labels = set()
        for seed in range(12):
            one = {**body, "seed": seed}
            text = content_of((await post(session, server, one))[1])
            events = await sse(session, server, one)
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in map(chunk_decoder.decode, events[:-1])
                if c.choices
            )
            assert streamed == text
            assert text in ("[simulated] YES", "[simulated] NO")
            labels.add(text)
            words = content_of((await post(session, old, one))[1]).split()[1:]
            assert words and set(words) <= set(_VOCAB)
        assert len(labels) == 2
