"""OpenAI chat-completions wire format: small "view" Structs and shared codecs.

Only the fields the engine uses are declared; msgspec skips the rest of the body
without building Python objects for it. Decoders and the encoder are built once here
and reused (msgspec perf tips: "Reuse Encoders/Decoders", "Avoid Decoding Unused Fields").
"""

from __future__ import annotations

import math
import re
from typing import Protocol

import msgspec

__all__ = (
    "HeaderLookup",
    "ChatChunk",
    "ChatCompletion",
    "Choice",
    "ChunkChoice",
    "Delta",
    "ErrorBody",
    "ErrorDetail",
    "Message",
    "RateInfo",
    "SseAccumulator",
    "Usage",
    "chunk_decoder",
    "completion_decoder",
    "encoder",
    "error_decoder",
    "parse_duration",
    "parse_rate_headers",
)


class HeaderLookup(Protocol):
    """Response headers looked up by name, in any case (aiohttp's ``CIMultiDictProxy``,
    :class:`engine.llm.http11.Headers`)."""

    def get(self, key: str, /) -> str | None:
        """The header's value, or None."""
        ...


class Usage(msgspec.Struct, kw_only=True):
    """Token usage as the endpoint reports it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Message(msgspec.Struct, kw_only=True):
    """The assistant message of a (non-streamed) choice."""

    role: str = "assistant"
    content: str | None = None


class Choice(msgspec.Struct, kw_only=True):
    """One completion choice."""

    index: int = 0
    message: Message = msgspec.field(default_factory=Message)
    finish_reason: str | None = None


class ErrorDetail(msgspec.Struct, kw_only=True):
    """The ``error`` object of an OpenAI-style error body."""

    message: str = ""
    type: str | None = None
    code: str | int | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """An OpenAI-style error body: ``{"error": {...}}``."""

    error: ErrorDetail | str | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A non-streamed ``/v1/chat/completions`` response (or an error sent with HTTP 200)."""

    id: str = ""
    model: str = ""
    choices: list[Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    error: ErrorDetail | str | None = None


class Delta(msgspec.Struct, kw_only=True):
    """The content delta of a streamed choice."""

    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    """One choice of a streamed chunk."""

    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    finish_reason: str | None = None


class ChatChunk(msgspec.Struct, kw_only=True):
    """One ``data:`` event of a streamed response (or an error event, as vLLM sends)."""

    id: str = ""
    model: str = ""
    choices: list[ChunkChoice] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    error: ErrorDetail | str | None = None


class RateInfo(msgspec.Struct, kw_only=True):
    """What the ``x-ratelimit-*`` headers of one response said (None: header absent).

    ``reset_*`` are seconds from the moment the response was received until the
    corresponding budget is fully replenished.
    """

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    def is_empty(self) -> bool:
        """True when the response carried no rate-limit header at all."""
        return (
            self.limit_requests is None
            and self.remaining_requests is None
            and self.limit_tokens is None
            and self.remaining_tokens is None
        )


encoder = msgspec.json.Encoder()
completion_decoder = msgspec.json.Decoder(ChatCompletion)
chunk_decoder = msgspec.json.Decoder(ChatChunk)
chunks_decoder = msgspec.json.Decoder(list[ChatChunk])
error_decoder = msgspec.json.Decoder(ErrorBody)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Parse an OpenAI reset duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``) into seconds.

    Returns None when ``text`` is None or not a duration.
    """
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    total = 0.0
    pos = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        return None
    return total


def _number(text: str | None, *, at_least: float = -math.inf) -> float | None:
    """A finite number of at least ``at_least``, else None (a header to ignore)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if at_least <= value < math.inf else None


def parse_rate_headers(headers: HeaderLookup) -> RateInfo | None:
    """Read the ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers.

    Args:
        headers: any case-insensitive mapping with ``.get`` (aiohttp's CIMultiDictProxy).

    Returns:
        A :class:`RateInfo`, or None when no such header is present (the common case
        for self-hosted servers, kept cheap). A value that is not a finite number, or a
        limit below one request or token per minute, reads as absent: a server's
        ``inf`` or ``1e-9`` must neither crash the gate nor stop it for good.
    """
    get = headers.get
    lr = get("x-ratelimit-limit-requests")
    lt = get("x-ratelimit-limit-tokens")
    rr = get("x-ratelimit-remaining-requests")
    rt = get("x-ratelimit-remaining-tokens")
    if lr is None and lt is None and rr is None and rt is None:
        return None
    return RateInfo(
        limit_requests=_number(lr, at_least=1.0),
        remaining_requests=_number(rr),
        reset_requests=parse_duration(get("x-ratelimit-reset-requests")),
        limit_tokens=_number(lt, at_least=1.0),
        remaining_tokens=_number(rt),
        reset_tokens=parse_duration(get("x-ratelimit-reset-tokens")),
    )


