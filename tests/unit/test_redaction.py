"""Redaction of the run's secrets: whole, cut at any length, in text and bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.redaction import REDACTED, Redactor, display_url, looks_like_secret

KEY = "sk-proj-Zq8v1LmN0pQrStUvWxYz0123456789"


def test_whole_key_and_any_leading_part_are_hidden() -> None:
    r = Redactor([KEY])
    assert r.text(f"key {KEY} refused") == f"key {REDACTED} refused"
    for cut in range(6, len(KEY)):
        text = f"Got more than 8190 bytes when reading: b'Bearer {KEY[:cut]}...'"
        hidden = r.text(text)
        assert KEY[:cut] not in hidden and REDACTED in hidden, cut
    assert r.text("sk-pr is short") == "sk-pr is short"  # under 6 characters: kept


def test_bytes_and_text_agree() -> None:
    r = Redactor([KEY])
    raw = f'{{"error": "{KEY} and {KEY[:20]}"}}'
    assert r.bytes(raw.encode()) == r.text(raw).encode()


@given(st.text(max_size=200), st.integers(min_value=6, max_value=len(KEY)), st.text(max_size=50))
def test_no_leading_part_survives_anywhere(prefix: str, cut: int, suffix: str) -> None:
    r = Redactor([KEY])
    hidden = r.text(prefix + KEY[:cut] + suffix)
    assert KEY[:cut] not in hidden


def test_key_like_values_and_urls() -> None:
    assert looks_like_secret("sk-abc123") and looks_like_secret("hf_xxxxxxxxxxxx")
    assert looks_like_secret("a8f5f167f44f4964e6c998dee827110c")  # 32 hex: no variable name
    assert not looks_like_secret("OPENAI_API_KEY") and not looks_like_secret("KEY_1")
    assert display_url("https://user:pa55@api.example.com/v1?api-key=abc&x") == (
        "https://***@api.example.com/v1?api-key=***&x"
    )
    assert display_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
