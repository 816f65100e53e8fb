"""Anthropic's Messages API on the wire: request checks, translation, messages, SSE events.

Shapes follow the API reference (https://docs.anthropic.com/en/api/messages, streaming:
https://docs.anthropic.com/en/docs/build-with-claude/streaming, errors:
https://docs.anthropic.com/en/api/errors). A Messages request is checked the way the API
checks it (``model``, ``max_tokens`` >= 1, ``messages`` with ``user``/``assistant`` roles
and string or block content, ``system`` as a string or text blocks, ``temperature`` in
[0, 1], ``stop_sequences`` strings) and then translated into the equivalent
chat-completions body, which :mod:`engine.sim.completion` answers: ``system`` becomes the
first ``system`` message, block content is joined text, ``max_tokens``, ``temperature``,
``top_p`` keep their names and a JSON-schema ``output_config.format`` becomes
``response_format``. So an Anthropic request gets the text the online chat endpoint gives
that chat body, then cut at the first of its ``stop_sequences`` the text contains
(``stop_reason: "stop_sequence"``; the stop sequences are applied to the reply, not put in
the chat body, so the same request without them gets the uncut text); ``"length"`` maps
to ``"max_tokens"`` and ``"stop"`` to ``"end_turn"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypedDict

import msgspec
import orjson

from ..jsontypes import JSON, JSONObject
from .completion import Prepared
from .model import Content

__all__ = (
    "ERROR_TYPES",
    "AnthropicError",
    "Message",
    "TextBlock",
    "Translated",
    "Usage",
    "build_message",
    "cut_at_stop",
    "message_object",
    "output_tokens",
    "sse_events",
    "stop_reason",
    "translate",
)

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    529: "overloaded_error",
}
_ROLES = ("user", "assistant")
_MAX_PIECES = 20


class Usage(TypedDict):
    """A message's ``usage`` object."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int
    service_tier: str


class TextBlock(TypedDict):
    """A ``text`` content block."""

    type: str
    text: str


