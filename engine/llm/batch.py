"""Batch mode: the same calls at the batch price, each submitted exactly once.

An endpoint with ``mode = "batch"`` does not send its calls one by one: the
:class:`Batcher` gathers them (up to the provider's limits, or until the oldest has waited
``max_wait_s``), submits them as one batch, polls it with backoff and hands every reply
back to the call that asked for it. Items keep their place in the run meanwhile, so a
multi-stage method moves stage by stage as batches complete.

Exactly once, across crashes, through :class:`BatchLedger` (tables in the run's
``cache.sqlite``): before a batch is submitted, a token and the keys of its requests are
recorded; once the provider answers, the batch id. Every reply is put in the response
cache as the batch's results are read, before any caller sees it. A rerun therefore
replays what was answered, waits for the batches still running (polling them) instead of
submitting their requests again, and finds a batch whose id was never recorded (a kill
right after the submission) by its token where the provider keeps it (OpenAI's batch
metadata); only where it does not (Anthropic) may such a batch be submitted a second
time, and the report says how many submissions were recovered that way. Requests a batch
did not run (expired, cancelled, a transient failure) are submitted again, in a new batch
or online (``retry_with``), up to ``max_resubmits`` times, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

from ..errors import BadRequest, Draining, EndpointError, ServerError, ShardError
from .batch_api import BatchAPI, BatchLine, BatchRequest
from .cache import CachedResponse, ResponseCache
from .client import ChatResult

__all__ = ("BatchLedger", "BatchSettings", "Batcher", "OnlineRetry")

log = logging.getLogger("engine")

_SUBMIT_WAIT_S = 10.0  # a stop waits this long for a submission on its way (cancel_on_stop)


_Params = tuple[str | bytes | int | float | None, ...]
"""The parameters of one SQL statement."""


class BatchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How an endpoint's batches are made (``[endpoints.NAME.batch]``).

    Attributes:
        max_requests: most requests in one batch (also capped by the provider's limit).
        max_bytes: most bytes of requests in one batch (also capped by the provider's).
        max_wait_s: the longest a request waits for its batch to fill before a partial
            batch is sent.
        poll_s: the first wait between two polls of a running batch.
        poll_max_s: the longest wait between polls (the wait doubles up to it).
        retry_with: requests a batch did not run go into a new ``batch`` or ``online``.
        max_resubmits: how many times one request is submitted again before it fails.
        cancel_on_stop: on a stop (Ctrl+C), cancel the batches still running (default:
            leave them running; the next run reads their results).
    """

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    max_wait_s: float = 60.0
    poll_s: float = 10.0
    poll_max_s: float = 300.0
    retry_with: Literal["batch", "online"] = "batch"
    max_resubmits: int = 3
    cancel_on_stop: bool = False


class OnlineRetry(Exception):
    """Raised to a caller whose request a batch did not run, to send it online instead."""


