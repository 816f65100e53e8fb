"""The simulated Anthropic Message Batches API: ``/v1/messages/batches``.

Follows https://docs.anthropic.com/en/api/creating-message-batches and the guide
https://docs.anthropic.com/en/docs/build-with-claude/batch-processing. Routes:
``POST /v1/messages/batches`` (``requests: [{"custom_id", "params"}]``),
``GET /v1/messages/batches`` (``limit``, ``after_id``, ``before_id``),
``GET /v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results``,
``POST /v1/messages/batches/{id}/cancel`` and ``DELETE /v1/messages/batches/{id}``.

The create call checks the envelope as the API does (400 ``invalid_request_error``): a
non-empty ``requests`` list of at most ``batches.anthropic_max_requests`` (100,000), each
with a ``custom_id`` of 1-64 characters from ``[a-zA-Z0-9_-]``, unique in the batch, and a
``params`` object; a body over ``batches.anthropic_max_bytes`` (256 MB) is refused with
413 ``request_too_large``. The ``params`` themselves are checked when the request is
processed, as Anthropic does: a bad one ends ``errored`` with its
``invalid_request_error``. ``processing_status`` goes ``in_progress`` -> ``ended``, or
``canceling`` -> ``ended`` after a cancel; ``request_counts`` moves requests out of
``processing`` into ``succeeded`` / ``errored`` as they are done and, at the end, the rest
into ``canceled`` or ``expired``. ``results_url`` is set once the batch has ended; before
that the results route answers 404. Result lines (in the order requests were done) are
``{"custom_id", "result": {"type": "succeeded", "message"}}`` (``usage.service_tier:
"batch"``), ``{"type": "errored", "error": {"type": "error", "error": {...},
"request_id": null}}``, ``{"type": "canceled"}`` or ``{"type": "expired"}``. Timing, drawn
failures and expiry: :mod:`engine.sim.lifecycle` (Anthropic has no validating or
finalizing phase and no failed status: ``force_status = "failed"`` errors every request).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from .anthropic import MessagesAPI, rfc3339
from .anthropic_wire import AnthropicError, Translated, build_message, translate
from .completion import Prepared, Rejection, prepare, produce
from .lifecycle import Fate, SimTime, Submissions, Timeline, plan_fates

if TYPE_CHECKING:
    from .server import _SimState

__all__ = ("MessageBatchStore",)

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_YIELD_EVERY = 500
_CHUNK = 1 << 16
_SERVER_ERROR = AnthropicError(500, "Internal server error (simulated batch failure).")


class _Request:
    __slots__ = ("cache", "custom_id", "fate", "prepared", "translated")

    fate: Fate

    def __init__(
        self,
        custom_id: str,
        translated: Translated | AnthropicError,
        prepared: Prepared | AnthropicError,
        cache: tuple[int, int],
    ) -> None:
        self.custom_id = custom_id
        self.translated = translated
        self.prepared = prepared
        self.cache = cache


class MessageBatch:
    """One simulated Message Batch."""

    def __init__(
        self, batch_id: str, created: float, requests: list[_Request], timeline: Timeline
    ) -> None:
        self.id = batch_id
        self.created = created
        self.requests = requests
        self.timeline = timeline

    def status(self, rel: float) -> str:
        """``in_progress``, ``canceling`` or ``ended``, ``rel`` seconds after creation."""
        tl = self.timeline
        if tl.ending() == "cancelled":
            assert tl.cancel_at is not None
            if rel < tl.cancel_at:
                return "in_progress"
            return "canceling" if rel < tl.cancel_at + tl.settings.cancelling_s else "ended"
        return "in_progress" if rel < tl.natural_end else "ended"

    def ended_at(self) -> float:
        """Seconds after creation when it ends."""
        tl = self.timeline
        if tl.ending() == "cancelled":
            assert tl.cancel_at is not None
            return tl.cancel_at + tl.settings.cancelling_s
        return tl.natural_end

    def object(self, now: float, base_url: str) -> dict[str, object]:
        """The ``message_batch`` object as of simulated time ``now``."""
        tl = self.timeline
        rel = now - self.created
        status = self.status(rel)
        ok, err = tl.counts(rel)
        rest = tl.total - ok - err
        ended = status == "ended"
        ending = tl.ending()
        cancel = tl.cancel_at if ending == "cancelled" else None
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if ended else rest,
                "succeeded": ok,
                "errored": err,
                "canceled": rest if ended and ending == "cancelled" else 0,
                "expired": rest if ended and ending != "cancelled" else 0,
            },
            "created_at": rfc3339(self.created),
            "expires_at": rfc3339(self.created + tl.window),
            "ended_at": rfc3339(self.created + self.ended_at()) if ended else None,
            "cancel_initiated_at": (
                rfc3339(self.created + cancel) if cancel is not None and rel >= cancel else None
            ),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class MessageBatchStore:
    """Message Batches by id, and the handlers of their routes.

    Args:
        state: the server's shared state (settings, counters).
        api: the Messages API (headers, errors, answers, prompt cache).
        sim_time: the simulated clock.
    """

    def __init__(self, state: _SimState, api: MessagesAPI, sim_time: SimTime) -> None:
        self.state = state
        self.api = api
        self.settings = state.settings.batches
        self.time = sim_time
        self.batches: dict[str, MessageBatch] = {}
        self.submissions = Submissions()
        self.requests_submitted = 0

    def stats(self) -> dict[str, object]:
        """Counters for ``/sim/stats`` (``requests_processed`` as of now)."""
        now = self.time.now()
        processed = 0
        by_status: dict[str, int] = {}
        for batch in self.batches.values():
            rel = now - batch.created
            ok, err = batch.timeline.counts(rel)
            processed += ok + err
            status = batch.status(rel)
            by_status[status] = by_status.get(status, 0) + 1
        return {
            "batches_submitted": len(self.batches),
            "batches_by_status": dict(sorted(by_status.items())),
            "requests_submitted": self.requests_submitted,
            "requests_processed": processed,
            **self.submissions.stats(),
        }

    # ------------------------------------------------------------------ helpers
    def _find(self, request: web.Request) -> MessageBatch | web.Response:
        refused = self.api.check_headers(request)
        if refused is not None:
            return self.api.error(refused)
        ident = request.match_info["batch_id"]
        batch = self.batches.get(ident)
        if batch is None:
            return self.api.error(AnthropicError(404, f"No Message Batch with id {ident!r}."))
        return batch

    def _object(self, batch: MessageBatch, request: web.Request) -> dict[str, object]:
        return batch.object(self.time.now(), f"{request.scheme}://{request.host}")

    async def _read_capped(self, request: web.Request) -> bytes | None:
        limit = self.settings.anthropic_max_bytes
        buf = bytearray()
        while chunk := await request.content.read(_CHUNK):
            buf += chunk
            if len(buf) > limit:
                return None
        return bytes(buf)

    # ------------------------------------------------------------------ handlers
    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches``."""
        api = self.api
        refused = api.check_headers(request)
        if refused is not None:
            return api.error(refused)
        raw = await self._read_capped(request)
        if raw is None:
            return api.error(
                AnthropicError(
                    413,
                    f"Request exceeds the maximum size of {self.settings.anthropic_max_bytes} "
                    "bytes for a Message Batch; split it.",
                )
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return api.error(AnthropicError(400, f"The request body is not valid JSON: {exc}"))
        checked = self._check(body)
        if isinstance(checked, AnthropicError):
            return api.error(checked)
        batch = self.submit(checked)
        return api.json(self._object(batch, request))

    def _check(self, body: object) -> list[tuple[str, object]] | AnthropicError:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return AnthropicError(400, "requests: Field required (a non-empty list).")
        limit = self.settings.anthropic_max_requests
        if len(requests) > limit:
            return AnthropicError(
                400,
                f"requests: a Message Batch holds at most {limit} requests; this one has "
                f"{len(requests)}. Split it.",
            )
        seen: set[str] = set()
        out: list[tuple[str, object]] = []
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                return AnthropicError(
                    400,
                    f"requests.{i}.custom_id: must be 1-64 characters from [a-zA-Z0-9_-] "
                    f"(got {custom_id!r}).",
                )
            if custom_id in seen:
                return AnthropicError(
                    400,
                    f"requests.{i}.custom_id: {custom_id!r} is used by another request; "
                    "custom_id must be unique within a Message Batch.",
                )
            seen.add(custom_id)
            params = item.get("params")
            if not isinstance(params, dict):
                return AnthropicError(400, f"requests.{i}.params: Field required (an object).")
            out.append((custom_id, params))
        return out

    def submit(self, requests: list[tuple[str, object]]) -> MessageBatch:
        """Create a Message Batch from checked (custom_id, params) pairs."""
        settings = self.settings
        sim = self.state.settings
        entries: list[_Request] = []
        for custom_id, params in requests:
            translated = translate(params, batch=True)
            prepared: Prepared | AnthropicError
            if isinstance(translated, AnthropicError):
                prepared = translated
            else:
                ready = prepare(sim, translated.chat)
                prepared = (
                    AnthropicError(400, ready.message) if isinstance(ready, Rejection) else ready
                )
            cache = (
                self.api.cache.use(
                    translated.cache_prefix, translated.cache_chars, translated.cache_ttl_s
                )
                if isinstance(prepared, Prepared) and isinstance(translated, Translated)
                else (0, 0)
            )
            entries.append(_Request(custom_id, translated, prepared, cache))
        attempts = [self.submissions.submit(e.custom_id) for e in entries]
        self.requests_submitted += len(entries)
        span = settings.processing_s + settings.per_request_s * len(entries)
        fates = plan_fates(
            settings,
            sim.seed,
            "anthropic",
            [
                (e.custom_id, attempt, isinstance(e.prepared, Prepared))
                for e, attempt in zip(entries, attempts, strict=True)
            ],
            start=0.0,
            span=span,
            fail_all=settings.force_status == "failed",
        )
        for entry, fate in zip(entries, fates, strict=True):
            entry.fate = fate
        batch = MessageBatch(
            f"msgbatch_sim{uuid.uuid4().hex[:24]}",
            self.time.now(),
            entries,
            Timeline(settings, fates, start=0.0, span=span),
        )
        self.batches[batch.id] = batch
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches/{batch_id}``."""
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        return self.api.json(self._object(found, request))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1/messages/batches/{batch_id}/cancel`` (while ``in_progress``)."""
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        rel = self.time.now() - found.created
        status = found.status(rel)
        if status == "in_progress":
            found.timeline.cancel(rel)
        elif status == "ended":
            return self.api.error(
                AnthropicError(400, "This Message Batch has ended; it cannot be canceled.")
            )
        return self.api.json(self._object(found, request))

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /v1/messages/batches/{batch_id}`` (once ended)."""
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        if found.status(self.time.now() - found.created) != "ended":
            return self.api.error(
                AnthropicError(
                    400, "A Message Batch can be deleted only once it has ended; cancel it first."
                )
            )
        del self.batches[found.id]
        return self.api.json({"id": found.id, "type": "message_batch_deleted"})

    async def list_batches(self, request: web.Request) -> web.Response:
        """``GET /v1/messages/batches``: newest first; ``limit`` (1-1000, default 20)."""
        refused = self.api.check_headers(request)
        if refused is not None:
            return self.api.error(refused)
        batches = list(reversed(self.batches.values()))
        ids = [b.id for b in batches]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after in ids:
            batches = batches[ids.index(after) + 1 :]
        elif before in ids:
            batches = batches[: ids.index(before)]
        raw = request.query.get("limit", "20")
        limit = min(1000, int(raw)) if raw.isdigit() and int(raw) > 0 else 20
        chosen = batches[:limit]
        return self.api.json(
            {
                "data": [self._object(b, request) for b in chosen],
                "has_more": len(batches) > limit,
                "first_id": chosen[0].id if chosen else None,
                "last_id": chosen[-1].id if chosen else None,
            }
        )

    async def results(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/messages/batches/{batch_id}/results``: JSONL, streamed, once ended."""
        found = self._find(request)
        if isinstance(found, web.Response):
            return found
        if found.status(self.time.now() - found.created) != "ended":
            return self.api.error(
                AnthropicError(
                    404, f"Message Batch {found.id!r} has not ended yet; its results do not exist."
                )
            )
        resp = web.StreamResponse(headers=self.api.headers("application/x-jsonl"))
        await resp.prepare(request)
        buf = bytearray()
        for k, line in enumerate(self._result_lines(found)):
            buf += line
            if k % _YIELD_EVERY == _YIELD_EVERY - 1:
                await resp.write(bytes(buf))  # also yields to other requests
                buf.clear()
                await asyncio.sleep(0)
        if buf:
            await resp.write(bytes(buf))
        await resp.write_eof()
        return resp

    def _result_lines(self, batch: MessageBatch) -> Iterator[bytes]:
        tl = batch.timeline
        not_run = "canceled" if tl.ending() == "cancelled" else "expired"
        sim = self.state.settings
        order = sorted(range(len(batch.requests)), key=lambda i: batch.requests[i].fate.at)
        for i in order:
            entry = batch.requests[i]
            result: dict[str, object]
            if not tl.done(entry.fate):
                result = {"type": not_run}
            elif isinstance(entry.prepared, AnthropicError) or not entry.fate.ok:
                failure = (
                    entry.prepared if isinstance(entry.prepared, AnthropicError) else _SERVER_ERROR
                )
                result = {"type": "errored", "error": failure.body(None)}
            else:
                assert isinstance(entry.translated, Translated)
                content = produce(sim, entry.prepared)
                message = build_message(
                    entry.translated,
                    entry.prepared,
                    content,
                    f"msg_sim{entry.prepared.digest[:8].hex()}b{i:x}",
                    cache=entry.cache,
                    tier="batch",
                )
                result = {"type": "succeeded", "message": message}
            yield orjson.dumps({"custom_id": entry.custom_id, "result": result}) + b"\n"

    def register(self, app: web.Application) -> None:
        """Add the Message Batches routes to ``app``."""
        app.router.add_post("/v1/messages/batches", self.create)
        app.router.add_get("/v1/messages/batches", self.list_batches)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.retrieve)
        app.router.add_delete("/v1/messages/batches/{batch_id}", self.delete)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.results)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel)
