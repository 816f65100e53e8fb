"""The batch APIs of the providers, behind one protocol.

:class:`BatchAPI` is what the batcher (:mod:`engine.llm.batch`) needs from a provider:
submit a set of chat requests as one batch, read its state, stream its results, find a
batch by the token it was submitted with (recovery after a crash between the submission
and its record), cancel it. :class:`OpenAIBatches` implements it on the OpenAI Files +
Batch APIs (https://platform.openai.com/docs/api-reference/batch): the requests are
uploaded as a JSONL file (``purpose = "batch"``), a batch is created on it with the token
in its ``metadata``, results come as output and error files. Anthropic's Message Batches
are implemented in :mod:`engine.llm.anthropic`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, Protocol

import aiohttp
import msgspec
import orjson

from ..errors import EndpointError, MalformedResponse
from .client import ChatResult, Client
from .http import Body, map_errors, read_all
from .wire import Usage

__all__ = ("BatchAPI", "BatchLine", "BatchRequest", "BatchState", "OpenAIBatches")


class BatchRequest(msgspec.Struct, frozen=True):
    """One request of a batch: its id in the batch and its chat-completions body."""

    custom_id: str
    body: dict[str, object]


class BatchState(msgspec.Struct, frozen=True):
    """Where a batch is: ``running`` or ``ended`` (its results can be read), and counts."""

    status: Literal["running", "ended"]
    detail: str = ""  # the provider's own status, e.g. "in_progress", "expired"
    done: int = 0
    total: int = 0


class BatchLine(msgspec.Struct, frozen=True):
    """One request's outcome in an ended batch.

    Attributes:
        custom_id: the request's id in the batch.
        result: the reply (None when it did not succeed).
        error: what went wrong, as the provider said it (None on success).
        rerun: the request was not run (the batch expired or was cancelled first, or a
            transient failure): submit it again.
    """

    custom_id: str
    result: ChatResult | None = None
    error: str | None = None
    status: int | None = None
    rerun: bool = False


class BatchAPI(Protocol):
    """A provider's batch API (see the module docstring)."""

    max_requests: int
    max_bytes: int
    #: whether :meth:`find_batch` is authoritative: None then means "never submitted".
    finds_batches: bool

    async def submit_batch(self, requests: list[BatchRequest], *, token: str) -> str:
        """Submit ``requests`` as one batch; return the batch's id."""
        ...

    async def batch_state(self, batch_id: str) -> BatchState:
        """The batch's state now."""
        ...

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchLine]:
        """Every request's outcome, once the batch has ended (any order)."""
        ...

    async def find_batch(self, token: str) -> str | None:
        """The id of a batch submitted with ``token``, if the provider can say (else None)."""
        ...

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to cancel the batch (its finished requests stay readable)."""
        ...


class _Choice(msgspec.Struct):
    message: dict[str, object] = msgspec.field(default_factory=dict)
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


class _Response(msgspec.Struct):
    status_code: int = 0
    body: dict[str, object] | None = None


class _ResultLine(msgspec.Struct):
    custom_id: str = ""
    response: _Response | None = None
    error: dict[str, object] | None = None


_line_decoder = msgspec.json.Decoder(_ResultLine)
_ENDED = {"completed", "failed", "expired", "cancelled"}
_RERUN_CODES = {"batch_expired", "batch_cancelled"}


def _chat_result(body: Mapping[str, object]) -> ChatResult:
    completion = msgspec.convert(body, _Completion)
    if not completion.choices:
        raise MalformedResponse("a batch result has no choices")
    return ChatResult(
        texts=[str(c.message.get("content") or "") for c in completion.choices],
        finish_reasons=[c.finish_reason for c in completion.choices],
        usage=completion.usage,
    )


class OpenAIBatches:
    """The OpenAI Files + Batch APIs through an OpenAI-compatible :class:`Client`.

    Args:
        client: the endpoint's client (its session, key, limits and redaction are used).
        completion_window: the batch's window (OpenAI accepts ``"24h"``).
    """

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    finds_batches = True  # by the token in the batch's metadata

    def __init__(self, client: Client, *, completion_window: str = "24h") -> None:
        self.client = client
        self.window = completion_window

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        client = self.client
        session = client._open()
        with map_errors(client.name, client._redactor):
            async with session.request(method, client.base_url + path, **kwargs) as resp:
                if resp.status != 200:
                    raise client._error_for(
                        resp.status, await client._error_body(resp), resp.headers
                    )
                reader = Body(
                    client.name, resp.headers.get("Content-Encoding", ""), client._max_bytes
                )
                raw = await read_all(resp.content, reader, known_length=resp.content_length)
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise MalformedResponse(f"unexpected {path} reply", endpoint=client.name)
        return data

    async def submit_batch(self, requests: list[BatchRequest], *, token: str) -> str:
        lines = b"".join(
            orjson.dumps(
                {
                    "custom_id": r.custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": r.body,
                }
            )
            + b"\n"
            for r in requests
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field(
            "file", lines, filename=f"synth-engine-{token}.jsonl", content_type="application/jsonl"
        )
        body = form()  # the multipart writer: its Content-Type carries the boundary
        uploaded = await self._json(
            "POST", "/files", data=body, headers={"Content-Type": body.content_type}
        )
        batch = await self._json(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": self.window,
                "metadata": {"synth_engine_token": token},
            },
        )
        return str(batch["id"])

    async def batch_state(self, batch_id: str) -> BatchState:
        batch = await self._json("GET", f"/batches/{batch_id}")
        status = str(batch.get("status") or "")
        counts = batch.get("request_counts") or {}
        return BatchState(
            status="ended" if status in _ENDED else "running",
            detail=status,
            done=int(counts.get("completed", 0)) + int(counts.get("failed", 0)),
            total=int(counts.get("total", 0)),
        )

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchLine]:
        batch = await self._json("GET", f"/batches/{batch_id}")
        for field in ("output_file_id", "error_file_id"):
            file_id = batch.get(field)
            if not file_id:
                continue
            async for line in self._lines(f"/files/{file_id}/content"):
                yield self._line(line)

    async def _lines(self, path: str) -> AsyncIterator[bytes]:
        client = self.client
        session = client._open()
        with map_errors(client.name, client._redactor):
            async with session.get(client.base_url + path) as resp:
                if resp.status != 200:
                    raise client._error_for(
                        resp.status, await client._error_body(resp), resp.headers
                    )
                pending = b""
                async for chunk in resp.content.iter_chunked(1 << 16):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending

    def _line(self, raw: bytes) -> BatchLine:
        line = _line_decoder.decode(raw)
        response = line.response
        if response is not None and response.status_code == 200 and response.body is not None:
            try:
                return BatchLine(line.custom_id, result=_chat_result(response.body))
            except (MalformedResponse, msgspec.ValidationError) as exc:
                return BatchLine(
                    line.custom_id, error=f"undecodable batch result: {exc}", rerun=True
                )
        error = line.error or {}
        code = str(error.get("code") or "")
        body = response.body if response is not None and response.body else {}
        detail = body.get("error")
        message = str(
            error.get("message")
            or (detail.get("message") if isinstance(detail, dict) else None)
            or code
            or "failed"
        )
        status = response.status_code if response is not None else None
        transient = code in _RERUN_CODES or (
            status is not None and (status >= 500 or status == 429)
        )
        return BatchLine(
            line.custom_id,
            error=self.client._redactor.text(message)[:300],
            status=status,
            rerun=transient,
        )

    async def find_batch(self, token: str) -> str | None:
        after: str | None = None
        for _ in range(20):  # the newest 2,000 batches
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self._json("GET", "/batches", params=params)
            data = page.get("data") or []
            for batch in data:
                if (batch.get("metadata") or {}).get("synth_engine_token") == token:
                    return str(batch["id"])
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1]["id"])
        return None

    async def cancel_batch(self, batch_id: str) -> None:
        try:
            await self._json("POST", f"/batches/{batch_id}/cancel")
        except EndpointError:
            pass  # already ended, or gone: nothing left to cancel
