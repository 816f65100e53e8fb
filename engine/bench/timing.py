"""Clock readings of each request, taken on the engine's own call path.

The benchmark sends through the same :class:`~engine.llm.caller.Caller`, gate and client
as a run. Two seams give it its readings without changing them:

* :class:`Stamps`, the caller's observer: ``on_start`` fires when an attempt has passed
  the gate (the actual send time), ``on_finish`` when it ends. The request it belongs to
  is found through a context variable set by the task that sends it, since many requests
  share one caller.
* :class:`TimedClient`, the client with a stream reader that also notes the arrival time
  of every network read that carried content (and, with a tokenizer, its tokens): the
  inter-chunk and inter-token figures. It reads the stream the way the client does (the
  same :class:`~engine.llm.wire.SseAccumulator`, one decode per read).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from ..llm.client import Client
from ..llm.wire import SseAccumulator
from .metrics import Record

if TYPE_CHECKING:
    from collections.abc import Callable

    from .tokens import TokenCounter

__all__ = ("CURRENT", "Stamps", "TimedClient")

CURRENT: contextvars.ContextVar[Record] = contextvars.ContextVar("synth_engine_bench_request")
"""The request the running task is sending (set around each ``Caller.chat``)."""


class Stamps:
    """The caller's observer: writes send times and outcomes into the current record."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.attempts = 0
        self.retries = 0

    def on_start(self) -> None:
        """An attempt passed the gate."""
        self.attempts += 1
        rec = CURRENT.get(None)
        if rec is not None:
            rec.attempts += 1
            if rec.sent is None:
                rec.sent = self.clock()

    def on_finish(
        self,
        latency_s: float,
        ok: bool,
        error_kind: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
    ) -> None:
        """An attempt ended."""
        rec = CURRENT.get(None)
        if rec is None:
            return
        if ok:
            rec.end = self.clock()
            if completion_tokens == 0 and prompt_tokens:
                rec.tokens_source = "none"  # the server sent no usage
        elif error_kind == "rate_limited":
            rec.http_429 += 1

    def on_retry(self) -> None:
        """The caller will try again."""
        self.retries += 1

    def on_cache_hit(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Not used: the benchmark has no cache."""


class TimedClient(Client):
    """A :class:`~engine.llm.client.Client` that notes when each content read arrives.

    It sets the client's ``on_stream_content`` hook: every streamed read that carried
    content text adds its arrival time (and, with a tokenizer, its token count) to the
    request being timed (the record in :data:`CURRENT`), while the client reads, bounds
    and decodes the stream exactly as in a run.

    Args:
        *args: as :class:`~engine.llm.client.Client`.
        tokens: count the tokens of each content read with this tokenizer (None: don't).
        **kwargs: as :class:`~engine.llm.client.Client`.
    """

    def __init__(self, *args: Any, tokens: TokenCounter | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tokens = tokens
        self.on_stream_content = self._note

    def _note(self, acc: SseAccumulator, now: float) -> None:
        rec = CURRENT.get(None)
        if rec is None:
            return
        if acc.cursor == 0 and not acc.parts.get(0, [])[:-1] and rec.chunks:
            # A new attempt after a failed one: its arrivals replace the failed one's.
            rec.chunks = []
            rec.chunk_tokens = None
        if not rec.chunks:
            rec.first_token = now
            if self._tokens is not None:
                rec.chunk_tokens = []
        rec.chunks.append(now)
        rec.last_token = now
        parts = acc.parts.get(0, [])
        if self._tokens is not None and rec.chunk_tokens is not None:
            rec.chunk_tokens.append(self._tokens.count("".join(parts[acc.cursor :])))
        acc.cursor = len(parts)
