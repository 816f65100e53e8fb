"""The simulated OpenAI Files + Batch APIs, on a real SimServer on 127.0.0.1.

Lifecycles are stepped with an injected FakeClock (no sleeping); the SDK test runs on
real time with a speed factor. Shapes are checked against a real OpenAI batch input and
output file (tests/fixtures/providers) and through the official ``openai`` SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import openai
import orjson
import pytest

from engine.clock import FakeClock
from engine.sim import SimServer, SimSettings
from engine.sim.lifecycle import BatchSettings
from engine.sim.process import sim_process
from tests.conftest import run_cli

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "providers"
URL: Final = "/v1/chat/completions"


class Sim:
    """A started server, its fake clock and an HTTP session."""

    def __init__(self, server: SimServer, clock: FakeClock, session: aiohttp.ClientSession):
        self.server = server
        self.clock = clock
        self.session = session
        self.base = server.url  # .../v1

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kw) as resp:
            raw = await resp.read()
            assert resp.headers["x-synth-engine-simulated"] == "true"
            try:
                return resp.status, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return resp.status, raw

    async def upload(
        self, data: bytes, filename: str = "requests.jsonl", purpose: str = "batch"
    ) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        # aiohttp refuses large bytes values in a form; a file object streams.
        form.add_field(
            "file", io.BytesIO(data), filename=filename, content_type="application/jsonl"
        )
        return await self.call("POST", "/files", data=form)

    async def submit(self, lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        status, f = await self.upload(jsonl(lines))
        assert status == 200, f
        status, batch = await self.call(
            "POST",
            "/batches",
            json={
                "input_file_id": f["id"],
                "endpoint": URL,
                "completion_window": "24h",
                **extra,
            },
        )
        assert status == 200, batch
        return dict(batch)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/batches/{batch_id}")
        assert status == 200, body
        return dict(body)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        status, raw = await self.call("GET", f"/files/{file_id}/content")
        assert status == 200
        text = raw if isinstance(raw, bytes) else orjson.dumps(raw) + b"\n"
        return [orjson.loads(x) for x in text.splitlines() if x.strip()]

    async def finish(self, batch_id: str, seconds: float = 100_000.0) -> dict[str, Any]:
        self.clock.advance(seconds)
        return await self.batch(batch_id)


@contextlib.asynccontextmanager
async def sim(**batch: Any) -> AsyncIterator[Sim]:
    settings = SimSettings(
        latency_ms=1.0,
        **{k: batch.pop(k) for k in ("api_key", "max_context_tokens", "seed") if k in batch},
        batches=BatchSettings(**batch),
    )
    clock = FakeClock()
    async with (
        SimServer(settings, clock=clock) as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):
        yield Sim(server, clock, session)


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": URL,
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 24,
            **body,
        },
    }


def many(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [line(f"{prefix}{i}", f"Write one line about topic {i}.") for i in range(n)]


# ------------------------------------------------------------------ lifecycle
async def test_lifecycle_validating_in_progress_finalizing_completed() -> None:
    async with sim(validating_s=1, processing_s=10, finalizing_s=2) as s:
        batch = await s.submit(many(40), metadata={"stage": "respond"})
        assert batch["object"] == "batch" and batch["status"] == "validating"
        assert batch["endpoint"] == URL and batch["completion_window"] == "24h"
        assert batch["metadata"] == {"stage": "respond"} and batch["model"] == "gpt-4o-mini"
        assert batch["expires_at"] - batch["created_at"] == 86_400
        assert batch["in_progress_at"] is None and batch["output_file_id"] is None
        s.clock.advance(6)  # 5 s into 10 s of processing
        mid = await s.batch(batch["id"])
        assert mid["status"] == "in_progress" and mid["in_progress_at"] is not None
        counts = mid["request_counts"]
        assert counts["total"] == 40 and 5 < counts["completed"] < 35 and counts["failed"] == 0
        s.clock.advance(5.5)
        fin = await s.batch(batch["id"])
        assert fin["status"] == "finalizing" and fin["finalizing_at"] is not None
        assert fin["request_counts"]["completed"] == 40
        s.clock.advance(2)
        done = await s.batch(batch["id"])
        assert done["status"] == "completed" and done["completed_at"] is not None
        assert done["error_file_id"] is None
        out = await s.lines(done["output_file_id"])
        assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(40))
        # Lines come in the order they were processed, not the input order (as OpenAI warns).
        assert [x["custom_id"] for x in out] != [f"r{i}" for i in range(40)]
        for x in out:
            assert x["id"].startswith("batch_req_") and x["error"] is None
            assert x["response"]["status_code"] == 200
            assert x["response"]["request_id"].startswith("req_")
            assert x["response"]["body"]["object"] == "chat.completion"
        usage = done["usage"]
        assert usage["input_tokens"] == sum(
            x["response"]["body"]["usage"]["prompt_tokens"] for x in out
        )
        assert usage["output_tokens"] == sum(
            x["response"]["body"]["usage"]["completion_tokens"] for x in out
        )
        status, meta = await s.call("GET", f"/files/{done['output_file_id']}")
        assert status == 200 and meta["purpose"] == "batch_output" and meta["object"] == "file"


async def test_a_batch_line_gets_the_online_reply_to_its_body() -> None:
    bodies: list[dict[str, Any]] = [
        {"temperature": 0.7},
        {"n": 3, "temperature": 0.2},
        {"max_tokens": 1},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "q",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "question": {"type": "string"},
                            "score": {"type": "integer"},
                        },
                        "required": ["question", "score"],
                    },
                },
            }
        },
    ]
    lines = [line(f"c{i}", f"Prompt number {i}", **b) for i, b in enumerate(bodies)]
    async with sim() as s:
        batch = await s.submit(lines)
        done = await s.finish(batch["id"])
        out = {x["custom_id"]: x["response"]["body"] for x in await s.lines(done["output_file_id"])}
        for spec in lines:
            status, online = await s.call("POST", "/chat/completions", json=spec["body"])
            assert status == 200
            got = out[spec["custom_id"]]
            assert got["choices"] == online["choices"]
            assert got["usage"] == online["usage"] and got["model"] == online["model"]


async def test_a_real_openai_batch_file_runs_and_results_have_openais_shape() -> None:
    real_input = (FIXTURES / "openai_batch_input_navirag.jsonl").read_bytes()
    real_output = [
        orjson.loads(x)
        for x in (FIXTURES / "openai_batch_output_navirag.jsonl").read_bytes().splitlines()
    ]

    def paths(value: Any, prefix: str = "") -> set[str]:
        if isinstance(value, dict):
            out = {prefix}
            for k, v in value.items():
                out |= paths(v, f"{prefix}.{k}")
            return out
        if isinstance(value, list):
            out = {prefix}
            for v in value:
                out |= paths(v, f"{prefix}[]")
            return out
        return {prefix}

    real_paths = set().union(*(paths(x) for x in real_output))
    async with sim() as s:
        status, f = await s.upload(real_input, "batch_input.jsonl")
        assert status == 200 and f["bytes"] == len(real_input)
        status, batch = await s.call(
            "POST",
            "/batches",
            json={"input_file_id": f["id"], "endpoint": URL, "completion_window": "24h"},
        )
        assert status == 200
        done = await s.finish(batch["id"])
        assert done["status"] == "completed" and done["model"] == "gpt-4o"
        out = await s.lines(done["output_file_id"])
    assert sorted(x["custom_id"] for x in out) == sorted(x["custom_id"] for x in real_output)
    ours = set().union(*(paths(x) for x in out))
    # Everything the simulated lines carry is where OpenAI puts it...
    assert ours <= real_paths, ours - real_paths
    # ...including every field a client reads.
    for needed in (
        ".id",
        ".custom_id",
        ".error",
        ".response.status_code",
        ".response.request_id",
        ".response.body.choices[].message.content",
        ".response.body.choices[].finish_reason",
        ".response.body.usage.prompt_tokens",
        ".response.body.usage.completion_tokens",
    ):
        assert needed in ours


# ------------------------------------------------------------------ validation
def _dup() -> list[dict[str, Any]]:
    return [line("a", "x"), line("a", "y")]


def _model() -> list[dict[str, Any]]:
    return [line("a", "x"), line("b", "y", model="gpt-4o")]


def _url() -> list[dict[str, Any]]:
    return [line("a", "x"), {**line("b", "y"), "url": "/v1/embeddings"}]


def _method() -> list[dict[str, Any]]:
    return [line("a", "x"), {**line("b", "y"), "method": "GET"}]


def _no_id() -> list[dict[str, Any]]:
    bad = line("b", "y")
    del bad["custom_id"]
    return [line("a", "x"), bad]


def _no_body() -> list[dict[str, Any]]:
    bad = line("b", "y")
    del bad["body"]
    return [line("a", "x"), bad]


@pytest.mark.parametrize(
    ("lines", "code", "param"),
    [
        (_dup, "duplicate_custom_id", "custom_id"),
        (_model, "mismatched_model", "body.model"),
        (_url, "invalid_url", "url"),
        (_method, "invalid_method", "method"),
        (_no_id, "missing_required_parameter", "custom_id"),
        (_no_body, "missing_required_parameter", "body"),
    ],
)
async def test_a_file_breaking_a_rule_fails_the_batch_with_the_line(
    lines: Any, code: str, param: str
) -> None:
    async with sim() as s:
        batch = await s.submit(lines())
        assert batch["status"] == "validating"
        failed = await s.finish(batch["id"])
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert failed["output_file_id"] is None and failed["error_file_id"] is None
    [error] = failed["errors"]["data"]
    assert (error["code"], error["param"], error["line"]) == (code, param, 2)
    assert failed["errors"]["object"] == "list"


async def test_unparseable_lines_and_an_empty_file_are_named() -> None:
    async with sim() as s:
        status, f = await s.upload(jsonl([line("a", "x")]) + b"{not json\n[1, 2]\n")
        assert status == 200
        status, batch = await s.call(
            "POST",
            "/batches",
            json={"input_file_id": f["id"], "endpoint": URL, "completion_window": "24h"},
        )
        failed = await s.finish(batch["id"])
        assert [(e["code"], e["line"]) for e in failed["errors"]["data"]] == [
            ("invalid_json_line", 2),
            ("invalid_json_line", 3),
        ]
        status, f = await s.upload(b"\n\n")
        status, batch = await s.call(
            "POST",
            "/batches",
            json={"input_file_id": f["id"], "endpoint": URL, "completion_window": "24h"},
        )
        failed = await s.finish(batch["id"])
        assert failed["errors"]["data"][0]["code"] == "empty_file"


async def test_openais_limit_of_50000_requests_per_file() -> None:
    tiny = b'{"custom_id":"%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}\n'
    async with sim() as s:
        status, f = await s.upload(b"".join(tiny % i for i in range(50_001)))
        assert status == 200
        status, batch = await s.call(
            "POST",
            "/batches",
            json={"input_file_id": f["id"], "endpoint": URL, "completion_window": "24h"},
        )
        failed = await s.finish(batch["id"])
    assert failed["status"] == "failed"
    first = failed["errors"]["data"][0]
    assert first["code"] == "exceeded_max_requests" and "50001" in first["message"]
    assert "50000" in first["message"]


async def test_byte_limits_of_batch_files_and_uploads() -> None:
    async with sim(max_bytes=2_000, max_file_bytes=10_000) as s:
        batch = await s.submit(many(30))  # ~2.9 kB: over the batch limit, under the upload one
        failed = await s.finish(batch["id"])
        assert failed["errors"]["data"][0]["code"] == "file_too_large"
        status, body = await s.upload(b"x" * 10_001)
        assert status == 413 and body["error"]["code"] == "file_too_large"


async def test_create_and_upload_refusals() -> None:
    async with sim() as s:
        status, f = await s.upload(jsonl(many(2)))
        base = {"input_file_id": f["id"], "endpoint": URL, "completion_window": "24h"}
        cases: list[tuple[dict[str, Any], str]] = [
            ({**base, "input_file_id": "file-missing"}, "input_file_id"),
            ({**base, "completion_window": "48h"}, "completion_window"),
            ({**base, "endpoint": "/v1/embeddings"}, "endpoint"),
            ({k: v for k, v in base.items() if k != "input_file_id"}, "input_file_id"),
            ({**base, "metadata": {"k": 1}}, "metadata"),
        ]
        for body, param in cases:
            status, err = await s.call("POST", "/batches", json=body)
            assert status == 400 and err["error"]["param"] == param, (body, err)
            assert err["error"]["type"] == "invalid_request_error"
        status, other = await s.upload(b"{}", "notes.jsonl", purpose="user_data")
        status, err = await s.call("POST", "/batches", json={**base, "input_file_id": other["id"]})
        assert status == 400 and "purpose" in err["error"]["message"]
        status, err = await s.upload(b"{}", "requests.json")
        assert status == 400 and err["error"]["code"] == "invalid_file_format"
        status, err = await s.upload(b"{}", "a.jsonl", purpose="training")
        assert status == 400 and err["error"]["param"] == "purpose"
        for path in ("/batches/batch_nope", "/files/file-nope", "/files/file-nope/content"):
            status, err = await s.call("GET", path)
            assert status == 404 and err["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------ partial failures
async def test_partial_failures_go_to_the_error_file_and_a_retry_draws_afresh() -> None:
    async with sim(fail_fraction=0.3) as s:
        batch = await s.submit(many(60))
        done = await s.finish(batch["id"])
        assert done["status"] == "completed"
        out = await s.lines(done["output_file_id"])
        err = await s.lines(done["error_file_id"])
        assert done["request_counts"] == {"total": 60, "completed": len(out), "failed": len(err)}
        assert 5 <= len(err) <= 35  # 30% of 60, drawn
        assert {x["custom_id"] for x in out}.isdisjoint(x["custom_id"] for x in err)
        for x in err:
            assert x["error"] is None and x["response"]["status_code"] == 500
            assert x["response"]["body"]["error"]["type"] == "server_error"
        failed_ids = sorted(x["custom_id"] for x in err)
        for _round in range(10):  # bounded: each id fails again with p = 0.3
            if not failed_ids:
                break
            retry = await s.submit([line(cid, "again") for cid in failed_ids])
            retried = await s.finish(retry["id"])
            failed_ids = sorted(x["custom_id"] for x in await s.lines(retried["error_file_id"]))
        assert not failed_ids
        stats = s.server.stats()["batches"]
        counts = stats["submissions_by_custom_id"]
        assert all(counts[x["custom_id"]] >= 2 for x in err)
        assert all(counts[x["custom_id"]] == 1 for x in out)
        assert stats["resubmitted_custom_ids"] == len(err)


async def test_the_same_submission_draws_the_same_fates_on_another_server() -> None:
    fates: list[list[str]] = []
    for _ in range(2):
        async with sim(fail_fraction=0.5, seed=7) as s:
            batch = await s.submit(many(20))
            done = await s.finish(batch["id"])
            fates.append(sorted(x["custom_id"] for x in await s.lines(done["error_file_id"])))
    assert fates[0] == fates[1] and fates[0]


async def test_a_body_the_endpoint_refuses_gets_its_400_in_the_error_file() -> None:
    long = "word " * 400
    async with sim(max_context_tokens=200) as s:
        batch = await s.submit([line("ok", "short"), line("long", long)])
        done = await s.finish(batch["id"])
        [bad] = await s.lines(done["error_file_id"])
        status, online = await s.call("POST", "/chat/completions", json=line("x", long)["body"])
    assert status == 400 and bad["custom_id"] == "long"
    assert bad["response"]["status_code"] == 400
    assert bad["response"]["body"] == online
    assert online["error"]["code"] == "context_length_exceeded"
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


# ------------------------------------------------------------------ expiry and cancel
async def test_unprocessed_requests_expire_with_the_window() -> None:
    async with sim(expire_fraction=0.5, completion_window_s=50, processing_s=10) as s:
        batch = await s.submit(many(40))
        s.clock.advance(20)  # processing is over, but some requests never ran: still in progress
        mid = await s.batch(batch["id"])
        assert mid["status"] == "in_progress"
        done = await s.finish(batch["id"], 40)
        assert done["status"] == "expired" and done["expired_at"] is not None
        assert done["expired_at"] - done["created_at"] == 50
        out = await s.lines(done["output_file_id"])
        err = await s.lines(done["error_file_id"])
    assert 8 <= len(err) <= 32 and len(out) + len(err) == 40
    assert done["request_counts"] == {"total": 40, "completed": len(out), "failed": len(err)}
    for x in err:
        assert x["response"] is None and x["error"]["code"] == "batch_expired"


async def test_a_window_shorter_than_processing_keeps_what_was_done() -> None:
    async with sim(processing_s=100, completion_window_s=50) as s:
        batch = await s.submit(many(40))
        done = await s.finish(batch["id"])
        out = await s.lines(done["output_file_id"])
    assert done["status"] == "expired" and 8 <= len(out) <= 32


async def test_forced_statuses_expire_or_fail_the_whole_batch() -> None:
    async with sim(force_status="expired", completion_window_s=30) as s:
        batch = await s.submit(many(5))
        done = await s.finish(batch["id"])
        assert done["status"] == "expired" and done["output_file_id"] is None
        assert len(await s.lines(done["error_file_id"])) == 5
    async with sim(force_status="failed") as s:
        batch = await s.submit(many(5))
        done = await s.finish(batch["id"])
        assert done["status"] == "failed"
        assert done["errors"]["data"][0]["code"] == "simulated_failure"


async def test_cancel_keeps_what_was_done_and_cancels_the_rest() -> None:
    async with sim(validating_s=0, processing_s=10, cancelling_s=3) as s:
        batch = await s.submit(many(40))
        s.clock.advance(5)
        status, cancelling = await s.call("POST", f"/batches/{batch['id']}/cancel")
        assert status == 200 and cancelling["status"] == "cancelling"
        assert cancelling["cancelling_at"] is not None
        status, again = await s.call("POST", f"/batches/{batch['id']}/cancel")
        assert status == 200 and again["status"] == "cancelling"
        s.clock.advance(3)
        done = await s.batch(batch["id"])
        assert done["status"] == "cancelled" and done["cancelled_at"] is not None
        out = await s.lines(done["output_file_id"])
        err = await s.lines(done["error_file_id"])
        assert out and err and len(out) + len(err) == 40
        assert len(out) == cancelling["request_counts"]["completed"]
        assert all(x["error"]["code"] == "batch_cancelled" for x in err)
        status, refused = await s.call("POST", f"/batches/{batch['id']}/cancel")
        assert status == 200  # cancelling a cancelled batch is a no-op
        other = await s.submit(many(3, "o"))
        finished = await s.finish(other["id"])
        status, refused = await s.call("POST", f"/batches/{finished['id']}/cancel")
        assert status == 400 and "completed" in refused["error"]["message"]
        early = await s.submit(many(3, "e"))
        await s.call("POST", f"/batches/{early['id']}/cancel")  # before processing starts
        gone = await s.finish(early["id"])
        assert gone["status"] == "cancelled" and gone["output_file_id"] is None


# ------------------------------------------------------------------ counters, lists, auth
async def test_stats_count_files_batches_lines_and_submissions() -> None:
    async with sim(processing_s=10, validating_s=0) as s:
        first = await s.submit(many(10))
        s.clock.advance(5)
        stats = s.server.stats()["batches"]
        assert 0 < stats["lines_processed"] < 10
        await s.finish(first["id"])
        await s.submit([line("r1", "again"), line("new", "x")])
        await s.finish(first["id"])
        stats = s.server.stats()["batches"]
    assert stats["files_uploaded"] == 2 and stats["batches_submitted"] == 2
    assert stats["lines_submitted"] == 12 and stats["lines_processed"] == 12
    assert stats["submissions_by_custom_id"]["r1"] == 2
    assert stats["submissions_by_custom_id"]["new"] == 1
    assert stats["batches_by_status"] == {"completed": 2}


async def test_lists_and_file_deletion() -> None:
    async with sim() as s:
        ids = [(await s.submit(many(2, f"b{i}-")))["id"] for i in range(3)]
        status, page = await s.call("GET", "/batches?limit=2")
        assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"]
        status, rest = await s.call("GET", f"/batches?after={page['last_id']}")
        assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]
        status, files = await s.call("GET", "/files?purpose=batch")
        assert len(files["data"]) == 3
        victim = files["data"][0]["id"]
        status, deleted = await s.call("DELETE", f"/files/{victim}")
        assert deleted == {"id": victim, "object": "file", "deleted": True}
        status, _ = await s.call("GET", f"/files/{victim}")
        assert status == 404


async def test_the_routes_need_the_key_when_the_endpoint_has_one() -> None:
    async with sim(api_key="sk-sim") as s:
        status, err = await s.upload(jsonl(many(1)))
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
        for method, path in (("GET", "/files"), ("GET", "/batches"), ("GET", "/batches/x")):
            status, _ = await s.call(method, path)
            assert status == 401


# ------------------------------------------------------------------ the official SDK
async def test_the_openai_sdk_drives_the_whole_api() -> None:
    """The SDK's own request building and response parsing accept the sim (real time)."""
    settings = SimSettings(
        latency_ms=1.0,
        api_key="sk-sim",
        batches=BatchSettings(speed=100.0, validating_s=5, processing_s=20, finalizing_s=5),
    )
    async with SimServer(settings) as server:
        async with openai.AsyncOpenAI(
            base_url=server.url, api_key="sk-sim", max_retries=0
        ) as client:
            f = await client.files.create(file=("in.jsonl", jsonl(many(12))), purpose="batch")
            assert f.purpose == "batch" and f.status == "processed"
            batch = await client.batches.create(
                input_file_id=f.id, endpoint=URL, completion_window="24h", metadata={"run": "t"}
            )
            assert batch.status == "validating"
            for _ in range(200):  # bounded: 0.3 s of real time expected
                batch = await client.batches.retrieve(batch.id)
                if batch.status == "completed":
                    break
                await asyncio.sleep(0.02)
            assert batch.status == "completed" and batch.request_counts is not None
            assert batch.request_counts.completed == 12 and batch.output_file_id is not None
            text = (await client.files.content(batch.output_file_id)).text
            results = [orjson.loads(x) for x in text.splitlines()]
            assert {r["custom_id"] for r in results} == {f"r{i}" for i in range(12)}
            listed = await client.batches.list(limit=10)
            assert [b.id for b in listed.data] == [batch.id]
            other = await client.batches.create(
                input_file_id=f.id, endpoint=URL, completion_window="24h"
            )
            cancelled = await client.batches.cancel(other.id)
            assert cancelled.status == "cancelling"
            deleted = await client.files.delete(f.id)
            assert deleted.deleted
            with pytest.raises(openai.NotFoundError):
                await client.batches.retrieve("batch_missing")


# ------------------------------------------------------------------ the sim command
async def test_the_sim_command_takes_batch_settings() -> None:
    spec = '{"validating_s": 0, "processing_s": 0.2, "finalizing_s": 0, "fail_fraction": 1.0}'
    with sim_process("--latency-ms", "1", "--batches", spec) as url:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", io.BytesIO(jsonl(many(4))), filename="in.jsonl")
            async with session.post(url + "/files", data=form) as resp:
                file_id = (await resp.json())["id"]
            body = {"input_file_id": file_id, "endpoint": URL, "completion_window": "24h"}
            async with session.post(url + "/batches", json=body) as resp:
                batch = await resp.json()
            for _ in range(100):  # bounded: 0.2 s expected
                async with session.get(f"{url}/batches/{batch['id']}") as resp:
                    batch = await resp.json()
                if batch["status"] == "completed":
                    break
                await asyncio.sleep(0.05)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    bad = run_cli("sim", "--port", "0", "--batches", '{"speed": 0}', timeout=60)
    assert bad.returncode == 2 and "batches.speed" in bad.stderr
