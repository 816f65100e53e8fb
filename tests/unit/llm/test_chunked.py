"""ChunkDecoder on any framing aiohttp accepts for responses, cut into any reads."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.llm.chunked import ChunkDecoder, ChunkError


def chunked(body: bytes, cuts: list[int], *, upper: bool = False, ext: bool = False) -> bytes:
    """``body`` in HTTP chunks ending at the offsets ``cuts``, then the last chunk."""
    out, start = [], 0
    for end in [*sorted({c for c in cuts if 0 < c < len(body)}), len(body)]:
        size = f"{end - start:X}" if upper else f"{end - start:x}"
        out.append(size.encode() + (b";x=1" if ext else b"") + b"\r\n" + body[start:end] + b"\r\n")
        start = end
    return b"".join(out) + b"0\r\n\r\n"


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` cut at the offsets ``cuts`` (network reads)."""
    points = [0, *sorted({c for c in cuts if 0 < c < len(raw)}), len(raw)]
    return [raw[a:b] for a, b in zip(points, points[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=600),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.integers(0, 80),
    reads=st.integers(0, 40),
    trailers=st.lists(st.sampled_from([b"X-A: 1", b"X-Checksum: abc", b"E:"]), max_size=3),
)
def test_decoder_reads_any_framing_aiohttp_accepts(
    body: bytes, seed: int, cuts: int, reads: int, trailers: list[bytes]
) -> None:
    """Per chunk: hex case, leading zeros, spaces, an extension, a bare LF (aiohttp's
    leniencies for responses); data holding CRLFs; trailers; then bytes after the body."""
    rng = random.Random(seed)
    points = sorted({rng.randrange(1, len(body)) for _ in range(cuts)} if len(body) > 1 else ())
    wire, start = [], 0
    for end in [*points, len(body)] if body else []:
        size = format(end - start, rng.choice(["x", "X"]))
        size = "0" * rng.choice([0, 0, 2]) + size
        line = size.encode() + rng.choice([b"", b"", b" ", b";ext", b";e=1;f"])
        eol = rng.choice([b"\r\n", b"\r\n", b"\n"])
        wire.append(line + eol + body[start:end] + rng.choice([b"\r\n", b"\r\n", b"\n"]))
        start = end
    wire.append(b"0" + rng.choice([b"", b";last"]) + b"\r\n")
    wire += [t + b"\r\n" for t in trailers]
    raw = b"".join(wire) + b"\r\nNEXT"
    decoder, out = ChunkDecoder(), bytearray()
    for piece in split(raw, [rng.randrange(len(raw)) for _ in range(reads)]):
        if decoder.done:
            break
        out += decoder.feed(piece)
    assert decoder.done and bytes(out) == body
    assert b"NEXT".startswith(decoder.tail)  # what followed the body in its last read


def test_decoder_keeps_only_framing_between_reads() -> None:
    decoder = ChunkDecoder()
    payload = b"x" * 100_000
    raw = chunked(payload, [])
    out = bytearray()
    for i in range(0, len(raw), 7):
        out += decoder.feed(raw[i : i + 7])
        assert len(decoder._pending) < 16  # a size line or a line end, never chunk data
    assert decoder.done and bytes(out) == payload and decoder.tail == b""
    with pytest.raises(ChunkError):
        ChunkDecoder().feed(b"3;" + b"e" * 9000)
    trailers = ChunkDecoder()
    assert trailers.feed(b"1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nrest") == b"a"
    assert trailers.done and trailers.tail == b"rest"


def test_many_chunks_in_one_read_come_out_as_one_piece() -> None:
    body = b"data: x\n\n" * 40
    decoder = ChunkDecoder()
    assert decoder.feed(chunked(body, list(range(3, len(body), 3)))) == body
    assert decoder.done


@pytest.mark.parametrize(
    "bad",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",  # not a size
        b"3\r\nabcX\r\n0\r\n\r\n",  # no line end after the data
        b"12345678901234567\r\n",  # 17 hex digits
        b"3" + b" " * 9000,  # a size line that never ends
        b"1\r\na\r\n0\r\n" + b"X-A: 1\r\n" * 9000,  # trailers without end
    ],
)
def test_malformed_framing_is_an_error(bad: bytes) -> None:
    with pytest.raises(ChunkError):
        ChunkDecoder().feed(bad)