class Message(TypedDict):
    """A ``message`` object, as the Messages API returns it."""

    id: str
    type: str
    role: str
    model: str
    content: list[TextBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


class AnthropicError(msgspec.Struct, frozen=True):
    """An error in Anthropic's shape.

    Attributes:
        status: HTTP status.
        message: what is wrong and what to do.
        type: Anthropic's error type (from the status by default).
    """

    status: int
    message: str
    type: str = ""

    def kind(self) -> str:
        """The error type (``invalid_request_error``...)."""
        return self.type or ERROR_TYPES.get(self.status, "api_error")

    def body(self, request_id: str | None) -> dict[str, object]:
        """``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
        return {
            "type": "error",
            "error": {"type": self.kind(), "message": self.message},
            "request_id": request_id,
        }


class Translated(msgspec.Struct, frozen=True):
    """A checked Messages request and its chat-completions equivalent.

    Attributes:
        chat: the equivalent chat-completions body.
        stream: the request asked for SSE.
        stops: its ``stop_sequences``.
        cache_prefix: canonical bytes of the prompt up to its last ``cache_control``
            breakpoint (empty: no breakpoint).
        cache_chars: characters of text in that prefix.
        cache_ttl_s: the breakpoint's lifetime (5 minutes, or 1 hour with ``ttl: "1h"``).
    """

    chat: JSONObject
    stream: bool
    stops: list[str]
    cache_prefix: bytes = b""
    cache_chars: int = 0
    cache_ttl_s: float = 300.0


def _bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _blocks_text(blocks: list[object]) -> str:
    return "\n".join(
        b["text"]
        for b in blocks
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _text(content: str | list[object]) -> str:
    return content if isinstance(content, str) else _blocks_text(content)


def _ttl(marker: object) -> float:
    return 3600.0 if isinstance(marker, dict) and marker.get("ttl") == "1h" else 300.0


def translate(params: object, *, batch: bool = False) -> Translated | AnthropicError:
    """Check one Messages request body and translate it into a chat-completions body.

    Args:
        params: the decoded body (or a Message Batch request's ``params``).
        batch: it comes from a Message Batch (``stream`` is then refused).
    """
    if not isinstance(params, dict):
        return _bad("The request body must be a JSON object.")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return _bad("model: Field required (a model name string).")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return _bad("max_tokens: Field required.")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return _bad("max_tokens: Input should be an integer greater than or equal to 1.")
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad("messages: Field required (a non-empty list of messages).")
    chat_messages: list[JSON] = []
    system = params.get("system")
    if system is not None:
        if not (isinstance(system, str) or isinstance(system, list)):
            return _bad("system: Input should be a string or a list of text blocks.")
        if isinstance(system, list) and not all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            for b in system
        ):
            return _bad("system: each block must be {'type': 'text', 'text': ...}.")
        chat_messages.append({"role": "system", "content": _text(system)})
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'.")
        content = message.get("content")
        if not isinstance(content, str) and not (
            isinstance(content, list)
            and all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in content)
        ):
            return _bad(
                f"messages.{i}.content: Input should be a string or a list of content blocks."
            )
        chat_messages.append({"role": message["role"], "content": _text(content)})
    chat: JSONObject = {"model": model, "messages": chat_messages, "max_tokens": max_tokens}
    temperature = params.get("temperature")
    if temperature is not None:
        if not _number(temperature) or not 0.0 <= temperature <= 1.0:
            return _bad("temperature: Input should be a number from 0 to 1.")
        chat["temperature"] = temperature
    if _number(params.get("top_p")):
        chat["top_p"] = params["top_p"]
    stops = params.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            return _bad("stop_sequences: Input should be a list of non-empty strings.")
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            return _bad("output_config.format.schema: Input should be a JSON schema object.")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    stream = params.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _bad("stream: Input should be a valid boolean.")
    if batch and stream:
        return _bad("stream: streaming is not supported for requests in a Message Batch.")
    prefix, chars, ttl = _cache_prefix(model, system, messages, params.get("cache_control"))
    return Translated(chat, stream is True, list(stops or []), prefix, chars, ttl)


def _cache_prefix(
    model: str, system: object, messages: Sequence[Mapping[str, object]], top: object
) -> tuple[bytes, int, float]:
    """The prompt up to its last ``cache_control`` breakpoint (a top-level one: all of it)."""
    blocks: list[tuple[object, str]] = []  # (cache_control or None, text)
    if isinstance(system, str):
        blocks.append((None, system))
    elif isinstance(system, list):
        blocks.extend((b.get("cache_control"), b.get("text", "")) for b in system)
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            blocks.append((None, f"{m['role']}:{content}"))
        elif isinstance(content, list):  # checked by translate: blocks
            blocks.extend(
                (b.get("cache_control"), f"{m['role']}:{b.get('text', '')}") for b in content
            )
    end = len(blocks) if isinstance(top, dict) else 0
    ttl = _ttl(top)
    if not end:
        for i in range(len(blocks) - 1, -1, -1):
            if isinstance(blocks[i][0], dict):
                end, ttl = i + 1, _ttl(blocks[i][0])
                break
    if not end:
        return b"", 0, 300.0
    texts = [text for _, text in blocks[:end]]
    return orjson.dumps([model, texts]), sum(len(t) for t in texts), ttl


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, str | None]:
    """``text`` up to the earliest stop sequence it contains, and that sequence."""
    best: tuple[int, str] | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    return (text, None) if best is None else (text[: best[0]], best[1])


def stop_reason(finish: str, stop_sequence: str | None) -> str:
    """Anthropic's ``stop_reason`` for a chat ``finish_reason``."""
    if stop_sequence is not None:
        return "stop_sequence"
    return "max_tokens" if finish == "length" else "end_turn"


def output_tokens(full_text: str, full_tokens: int, text: str) -> int:
    """Tokens of ``text``, a prefix of a reply of ``full_tokens`` tokens."""
    if text == full_text or not full_text:
        return full_tokens
    return math.ceil(full_tokens * len(text) / len(full_text))


def message_object(
    msg_id: str,
    model: str,
    text: str,
    reason: str | None,
    stop_sequence: str | None,
    usage: Usage,
) -> Message:
    """A ``message`` object (``content`` is one text block, or none while streaming)."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if reason is not None else [],
        "stop_reason": reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def _event(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str) -> list[str]:
    """``text`` in at most 20 pieces cut before spaces (one word per piece when short)."""
    starts = [0, *(i for i, ch in enumerate(text) if ch == " " and i)]
    count = min(_MAX_PIECES, len(starts))
    if count <= 1:
        return [text] if text else []
    cuts = [starts[k * len(starts) // count] for k in range(count)] + [len(text)]
    return [text[cuts[k] : cuts[k + 1]] for k in range(count)]


def sse_events(message: Message) -> list[bytes]:
    """The SSE events of a finished ``message``, one write each after the first three.

    ``message_start`` (content empty, ``output_tokens: 1``), ``content_block_start``,
    ``ping``, a ``content_block_delta`` per piece of text, ``content_block_stop``,
    ``message_delta`` (stop reason and the final ``output_tokens``) and ``message_stop``.
    Returns the writes: the head, one per delta, and the tail.
    """
    text = message["content"][0]["text"] if message["content"] else ""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    head = (
        _event("message_start", {"type": "message_start", "message": start})
        + _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _event("ping", {"type": "ping"})
    )
    deltas = [
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
        )
        for p in _pieces(text)
    ]
    tail = (
        _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    return [head, *deltas, tail]


def build_message(
    translated: Translated,
    prepared: Prepared,
    content: Content,
    msg_id: str,
    *,
    cache: tuple[int, int],
    tier: str,
) -> Message:
    """The ``message`` answering a translated request from its chat-completions reply.

    Args:
        translated: the checked request.
        prepared: its chat body, prepared.
        content: the reply :func:`engine.sim.completion.produce` gave.
        msg_id: the message id.
        cache: (cache_creation, cache_read) input tokens.
        tier: ``usage.service_tier`` (``"standard"``, or ``"batch"`` in a Message Batch).
    """
    choice = content.choices[0]
    text, stop = cut_at_stop(choice.content, translated.stops)
    creation, read = cache
    usage: Usage = {
        "input_tokens": max(0, content.prompt_tokens - creation - read),
        "cache_creation_input_tokens": creation,
        "cache_read_input_tokens": read,
        "output_tokens": output_tokens(choice.content, choice.tokens, text),
        "service_tier": tier,
    }
    return message_object(
        msg_id, prepared.model, text, stop_reason(choice.finish_reason, stop), stop, usage
    )
