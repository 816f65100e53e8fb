"""Wire format: reset durations, x-ratelimit headers, and the response/chunk/error decoders."""

from __future__ import annotations

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from engine.llm.wire import (
    ChatChunk,
    ChatCompletion,
    RateInfo,
    SseAccumulator,
    chunk_decoder,
    completion_decoder,
    encoder,
    error_decoder,
    parse_duration,
    parse_rate_headers,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("  2s ", 2.0),
        ("1m30s", 90.0),
        ("1.5ms", 0.0015),
        ("7", 7.0),
        ("0s", 0.0),
        ("-3", 0.0),  # a bare negative number is clamped to zero
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "   ", "abc", "1x", "s", "1s2", "m1s", "1 s", "1s 2m"])
def test_parse_duration_rejects(text: str | None) -> None:
    assert parse_duration(text) is None


def _headers(**pairs: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in pairs.items()}))


def test_rate_headers_absent() -> None:
    assert parse_rate_headers(_headers()) is None
    assert parse_rate_headers(_headers(Content_Type="application/json")) is None
    # Reset headers alone carry no budget.
    assert parse_rate_headers(_headers(X_RateLimit_Reset_Requests="1s")) is None
    assert parse_rate_headers({}) is None


def test_rate_headers_full_case_insensitive() -> None:
    info = parse_rate_headers(
        _headers(
            X_RateLimit_Limit_Requests="600",
            x_ratelimit_remaining_requests="599",
            X_RATELIMIT_RESET_REQUESTS="100ms",
            x_ratelimit_limit_tokens="150000",
            X_Ratelimit_Remaining_Tokens="149984",
            x_ratelimit_reset_tokens="6m0s",
        )
    )
    assert info == RateInfo(
        limit_requests=600.0,
        remaining_requests=599.0,
        reset_requests=0.1,
        limit_tokens=150000.0,
        remaining_tokens=149984.0,
        reset_tokens=360.0,
    )
    assert not info.is_empty()


def test_rate_headers_partial_and_garbled() -> None:
    info = parse_rate_headers(_headers(x_ratelimit_remaining_tokens="42"))
    assert info == RateInfo(remaining_tokens=42.0)
    info = parse_rate_headers(
        _headers(x_ratelimit_limit_requests="lots", x_ratelimit_reset_requests="soon")
    )
    assert info is not None
    assert info.limit_requests is None and info.reset_requests is None
    assert info.is_empty()
    assert RateInfo().is_empty()


COMPLETION = b"""{
  "id": "chatcmpl-abc123",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "system_fingerprint": "fp_1",
  "service_tier": "default",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hello! How can I help?", "refusal": null,
                  "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0}
  }
}"""


def test_decode_completion_ignores_unknown_fields() -> None:
    resp = completion_decoder.decode(COMPLETION)
    assert isinstance(resp, ChatCompletion)
    assert resp.id == "chatcmpl-abc123" and resp.model == "gpt-4.1-2025-04-14"
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello! How can I help?"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        19,
        10,
        29,
    )


def test_decode_minimal_and_null_content() -> None:
    resp = completion_decoder.decode(b'{"choices":[{"message":{"content":null}}]}')
    assert resp.usage is None and resp.id == ""
    assert resp.choices[0].message.content is None
    assert resp.choices[0].finish_reason is None


def test_decode_rejects_wrong_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        completion_decoder.decode(b'{"choices": "nope"}')
    with pytest.raises(msgspec.DecodeError):
        completion_decoder.decode(b'{"choices": [')


def test_decode_chunks() -> None:
    first = chunk_decoder.decode(
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant",'
        b'"content":"Hel"},"logprobs":null,"finish_reason":null}]}'
    )
    assert isinstance(first, ChatChunk)
    assert first.choices[0].delta.content == "Hel"
    assert first.choices[0].finish_reason is None and first.usage is None
    last = chunk_decoder.decode(
        b'{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}'
    )
    assert last.choices[0].delta.content is None
    assert last.choices[0].finish_reason == "length"
    usage = chunk_decoder.decode(
        b'{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,'
        b'"total_tokens":12}}'
    )
    assert usage.choices == [] and usage.usage is not None and usage.usage.total_tokens == 12