# The payload of every ``data:`` line (up to its newline, stripped by the caller): one
# C-level pass instead of a split and a test per line (SSE sends a blank line per event).
_DATA_LINES = re.compile(rb"^data:(.*)$", re.M).findall


class SseAccumulator:
    """Assemble a streamed chat completion from raw SSE bytes, read in whatever pieces arrive.

    The client hands over each network read (:meth:`feed`), not each line: the ``data:``
    payloads of all complete lines in a read are decoded in one msgspec call, as a JSON
    array, so a body that arrives in one piece costs one decode instead of one per event
    (and one aiohttp read instead of one per line). A line cut by a read boundary waits
    for the next read. Lines other than ``data:`` (comments, ``event:``, ``id:``, blank
    separators) are skipped; ``data: [DONE]`` ends the stream.

    Raises:
        msgspec.DecodeError: a payload is not a chat-completion chunk (the caller maps it
            to :class:`~engine.errors.MalformedResponse`).
    """

    __slots__ = ("_pending", "cursor", "done", "error", "parts", "reasons", "usage")

    def __init__(self) -> None:
        # The pieces after the last newline seen: a line cut by read boundaries, joined
        # once when its newline comes, so a stream that sends no newline for a long time
        # costs linear time, not quadratic (each read copied the whole pending line again).
        self._pending: list[bytes] = []
        self.done = False
        self.parts: dict[int, list[str]] = {}
        self.reasons: dict[int, str | None] = {}
        self.usage: Usage | None = None
        self.error: str | None = None  # an error event's message (the stream failed)
        # Free for a consumer's bookkeeping, e.g. how many parts of choice 0 it has seen.
        self.cursor = 0

    def feed(self, data: bytes) -> bool:
        """Take one read; True if it carried content text (for time to first token)."""
        end = data.rfind(b"\n")
        pending = self._pending
        if end < 0:
            pending.append(data)
            return False
        if pending:
            pending.append(data[:end])
            lines = b"".join(pending)
            pending.clear()
            stop = len(lines)
        else:
            lines, stop = data, end  # no copy: the lines are data[:end]
        if end + 1 < len(data):
            pending.append(data[end + 1 :])
        # Payloads keep their surrounding whitespace (JSON allows it), so no strip per line.
        payloads = _DATA_LINES(lines, 0, stop)
        if lines.find(b"[DONE]", 0, stop) >= 0:
            stripped = [p.strip() for p in payloads]
            if b"[DONE]" in stripped:
                del payloads[stripped.index(b"[DONE]") :]
                self.done = True
        if not payloads:
            return False
        if len(payloads) == 1:
            chunks = [chunk_decoder.decode(payloads[0])]
        else:
            chunks = chunks_decoder.decode(b"[" + b",".join(payloads) + b"]")
            if len(chunks) != len(payloads):  # a payload that was not one JSON value
                raise msgspec.DecodeError("SSE payloads do not decode one chunk each")
        return self._add(chunks)

    def _add(self, chunks: list[ChatChunk]) -> bool:
        parts = self.parts
        reasons = self.reasons
        text_seen = False
        for chunk in chunks:
            if chunk.error is not None and self.error is None:
                err = chunk.error
                self.error = (err if isinstance(err, str) else err.message) or "no error message"
            if chunk.usage is not None:
                self.usage = chunk.usage
            for choice in chunk.choices:
                text = choice.delta.content
                index = choice.index
                if text:
                    text_seen = True
                    if index in parts:
                        parts[index].append(text)
                    else:
                        parts[index] = [text]
                if choice.finish_reason is not None:
                    reasons[index] = choice.finish_reason
                elif index not in reasons:
                    reasons[index] = None
        return text_seen

    def finish(self) -> None:
        """Take a last line the server sent without a final newline."""
        if self._pending and not self.done:
            self.feed(b"\n")

    def indices(self) -> list[int]:
        """The choice indices seen, in order."""
        return sorted(set(self.parts) | set(self.reasons))