class BatchLedger:
    """What was submitted, durably: tables beside the responses in ``cache.sqlite``.

    ``batch_submissions(token, batch_id, state, created, requests)``: ``pending`` is
    recorded before the provider is asked, ``submitted`` once it gave the batch's id,
    ``done`` once its results are read. ``batch_requests(key, token, custom_id,
    attempts)``: the request keys of each submission not yet answered.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS batch_submissions (token TEXT PRIMARY KEY, "
                "endpoint TEXT, batch_id TEXT, state TEXT, created REAL, requests INTEGER)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS batch_requests (key BLOB PRIMARY KEY, token TEXT, "
                "custom_id TEXT, attempts INTEGER)"
            )
        except sqlite3.DatabaseError as exc:
            raise ShardError(f"batch ledger unreadable ({exc})", path=str(path)) from exc

    def _write(self, *statements: tuple[str, _Params | list[_Params]]) -> None:
        try:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                for sql, args in statements:
                    if isinstance(args, list):
                        self._db.executemany(sql, args)
                    else:
                        self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise ShardError(f"batch ledger write failed ({exc})", path=str(self.path)) from exc

    def record_pending(
        self,
        endpoint: str,
        token: str,
        requests: list[tuple[bytes, str]],
        attempts: dict[bytes, int],
    ) -> None:
        """Before submitting: the token and the keys it carries (one transaction)."""
        self._write(
            (
                "INSERT INTO batch_submissions VALUES (?, ?, NULL, 'pending', ?, ?)",
                (token, endpoint, time.time(), len(requests)),
            ),
            (
                "INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?, ?)",
                [(key, token, cid, attempts.get(key, 0)) for key, cid in requests],
            ),
        )

    def record_submitted(self, token: str, batch_id: str) -> None:
        self._write(
            (
                "UPDATE batch_submissions SET batch_id = ?, state = 'submitted' WHERE token = ?",
                (batch_id, token),
            )
        )

    def forget(self, token: str) -> None:
        """A pending submission the provider never got: its requests are free again."""
        self._write(
            ("DELETE FROM batch_requests WHERE token = ?", (token,)),
            ("UPDATE batch_submissions SET state = 'abandoned' WHERE token = ?", (token,)),
        )

    def finish(self, token: str) -> None:
        self._write(
            ("DELETE FROM batch_requests WHERE token = ?", (token,)),
            ("UPDATE batch_submissions SET state = 'done' WHERE token = ?", (token,)),
        )

    def release(self, keys: list[bytes]) -> None:
        """Requests answered (or to submit again): no longer tied to a submission."""
        self._write(("DELETE FROM batch_requests WHERE key = ?", [(k,) for k in keys]))

    def open_submissions(self, endpoint: str) -> list[tuple[str, str | None, str]]:
        """``(token, batch_id, state)`` of the endpoint's pending and submitted batches."""
        rows = self._db.execute(
            "SELECT token, batch_id, state FROM batch_submissions "
            "WHERE endpoint = ? AND state IN ('pending', 'submitted') ORDER BY created",
            (endpoint,),
        ).fetchall()
        return [(str(t), None if b is None else str(b), str(s)) for t, b, s in rows]

    def requests_of(self, token: str) -> dict[str, tuple[bytes, int]]:
        """custom_id -> (key, attempts) of a submission's unanswered requests."""
        rows = self._db.execute(
            "SELECT custom_id, key, attempts FROM batch_requests WHERE token = ?", (token,)
        ).fetchall()
        return {str(c): (bytes(k), int(a)) for c, k, a in rows}

    def token_of(self, key: bytes) -> str | None:
        row = self._db.execute("SELECT token FROM batch_requests WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def counts(self, endpoint: str) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT state, count(*) FROM batch_submissions WHERE endpoint = ? GROUP BY state",
            (endpoint,),
        ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def close(self) -> None:
        self._db.close()


class _Waiting:
    __slots__ = ("attempts", "body", "future", "key", "queued_at", "size")

    def __init__(
        self,
        key: bytes,
        body: dict[str, object],
        future: asyncio.Future[ChatResult],
        now: float,
        attempts: int = 0,
    ) -> None:
        self.key = key
        self.body = body
        self.future = future
        self.queued_at = now
        self.attempts = attempts
        self.size = len(msgspec.json.encode(body)) + 200


def _custom_id(key: bytes) -> str:
    return key.hex()[:64]


class Batcher:
    """Gathers one endpoint's calls into batches and answers them (see the module docstring).

    Args:
        name: the endpoint's name.
        api: the provider's batch API.
        ledger: the run's batch ledger.
        cache: the run's response cache (replies go in before any caller sees them).
        settings: batch sizes, waits and retries.
        on_alive: called whenever the provider answers a poll (the watchdog's progress).
        clock: monotonic time.
    """

    def __init__(
        self,
        name: str,
        api: BatchAPI,
        ledger: BatchLedger,
        cache: ResponseCache,
        settings: BatchSettings,
        *,
        on_alive: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.api = api
        self.ledger = ledger
        self.cache = cache
        self.settings = settings
        self.max_requests = max(1, min(settings.max_requests, api.max_requests))
        self.max_bytes = max(1, min(settings.max_bytes, api.max_bytes))
        self._on_alive = on_alive or (lambda: None)
        self._clock = clock
        self._queue: list[_Waiting] = []
        self._waiters: dict[bytes, list[asyncio.Future[ChatResult]]] = {}
        self._bodies: dict[bytes, dict[str, object]] = {}  # the body of each waited-for key
        self._recovered = asyncio.Event()  # the earlier runs' batches are known
        self._wake = asyncio.Event()
        self._draining = False
        self._submitting: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._polled: set[str] = set()
        self.stats = {
            "batches_submitted": 0,
            "requests_submitted": 0,
            "requests_resubmitted": 0,
            "requests_online": 0,
            "recovered_by_token": 0,
            "resubmitted_unknown": 0,
            "results": 0,
            "errors": 0,
        }

    # ----------------------------------------------------------------- calling
    async def call(self, key: bytes, body: dict[str, object]) -> ChatResult:
        """The reply to ``body`` (``key`` its cache key), through a batch.

        Raises:
            EndpointError: the batch answered the request with an error.
            OnlineRetry: the request was not run by its batch; send it online.
            Draining: a stop was asked.
        """
        if not self._recovered.is_set():
            await self._recovered.wait()
            # While this call waited, the recovery may have read the reply (a batch an
            # earlier run submitted that has ended since): the caller looked in the cache
            # before that, so look again rather than submit the request a second time.
            hit = self.cache.get(key)
            if hit is not None:
                return ChatResult(
                    texts=hit.texts, finish_reasons=hit.finish_reasons, usage=hit.usage
                )
        if self._draining:
            raise Draining(
                f"endpoint {self.name!r}: stopping; the batch call is left for the next run"
            )
        future: asyncio.Future[ChatResult] = asyncio.get_running_loop().create_future()
        first = key not in self._waiters
        self._waiters.setdefault(key, []).append(future)
        self._bodies.setdefault(key, body)
        if first and self.ledger.token_of(key) is None:
            # Not in a batch yet (one submitted by an earlier run is polled: wait for it).
            self._queue.append(_Waiting(key, body, future, self._clock()))
            self._wake.set()
        try:
            return await future
        finally:
            if not self._waiters.get(key):
                self._bodies.pop(key, None)

    def _resolve(self, key: bytes, result: ChatResult | BaseException) -> None:
        for future in self._waiters.pop(key, []):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    # ---------------------------------------------------------------- running
    async def run(self) -> None:
        """Recover the earlier runs' batches, then submit and poll until cancelled."""
        try:
            await self._recover()
        finally:
            self._recovered.set()
        while True:
            await self._flush_when_due()

    async def _recover(self) -> None:
        for token, batch_id, state in self.ledger.open_submissions(self.name):
            if state == "pending":
                found = await self.api.find_batch(token)
                if found is None:
                    # Never reached the provider, or (a provider that cannot find batches)
                    # it cannot say: free its requests; count the ones that may go twice.
                    if not self.api.finds_batches:
                        self.stats["resubmitted_unknown"] += len(self.ledger.requests_of(token))
                    self.ledger.forget(token)
                    continue
                self.stats["recovered_by_token"] += 1
                self.ledger.record_submitted(token, found)
                batch_id = found
            assert batch_id is not None
            self._poll_later(token, batch_id)

    async def _flush_when_due(self) -> None:
        if not self._queue:
            self._wake.clear()
            await self._wake.wait()
            return
        oldest = self._queue[0].queued_at
        due = oldest + self.settings.max_wait_s
        full = (
            len(self._queue) >= self.max_requests
            or sum(w.size for w in self._queue) >= self.max_bytes
        )
        if not full:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, due - self._clock()))
            if self._clock() < due and len(self._queue) < self.max_requests:
                return
        await self._submit()

    async def _submit(self) -> None:
        batch: list[_Waiting] = []
        size = 0
        while self._queue and len(batch) < self.max_requests:
            waiting = self._queue[0]
            if batch and size + waiting.size > self.max_bytes:
                break
            self._queue.pop(0)
            if waiting.future.done():
                continue  # its caller gave up (cancelled)
            batch.append(waiting)
            size += waiting.size
        if not batch:
            return
        token = uuid.uuid4().hex
        ids = [(w.key, _custom_id(w.key)) for w in batch]
        self.ledger.record_pending(self.name, token, ids, {w.key: w.attempts for w in batch})
        requests = [BatchRequest(cid, w.body) for (_, cid), w in zip(ids, batch, strict=True)]
        # A stop that comes while this submission is on its way waits for its id, so that
        # cancel_on_stop can cancel it too (drain).
        submitting = self._submitting = asyncio.get_running_loop().create_future()
        try:
            try:
                batch_id = await self.api.submit_batch(requests, token=token)
            except EndpointError as exc:
                # Refused before it existed (a bad file, a 4xx): every request fails alike.
                self.ledger.forget(token)
                for w in batch:
                    self._resolve(w.key, exc)
                return
            self.ledger.record_submitted(token, batch_id)
        finally:
            self._submitting = None
            if not submitting.done():
                submitting.set_result(None)
        self.stats["batches_submitted"] += 1
        self.stats["requests_submitted"] += len(batch)
        log.info(
            "endpoint %r: batch %s submitted with %d requests", self.name, batch_id, len(batch)
        )
        self._poll_later(token, batch_id)

    def _poll_later(self, token: str, batch_id: str) -> None:
        if batch_id in self._polled:
            return
        self._polled.add(batch_id)
        task = asyncio.create_task(self._poll(token, batch_id), name=f"batch-{batch_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, token: str, batch_id: str) -> None:
        wait = self.settings.poll_s
        while True:
            try:
                state = await self.api.batch_state(batch_id)
            except EndpointError as exc:
                log.warning(
                    "endpoint %r: polling batch %s failed (%s); trying again",
                    self.name,
                    batch_id,
                    exc,
                )
                await asyncio.sleep(wait)
                wait = min(self.settings.poll_max_s, wait * 2)
                continue
            self._on_alive()
            if state.status == "ended":
                break
            await asyncio.sleep(wait)
            wait = min(self.settings.poll_max_s, wait * 2)
        await self._read(token, batch_id)

    async def _read(self, token: str, batch_id: str) -> None:
        pending = self.ledger.requests_of(token)
        answered: list[bytes] = []
        async for line in self.api.batch_results(batch_id):
            entry = pending.pop(line.custom_id, None)
            if entry is None:
                continue
            key, attempts = entry
            self._settle(key, attempts, line)
            answered.append(key)
        for cid, (key, attempts) in pending.items():  # not in the results: not run
            self._settle(
                key, attempts, BatchLine(cid, error="missing from the batch's results", rerun=True)
            )
        self.ledger.finish(token)
        self._on_alive()

    def _settle(self, key: bytes, attempts: int, line: BatchLine) -> None:
        if line.result is not None:
            result = line.result
            self.cache.put(
                key,
                CachedResponse(
                    texts=result.texts, finish_reasons=result.finish_reasons, usage=result.usage
                ),
            )
            self.stats["results"] += 1
            self._resolve(key, result)
            return
        if line.rerun and attempts < self.settings.max_resubmits:
            self.stats["requests_resubmitted"] += 1
            if self.settings.retry_with == "online":
                self.stats["requests_online"] += 1
                self._resolve(key, OnlineRetry(line.error or "not run"))
                return
            # A caller waits (this run's, or the next run's, which will queue it anew).
            self._requeue(key, attempts + 1)
            return
        self.stats["errors"] += 1
        error: EndpointError = (
            ServerError(line.error or "failed", endpoint=self.name, status=line.status)
            if line.rerun
            else BadRequest(line.error or "failed", endpoint=self.name, status=line.status)
        )
        self._resolve(key, error)

    def _requeue(self, key: bytes, attempts: int) -> None:
        body = self._bodies.get(key)
        futures = self._waiters.get(key)
        if body is None or not futures:
            return
        self._queue.append(_Waiting(key, body, futures[0], self._clock(), attempts))
        self._wake.set()

    # ---------------------------------------------------------------- stopping
    async def drain(self) -> None:
        """A stop was asked: callers waiting give up (their items are redone next time);
        the batches keep running unless ``cancel_on_stop``."""
        self._draining = True
        for key in list(self._waiters):
            self._resolve(
                key,
                Draining(
                    f"endpoint {self.name!r}: stopping; batch results are read by the next run"
                ),
            )
        self._queue.clear()
        if self.settings.cancel_on_stop:
            if self._submitting is not None:  # a batch on its way: wait for its id
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._submitting), _SUBMIT_WAIT_S)
            for _token, batch_id, state in self.ledger.open_submissions(self.name):
                if state == "submitted" and batch_id:
                    await self.api.cancel_batch(batch_id)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