def test_decode_errors() -> None:
    body = error_decoder.decode(
        b'{"error":{"message":"Rate limit reached","type":"requests","param":null,'
        b'"code":"rate_limit_exceeded"}}'
    )
    assert not isinstance(body.error, str) and body.error is not None
    assert body.error.message == "Rate limit reached"
    assert body.error.code == "rate_limit_exceeded"
    assert error_decoder.decode(b'{"error":{"message":"x","code":429}}').error.code == 429  # type: ignore[union-attr]
    assert error_decoder.decode(b'{"error":"plain text"}').error == "plain text"
    assert error_decoder.decode(b'{"detail":"not found"}').error is None


def test_encoder_round_trip() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 5}
    assert msgspec.json.decode(encoder.encode(payload)) == payload


def _event(index: int, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"id": "c", "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}
    return b"data: " + encoder.encode(chunk) + b"\n\n"


_STREAM = (
    b": keep-alive comment\n\n"
    + b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    + _event(0, "Hel")
    + _event(1, "Bon")
    + b"event: message\r\n"  # CRLF line ends and an event: field are tolerated
    + b"data:"
    + encoder.encode({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    + b"\r\n\r\n"
    + _event(1, "jour", "stop")
    + _event(0, None, "length")
    + b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
    + b"data: [DONE]\n\n"
)


def _assemble(pieces: list[bytes]) -> SseAccumulator:
    acc = SseAccumulator()
    for piece in pieces:
        acc.feed(piece)
        if acc.done:
            break
    else:
        acc.finish()
    return acc


def test_sse_accumulator_same_result_for_every_read_boundary() -> None:
    whole = _assemble([_STREAM])
    assert whole.done
    assert {i: "".join(p) for i, p in whole.parts.items()} == {0: "Hello", 1: "Bonjour"}
    assert whole.reasons == {0: "length", 1: "stop"}
    assert whole.usage is not None and whole.usage.total_tokens == 7
    assert whole.indices() == [0, 1]
    for cut in range(1, len(_STREAM)):  # two reads, cut at every byte
        acc = _assemble([_STREAM[:cut], _STREAM[cut:]])
        assert (acc.done, acc.parts, acc.reasons, acc.usage) == (
            whole.done,
            whole.parts,
            whole.reasons,
            whole.usage,
        ), cut
    one_byte = _assemble([_STREAM[i : i + 1] for i in range(len(_STREAM))])
    assert one_byte.parts == whole.parts and one_byte.done


def test_sse_accumulator_reports_text_for_ttft() -> None:
    acc = SseAccumulator()
    assert acc.feed(b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n') is False
    assert acc.feed(_event(0, "")) is False  # empty content is not a first token
    assert acc.feed(_event(0, "x")[:10]) is False  # a cut line waits for its end
    assert acc.feed(_event(0, "x")[10:]) is True


def test_sse_accumulator_done_stops_and_missing_done_is_seen() -> None:
    acc = SseAccumulator()
    acc.feed(_event(0, "a") + b"data: [DONE]\n\n" + _event(0, "after"))
    assert acc.done and acc.parts == {0: ["a"]}
    cut = SseAccumulator()
    cut.feed(_event(0, "a"))
    cut.finish()
    assert not cut.done
    unterminated = SseAccumulator()
    unterminated.feed(_event(0, "a") + b"data: [DONE]")  # last line without a newline
    assert not unterminated.done
    unterminated.finish()
    assert unterminated.done


@pytest.mark.parametrize(
    "body",
    [
        _event(0, "a") + b'data: {"choices": [\n\n',  # cut JSON beside a good event
        b'data: {"choices":[]}, {"choices":[]}\n\n' + _event(0, "a"),  # two values in one
        b'data: {"choices":[]}, {"choices":[]}\n\n',  # ... also when alone in a read
        b'data: {"choices": "nope"}\n\n',
    ],
)
def test_sse_accumulator_rejects_malformed_payloads(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):  # ValidationError is a DecodeError
        SseAccumulator().feed(body)


def test_a_line_without_newline_costs_linear_time() -> None:
    # 20,000 reads of 512 bytes with no newline: appended in place this takes milliseconds;
    # re-copied on every read (the old pending + data) it moves about 100 GB (tens of
    # seconds). The bound is 250 times the linear cost, so only the complexity can fail it.
    import time

    acc = SseAccumulator()
    piece = b"x" * 512
    start = time.perf_counter()
    acc.feed(b"data: ")
    for _ in range(20_000):
        acc.feed(piece)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(msgspec.DecodeError):
        acc.feed(b"\n")  # the line ends: it is one (undecodable) payload, read whole
