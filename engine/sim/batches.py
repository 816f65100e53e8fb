"""The simulated OpenAI Batch API: ``/v1/batches`` over files from ``/v1/files``.

Routes (https://platform.openai.com/docs/api-reference/batch and the guide
https://platform.openai.com/docs/guides/batch): ``POST /v1/batches`` (``input_file_id``,
``endpoint``, ``completion_window: "24h"``, optional ``metadata``), ``GET /v1/batches``
(``after``, ``limit``), ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``.

The input file is checked as OpenAI checks it: each line a JSON object with a
``custom_id`` (unique in the file), ``method: "POST"``, a ``url`` equal to the batch's
endpoint and a ``body`` naming one ``model`` for the whole file; at most
``batches.max_requests`` lines (50,000) and ``batches.max_bytes`` (200 MB). A file that
breaks a rule makes the batch ``failed`` after ``validating``, with ``errors.data`` entries
``{code, message, param, line}`` (codes: ``invalid_json_line``,
``missing_required_parameter``, ``invalid_method``, ``invalid_url``,
``duplicate_custom_id``, ``mismatched_model``, ``exceeded_max_requests``,
``file_too_large``, ``empty_file``; the real service's codes for some of these are not
documented, so these name the rule). Statuses follow OpenAI's lifecycle: ``validating`` ->
``in_progress`` -> ``finalizing`` -> ``completed``, or ``failed``, ``expired``,
``cancelling`` -> ``cancelled`` (timing: :mod:`engine.sim.lifecycle`).

Each line's ``body`` is answered by the same code as ``POST /v1/chat/completions``
(:mod:`engine.sim.completion`), so the reply equals the online reply to that body. The
output file holds the lines answered 200; the error file the others, in OpenAI's result
shape ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``:
a body the endpoint refuses gets its 400 body, a request drawn to fail
(``batches.fail_fraction``) a 500 ``server_error`` body, and a request not processed
before the batch expired or was cancelled ``response: null`` with ``error.code``
``batch_expired`` or ``batch_cancelled``. Lines appear in the order they were processed,
not the input order. ``request_counts.failed`` counts the error file's lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from ..jsontypes import JSONObject
from .completion import Prepared, Rejection, completion_object, prepare, produce
from .files import FileStore, page
from .lifecycle import BatchSettings, Fate, SimTime, Submissions, Timeline, plan_fates

if TYPE_CHECKING:
    from .server import _SimState

__all__ = ("BatchStore",)

ENDPOINT = "/v1/chat/completions"
_MAX_LISTED_ERRORS = 100
_YIELD_EVERY = 500
_SERVER_ERROR = Rejection(
    500,
    "The server had an error while processing your request (simulated batch failure).",
    None,
    None,
    "server_error",
)
_NOT_RUN = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": ("batch_cancelled", "This request was not executed: the batch was cancelled."),
}


class _Line:
    __slots__ = ("custom_id", "fate", "prepared")

    fate: Fate

    def __init__(self, custom_id: str, prepared: Prepared | Rejection) -> None:
        self.custom_id = custom_id
        self.prepared = prepared


def _error(
    code: str, message: str, line: int | None, param: str | None = None
) -> dict[str, object]:
    return {"code": code, "message": message, "param": param, "line": line}


def check_input(
    data: bytes, settings: BatchSettings
) -> tuple[list[tuple[str, JSONObject]], list[dict[str, object]]]:
    """Parse a batch input file: (custom_id, body) per request, and the rule violations."""
    if len(data) > settings.max_bytes:
        return [], [
            _error(
                "file_too_large",
                f"The batch input file is {len(data)} bytes; the limit is "
                f"{settings.max_bytes}. Split it into several batches.",
                None,
            )
        ]
    requests: list[tuple[str, JSONObject]] = []
    errors: list[dict[str, object]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(
                _error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            )
            continue
        if not isinstance(line, dict):
            errors.append(_error("invalid_json_line", "Each line must be a JSON object.", number))
            continue
        custom_id = line.get("custom_id")
        body = line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                _error(
                    "missing_required_parameter",
                    "Missing required parameter: 'custom_id' (a non-empty string).",
                    number,
                    "custom_id",
                )
            )
        elif custom_id in seen:
            errors.append(
                _error(
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} is a duplicate of another request's. "
                    "The custom_id parameter must be unique for each request in a batch.",
                    number,
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if line.get("method") != "POST":
            errors.append(
                _error("invalid_method", "Only 'POST' is supported as 'method'.", number, "method")
            )
        if line.get("url") != ENDPOINT:
            errors.append(
                _error(
                    "invalid_url",
                    f"The 'url' {line.get('url')!r} does not match the batch's endpoint "
                    f"{ENDPOINT!r}.",
                    number,
                    "url",
                )
            )
        if not isinstance(body, dict):
            errors.append(
                _error(
                    "missing_required_parameter",
                    "Missing required parameter: 'body' (a JSON object).",
                    number,
                    "body",
                )
            )
            continue
        line_model = body.get("model")
        if not isinstance(line_model, str) or not line_model:
            errors.append(
                _error(
                    "missing_required_parameter",
                    "Missing required parameter: 'body.model'.",
                    number,
                    "body.model",
                )
            )
        elif model is None:
            model = line_model
        elif line_model != model:
            errors.append(
                _error(
                    "mismatched_model",
                    f"The model {line_model!r} differs from {model!r} on earlier lines; a "
                    "batch file may use only one model.",
                    number,
                    "body.model",
                )
            )
        requests.append((custom_id if isinstance(custom_id, str) else "", body))
    if not requests and not errors:
        errors.append(_error("empty_file", "The batch input file has no requests.", None))
    if len(requests) > settings.max_requests:
        errors.insert(
            0,
            _error(
                "exceeded_max_requests",
                f"The batch input file has {len(requests)} requests; the limit is "
                f"{settings.max_requests} per batch. Split it into several batches.",
                None,
            ),
        )
    return requests, errors


class Batch:
    """One simulated batch: its requests, schedule and (once ended) result files."""

    def __init__(
        self,
        batch_id: str,
        input_file_id: str,
        created: float,
        metadata: dict[str, str] | None,
        lines: list[_Line],
        timeline: Timeline,
        model: str | None,
        errors: list[dict[str, object]],
    ) -> None:
        self.id = batch_id
        self.input_file_id = input_file_id
        self.created = created
        self.metadata = metadata
        self.lines = lines
        self.timeline = timeline
        self.model = model
        self.errors = errors
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.usage: dict[str, object] | None = None
        self.materialized = False
        self.lock = asyncio.Lock()

    def status(self, rel: float) -> str:
        """The status ``rel`` simulated seconds after creation."""
        tl = self.timeline
        if tl.failed:
            return "validating" if rel < tl.start else "failed"
        ending = tl.ending()
        if ending == "cancelled":
            assert tl.cancel_at is not None
            if rel < tl.cancel_at:
                return "validating" if rel < tl.start else "in_progress"
            return "cancelling" if rel < tl.cancel_at + tl.settings.cancelling_s else "cancelled"
        if rel < tl.start:
            return "validating"
        if rel < tl.natural_end:
            return "in_progress"
        if ending == "expired":
            return "expired"
        return "finalizing" if rel < tl.natural_end + tl.settings.finalizing_s else "completed"

    def object(self, now: float) -> dict[str, object]:
        """The batch object OpenAI returns, as of simulated time ``now``."""
        tl = self.timeline
        rel = now - self.created
        status = self.status(rel)
        created = int(self.created)

        def at(offset: float | None, reached: bool) -> int | None:
            return int(self.created + offset) if offset is not None and reached else None

        ok, err = tl.counts(rel)
        if status in ("expired", "cancelled"):
            err = tl.total - ok
        cancel = tl.cancel_at if tl.ending() == "cancelled" else None
        started = not tl.failed and rel >= tl.start and (cancel is None or cancel >= tl.start)
        natural = tl.natural_end
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": ENDPOINT,
            "model": self.model,
            "errors": (
                {"object": "list", "data": self.errors[:_MAX_LISTED_ERRORS]}
                if status == "failed"
                else None
            ),
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": created,
            "in_progress_at": at(tl.start, started),
            "expires_at": int(self.created + tl.window),
            "finalizing_at": at(natural, status in ("finalizing", "completed")),
            "completed_at": at(natural + tl.settings.finalizing_s, status == "completed"),
            "failed_at": at(tl.start, status == "failed"),
            "expired_at": at(natural, status == "expired"),
            "cancelling_at": at(cancel, cancel is not None and rel >= cancel),
            "cancelled_at": at(
                None if cancel is None else cancel + tl.settings.cancelling_s,
                status == "cancelled",
            ),
            "request_counts": {
                "total": 0 if tl.failed else tl.total,
                "completed": ok,
                "failed": err,
            },
            "usage": self.usage,
            "metadata": self.metadata,
        }


def _ident(prefix: str, *parts: str) -> str:
    return prefix + hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


class BatchStore:
    """Batches by id, and the handlers of the Batch API routes.

    Args:
        state: the server's shared state (settings, auth, errors, headers).
        files: the Files API store (input files; output and error files go there).
        sim_time: the simulated clock.
    """

    def __init__(self, state: _SimState, files: FileStore, sim_time: SimTime) -> None:
        self.state = state
        self.settings = state.settings.batches
        self.files = files
        self.time = sim_time
        self.batches: dict[str, Batch] = {}
        self.submissions = Submissions()
        self.lines_submitted = 0

    # ------------------------------------------------------------------ results
    async def settle(self, batch: Batch) -> None:
        """Write the output and error files once the batch has ended (once)."""
        if batch.materialized:
            return
        if batch.status(self.time.now() - batch.created) not in (
            "completed",
            "expired",
            "cancelled",
        ):
            return
        async with batch.lock:
            if not batch.materialized:
                await self._materialize(batch)

    async def _materialize(self, batch: Batch) -> None:
        tl = batch.timeline
        ending = tl.ending()
        settings = self.state.settings
        out = bytearray()
        err = bytearray()
        prompt = completion = 0
        order = sorted(range(len(batch.lines)), key=lambda i: batch.lines[i].fate.at)
        for k, i in enumerate(order):
            if k and k % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a big batch must not stall the endpoint
            line = batch.lines[i]
            rid = _ident("batch_req_sim", batch.id, str(i))
            result: dict[str, object]
            if not tl.done(line.fate):
                code, message = _NOT_RUN["cancelled" if ending == "cancelled" else "expired"]
                result = {
                    "id": rid,
                    "custom_id": line.custom_id,
                    "response": None,
                    "error": {"code": code, "message": message},
                }
                err += orjson.dumps(result) + b"\n"
                continue
            request_id = _ident("req_sim", batch.id, str(i), "request")
            prepared = line.prepared
            if isinstance(prepared, Prepared) and line.fate.ok:
                content = produce(settings, prepared)
                body = completion_object(
                    f"chatcmpl-sim-{prepared.digest[:8].hex()}b{i:x}",
                    prepared.model,
                    content,
                    created=int(batch.created + line.fate.at),
                    usage=settings.usage,
                )
                prompt += content.prompt_tokens
                completion += content.completion_tokens
                response = {"status_code": 200, "request_id": request_id, "body": body}
                target = out
            else:
                refusal = prepared if isinstance(prepared, Rejection) else _SERVER_ERROR
                response = {
                    "status_code": refusal.status,
                    "request_id": request_id,
                    "body": refusal.body(),
                }
                target = err
            result = {"id": rid, "custom_id": line.custom_id, "response": response, "error": None}
            target += orjson.dumps(result) + b"\n"
        if out:
            batch.output_file_id = self.files.add(
                bytes(out), f"batch_{batch.id}_output.jsonl", "batch_output"
            ).id
        if err:
            batch.error_file_id = self.files.add(
                bytes(err), f"batch_{batch.id}_error.jsonl", "batch_output"
            ).id
        batch.usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        batch.materialized = True

    def stats(self) -> dict[str, object]:
        """Counters for ``/sim/stats`` (``lines_processed`` as of now)."""
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
            **self.files.stats(),
            "batches_submitted": len(self.batches),
            "batches_by_status": dict(sorted(by_status.items())),
            "lines_submitted": self.lines_submitted,
            "lines_processed": processed,
            **self.submissions.stats(),
        }

    # ------------------------------------------------------------------ handlers
    async def create(self, request: web.Request) -> web.Response:
        """``POST /v1/batches``."""
        state = self.state
        if not self.files.authorized(request):
            return state._unauthorized()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return state.bad_request(f"We could not parse the JSON body of your request: {exc}")
        if not isinstance(body, dict):
            return state.bad_request("The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return state.bad_request(
                    f"Missing required parameter: {name!r}.", "missing_required_parameter", name
                )
        if body["endpoint"] != ENDPOINT:
            return state.bad_request(
                f"Invalid 'endpoint': {body['endpoint']!r}. The simulated endpoint runs batches "
                f"of {ENDPOINT} only.",
                "invalid_value",
                "endpoint",
            )
        if body["completion_window"] != "24h":
            return state.bad_request(
                "Invalid 'completion_window': only '24h' is supported.",
                "invalid_value",
                "completion_window",
            )
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(
                isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            return state.bad_request(
                "Invalid 'metadata': at most 16 string pairs (keys up to 64 characters, "
                "values up to 512).",
                "invalid_value",
                "metadata",
            )
        stored = self.files.get(body["input_file_id"])
        if stored is None or stored.purpose != "batch":
            why = "No such File object" if stored is None else "The file's purpose is not 'batch'"
            return state.bad_request(
                f"Invalid 'input_file_id': {body['input_file_id']!r}. {why}; upload the "
                "requests with POST /v1/files and purpose 'batch'.",
                "invalid_value",
                "input_file_id",
            )
        return self.json(self.submit(stored.id, stored.data, metadata).object(self.time.now()))

    def submit(self, input_file_id: str, data: bytes, metadata: dict[str, str] | None) -> Batch:
        """Create a batch from an input file's bytes (checked now, revealed after validating)."""
        settings = self.settings
        sim = self.state.settings
        requests, errors = check_input(data, settings)
        if settings.force_status == "failed" and not errors:
            errors = [
                _error(
                    "simulated_failure",
                    "The simulated endpoint fails every batch (sim batches.force_status = "
                    '"failed").',
                    None,
                )
            ]
        lines = [_Line(custom_id, prepare(sim, body)) for custom_id, body in requests]
        attempts = [self.submissions.submit(line.custom_id) for line in lines]
        self.lines_submitted += len(lines)
        start = settings.validating_s
        span = settings.processing_s + settings.per_request_s * len(lines)
        fates = plan_fates(
            settings,
            sim.seed,
            "openai",
            [
                (line.custom_id, attempt, isinstance(line.prepared, Prepared))
                for line, attempt in zip(lines, attempts, strict=True)
            ],
            start=start,
            span=span,
        )
        for line, fate in zip(lines, fates, strict=True):
            line.fate = fate
        model = next(
            (line.prepared.model for line in lines if isinstance(line.prepared, Prepared)), None
        )
        timeline = Timeline(settings, fates, start=start, span=span, failed=bool(errors))
        batch = Batch(
            f"batch_sim{uuid.uuid4().hex[:24]}",
            input_file_id,
            self.time.now(),
            metadata,
            lines,
            timeline,
            model,
            errors,
        )
        self.batches[batch.id] = batch
        return batch

    def json(self, body: dict[str, object]) -> web.Response:
        """A 200 JSON response with the endpoint's headers."""
        return self.files.json(body)

    async def retrieve(self, request: web.Request) -> web.Response:
        """``GET /v1/batches/{batch_id}``."""
        if not self.files.authorized(request):
            return self.state._unauthorized()
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.files.not_found("Batch", request.match_info["batch_id"])
        await self.settle(batch)
        return self.json(batch.object(self.time.now()))

    async def cancel(self, request: web.Request) -> web.Response:
        """``POST /v1/batches/{batch_id}/cancel``: from validating or in_progress only."""
        if not self.files.authorized(request):
            return self.state._unauthorized()
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return self.files.not_found("Batch", request.match_info["batch_id"])
        rel = self.time.now() - batch.created
        status = batch.status(rel)
        if status in ("validating", "in_progress"):
            batch.timeline.cancel(rel)
        elif status not in ("cancelling", "cancelled"):
            return self.state.bad_request(
                f"Cannot cancel a batch with status {status!r}: only validating or "
                "in_progress batches can be cancelled.",
                None,
                None,
            )
        await self.settle(batch)
        return self.json(batch.object(self.time.now()))

    async def list_batches(self, request: web.Request) -> web.Response:
        """``GET /v1/batches``: newest first, cursor ``after``, ``limit`` (default 20)."""
        if not self.files.authorized(request):
            return self.state._unauthorized()
        batches = list(reversed(self.batches.values()))
        for batch in batches:
            await self.settle(batch)
        now = self.time.now()
        snapshot = [_Listed(b.id, b.object(now)) for b in batches]
        return self.json(page(snapshot, request.query, default_limit=20))

    def register(self, app: web.Application) -> None:
        """Add the Batch API routes to ``app``."""
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)


class _Listed:
    __slots__ = ("_object", "id")

    def __init__(self, ident: str, obj: dict[str, object]) -> None:
        self.id = ident
        self._object = obj

    def object(self) -> dict[str, object]:
        return self._object
