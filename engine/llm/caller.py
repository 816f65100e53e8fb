"""The caller: cache -> gate -> client -> retry, for one endpoint role.

This is the one way pipeline stages reach a model. It replays a cached response when
there is one, otherwise waits at the endpoint's gate, sends one attempt through the
client, tells the gate how it went, stores the response in the cache the moment it
arrives and retries retryable failures within the policy's bounds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import msgspec

from ..errors import (
    AuthError,
    BadRequest,
    BudgetExceeded,
    EndpointError,
    EndpointUnusable,
    FatalEndpointError,
    RateLimited,
    ServerError,
    Timeout,
)
from .batch import Batcher, OnlineRetry
from .budget import Ledger
from .cache import CachedResponse, ResponseCache, request_key
from .client import ChatResult
from .gate import Gate, Outcome
from .retry import RetryPolicy
from .transport import Transport
from .wire import Usage

__all__ = (
    "CallObserver",
    "Caller",
    "Completion",
    "estimate_prompt_tokens",
    "fail_fast_hint",
    "sane_usage",
)


class CallObserver(Protocol):
    """What the caller reports to metrics (``engine.metrics.EndpointStats`` fits)."""

    def on_start(self) -> None: ...

    def on_finish(
        self,
        latency_s: float,
        ok: bool,
        error_kind: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
    ) -> None: ...

    def on_retry(self) -> None: ...

    def on_cache_hit(self, prompt_tokens: int, completion_tokens: int) -> None: ...


class Completion(msgspec.Struct, kw_only=True):
    """The reply to one chat call.

    Attributes:
        texts: one text per choice (``n``).
        finish_reasons: finish reason per choice.
        usage: tokens used (reported, or estimated on servers that send no usage).
        cached: True when replayed from the cache (nothing was paid).
        attempts: HTTP attempts made (0 when cached).
    """

    texts: list[str]
    finish_reasons: list[str | None]
    usage: Usage
    cached: bool = False
    attempts: int = 0

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.texts[0] if self.texts else ""


def estimate_prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    """A cheap upper-ish estimate of prompt tokens (~4 characters a token, 4 per message)."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
    return math.ceil(chars / 4) + 4 * len(messages) + 3


# Usage figures above this per request are no count a server could mean (the largest
# context windows are a few million tokens); they, and negative ones, are ignored.
_MAX_USAGE_TOKENS = 100_000_000


def sane_usage(usage: Usage | None) -> Usage | None:
    """``usage`` if its figures are plausible, else None (the caller then estimates).

    A server's negative or absurd counts must not reach the ledger: a usage of minus
    ten million tokens would drive recorded spend below zero, and no budget would ever
    trigger.
    """
    if usage is None:
        return None
    top = _MAX_USAGE_TOKENS  # (plain comparisons: this runs once per response)
    if (
        0 <= usage.prompt_tokens <= top
        and 0 <= usage.completion_tokens <= top
        and 0 <= usage.total_tokens <= top
    ):
        return usage
    return None


def fail_fast_hint(error: FatalEndpointError) -> str:
    """What a user most likely has to fix when every call fails with ``error``."""
    if isinstance(error, BadRequest) and error.status == 404:
        return (
            "check the endpoint's base_url (OpenAI-compatible servers serve under /v1, e.g. "
            "http://127.0.0.1:8000/v1) and that the model id exists there"
        )
    if isinstance(error, BadRequest):
        return (
            "the endpoint refuses the requests themselves: check the model id, the endpoint's "
            "params, and structured_output (set it to false for servers without response_format)"
        )
    return "check the endpoint's settings"


class _FailFast:
    """Counts how the endpoint's first calls end; trips when N in a row fail alike.

    Until a first call succeeds, each fatal (non-retryable) failure is counted by its
    class and status; ``after`` failures of one kind, with no other kind between them,
    mean the endpoint itself is misconfigured (a base_url without /v1, a model id that
    does not exist), not the items: the run should stop rather than write a failed row
    for every item and pay for the other endpoints' calls.
    """

    __slots__ = ("after", "count", "kind", "ok")

    def __init__(self, after: int) -> None:
        self.after = after
        self.ok = after <= 0  # 0: off
        self.kind: tuple[type, int | None] | None = None
        self.count = 0

    def success(self) -> None:
        self.ok = True

    def failure(self, error: FatalEndpointError) -> bool:
        """Record a fatal failure; True when the endpoint should be failed."""
        if self.ok:
            return False
        kind = (type(error), error.status)
        if kind != self.kind:
            self.kind, self.count = kind, 0
        self.count += 1
        return self.count >= self.after


def _outcome_for(error: EndpointError) -> Outcome:
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, ServerError | Timeout):
        return "overloaded"
    return "error"


class Caller:
    """Calls one endpoint for the pipeline.

    Args:
        name: endpoint name.
        model: model id sent in requests.
        client: the endpoint's transport (:class:`~engine.llm.transport.Transport`).
        gate: the endpoint's gate.
        cache: the run's response cache (None: no caching, e.g. for benchmarks).
        retry: the retry policy.
        params: default request parameters merged under each call's (the endpoint's
            extra params from the config).
        stream: stream responses (SSE) to measure time to first token.
        structured_output: the endpoint honours ``response_format``: True or
            ``"json_schema"``, ``"json_object"`` (a schema inside a json_object format, as
            llama-cpp-python takes it), or False (plain text).
        observer: metrics sink.
        ledger: the run's spending ledger (counts every attempt by stage and enforces
            budgets; None: not counted).
        fail_fast_after: when the endpoint's first this many calls all fail with the
            same non-retryable error (and none has succeeded), fail the endpoint as a
            whole (:class:`~engine.errors.EndpointUnusable`, the run stops); 0: never.
        batcher: send calls through the provider's batches (batch mode) instead of one by
            one; needs ``cache`` (the batcher stores every reply there first).
        batch_price: the fraction of the endpoint's price a batch request costs.
    """

    def __init__(
        self,
        name: str,
        model: str,
        client: Transport,
        gate: Gate,
        *,
        cache: ResponseCache | None = None,
        retry: RetryPolicy | None = None,
        params: Mapping[str, object] | None = None,
        stream: bool = False,
        structured_output: bool | str = True,
        observer: CallObserver | None = None,
        ledger: Ledger | None = None,
        fail_fast_after: int = 0,
        batcher: Batcher | None = None,
        batch_price: float = 0.5,
    ) -> None:
        self.name = name
        self.model = model
        self.client = client
        self.gate = gate
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self.params = dict(params or {})
        self.stream = stream
        self.structured_output = structured_output
        self.observer = observer
        self.ledger = ledger
        self._fail_fast = _FailFast(fail_fast_after)
        if batcher is not None and cache is None:
            raise ValueError("batch mode needs the response cache")
        self.batcher = batcher
        self.batch_price = batch_price

    async def chat(
        self,
        messages: Sequence[Mapping[str, object]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Completion:
        """Get a reply for ``messages``; replayed from the cache if already paid for.

        Args:
            messages: chat messages (``{"role": ..., "content": ...}``).
            priority: pipeline depth of the calling stage (deeper goes first).
            sample_index: distinguishes repeated samples of the same request.
            stage: the pipeline stage making the call (for per-stage spending and budgets).
            **params: request parameters (temperature, max_tokens, n, response_format...).

        Raises:
            EndpointError: a fatal error, or a retryable one that exhausted its retries.
            BudgetExceeded: a spending limit was reached before an attempt was sent.
            EndpointUnusable: the endpoint failed as a whole (its key was refused, a
                request cannot fit its limits, a wait over ``max_wait_s``); the run stops.
            Draining: a stop was asked and the call would have to wait.
        """
        body_params = {**self.params, **{k: v for k, v in params.items() if v is not None}}
        key: bytes | None = None
        if self.cache is not None:
            key = request_key(self.model, messages, body_params, sample_index)
            hit = self.cache.get(key)
            if hit is not None:
                usage = hit.usage or Usage()
                if self.observer is not None:
                    self.observer.on_cache_hit(usage.prompt_tokens, usage.completion_tokens)
                return Completion(
                    texts=hit.texts, finish_reasons=hit.finish_reasons, usage=usage, cached=True
                )
        body: dict[str, object] = {"model": self.model, "messages": messages, **body_params}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        n = int(body_params.get("n") or 1)
        prompt_est = estimate_prompt_tokens(messages)
        if self.batcher is not None and key is not None:
            batched = await self._batched(key, body, stage, prompt_est)
            if batched is not None:
                return batched
            # The batch did not run it (expired, cancelled): send it online.
        reserve = prompt_est + int(body_params.get("max_tokens") or 256) * n
        attempt = 0
        while True:
            result = await self._attempt(body, reserve, priority, prompt_est, stage)
            if isinstance(result, ChatResult):
                break
            error = result
            if isinstance(error, AuthError):
                # The key is refused: no item can be served by this endpoint until the
                # user fixes it. Stop the run (resumably) instead of failing every item.
                unusable = EndpointUnusable(
                    f"{error.reason}", endpoint=self.name, status=error.status
                )
                self.gate.fail(unusable)
                raise unusable from error
            if isinstance(error, FatalEndpointError) and self._fail_fast.failure(error):
                unusable = EndpointUnusable(
                    f"its first {self._fail_fast.count} calls all failed with: {error.reason} "
                    f"({error.kind}); {fail_fast_hint(error)}",
                    endpoint=self.name,
                    status=error.status,
                )
                self.gate.fail(unusable)
                raise unusable from error
            if not self.retry.should_retry(error, attempt):
                raise error
            attempt += 1
            if self.observer is not None:
                self.observer.on_retry()
            delay = self.retry.delay(error, attempt - 1)
            if delay > 0:
                await asyncio.sleep(delay)
        self._fail_fast.success()
        usage = sane_usage(result.usage) or Usage(
            prompt_tokens=prompt_est,
            completion_tokens=sum(math.ceil(len(t) / 4) for t in result.texts),
        )
        if usage.total_tokens == 0:
            usage = Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.prompt_tokens + usage.completion_tokens,
            )
        if self.cache is not None and key is not None:
            self.cache.put(
                key,
                CachedResponse(
                    texts=result.texts, finish_reasons=result.finish_reasons, usage=usage
                ),
            )
        return Completion(
            texts=result.texts,
            finish_reasons=result.finish_reasons,
            usage=usage,
            attempts=attempt + 1,
        )

    async def _batched(
        self, key: bytes, body: dict[str, object], stage: str | None, prompt_est: int
    ) -> Completion | None:
        """One call through the endpoint's batches (None: send it online instead)."""
        assert self.batcher is not None
        if self.ledger is not None:
            self.ledger.admit(stage, self.name)
        observer = self.observer
        if observer is not None:
            observer.on_start()
        started = asyncio.get_running_loop().time()
        try:
            result = await self.batcher.call(
                key, {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
            )
        except OnlineRetry:
            if observer is not None:
                observer.on_finish(0.0, False, "batch_not_run", 0, 0, None)
            return None
        except EndpointError as error:
            if observer is not None:
                observer.on_finish(0.0, False, error.kind, 0, 0, None)
            raise
        except BaseException:
            if observer is not None:
                observer.on_finish(0.0, False, "cancelled", 0, 0, None)
            raise
        usage = sane_usage(result.usage) or Usage(
            prompt_tokens=prompt_est,
            completion_tokens=sum(math.ceil(len(t) / 4) for t in result.texts),
        )
        if self.ledger is not None:
            self.ledger.charge(
                stage,
                self.name,
                usage.prompt_tokens,
                usage.completion_tokens,
                factor=self.batch_price,
            )
        self._fail_fast.success()
        if observer is not None:
            observer.on_finish(
                asyncio.get_running_loop().time() - started,
                True,
                None,
                usage.prompt_tokens,
                usage.completion_tokens,
                None,
            )
        return Completion(
            texts=result.texts, finish_reasons=result.finish_reasons, usage=usage, attempts=1
        )

    async def _attempt(
        self,
        body: dict[str, object],
        reserve: int,
        priority: int,
        prompt_est: int,
        stage: str | None,
    ) -> ChatResult | EndpointError:
        """One gated attempt: the result, or the (mapped) error it ended with."""
        permit = await self.gate.acquire(reserve, priority)
        ledger = self.ledger
        if ledger is not None:
            try:
                ledger.admit(stage, self.name)
            except BudgetExceeded:
                self.gate.release(permit, outcome="cancelled")
                raise
        observer = self.observer
        if observer is not None:
            observer.on_start()
        try:
            result = await self.client.chat(body)
        except EndpointError as error:
            self.gate.release(
                permit,
                outcome=_outcome_for(error),
                retry_after=error.retry_after if isinstance(error, RateLimited) else None,
            )
            if observer is not None:
                observer.on_finish(0.0, False, error.kind, 0, 0, None)
            return error
        except BaseException:
            self.gate.release(permit, outcome="cancelled")
            if observer is not None:
                observer.on_finish(0.0, False, "cancelled", 0, 0, None)
            raise
        usage = sane_usage(result.usage)
        if ledger is not None:
            ledger.charge(
                stage,
                self.name,
                usage.prompt_tokens if usage else prompt_est,
                usage.completion_tokens
                if usage
                else sum(math.ceil(len(t) / 4) for t in result.texts),
            )
        self.gate.release(
            permit,
            outcome="ok",
            used_tokens=usage.total_tokens if usage is not None and usage.total_tokens else None,
            rate=result.rate,
            latency=result.latency,
            completion_tokens=usage.completion_tokens if usage is not None else None,
        )
        if observer is not None:
            observer.on_finish(
                result.latency,
                True,
                None,
                usage.prompt_tokens if usage else prompt_est,
                usage.completion_tokens if usage else 0,
                result.ttft,
            )
        return result
