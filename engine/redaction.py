"""Secrets out of every text the engine writes: rows, logs, reports, error messages.

A :class:`Redactor` knows the secrets of a run (the API keys it read from the
environment) and replaces them, whole or their first half, with ``[redacted]``. It is
applied where text leaves the engine's hands: the client's error messages (before they
are cut to length, never after, so a key at the cut cannot leak in part), every row the
sink writes, and the report. Key-like values are also recognised without being known
(:func:`looks_like_secret`), so a key pasted where a variable name belongs is never
printed back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

__all__ = ("REDACTED", "Redactor", "display_url", "looks_like_secret")

REDACTED = "[redacted]"

# Long enough that half of it is still secret material worth hiding.
_HALF_FROM = 16
# Shorter strings are not treated as secrets (an empty or 1-character "key" would
# redact every occurrence of that character).
_MIN_SECRET = 6

_KEY_PREFIX = re.compile(r"^(sk-|sk_|pk-|rk-|xai-|gsk_|hf_|ghp_|github_pat_|AKIA|AIza|Bearer\s)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` looks like a credential rather than a variable name.

    True for the prefixes providers give their keys (``sk-``, ``hf_``, ``AKIA``...),
    and for anything that cannot be an environment variable's name yet is long
    (a key pasted where its variable's name belongs).
    """
    value = value.strip()
    if _KEY_PREFIX.match(value):
        return True
    return not _ENV_NAME.match(value) and len(value) >= 20


def display_url(url: str) -> str:
    """``url`` safe to print: credentials in it and query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unprintable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = "&".join(
            (kv.split("=", 1)[0] + "=***") if "=" in kv else kv for kv in query.split("&")
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class Redactor:
    """Replaces known secrets in text and bytes.

    Args:
        secrets: the values to hide (keys); values shorter than 6 characters are ignored.
    """

    __slots__ = ("_bytes", "_text")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Hide ``secret`` (and, for a long one, its first half) from now on."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET:
            return
        forms = {secret}
        if len(secret) >= _HALF_FROM:
            forms.add(secret[: len(secret) // 2])
        # Longest first: the whole key is replaced before its half could split it.
        self._text = sorted(set(self._text) | forms, key=len, reverse=True)
        self._bytes = [s.encode("utf-8") for s in self._text]

    def __bool__(self) -> bool:
        return bool(self._text)

    def text(self, value: str) -> str:
        """``value`` with every known secret replaced."""
        for secret in self._text:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def bytes(self, value: bytes) -> bytes:
        """``value`` (UTF-8) with every known secret replaced."""
        for secret in self._bytes:
            if secret in value:
                value = value.replace(secret, REDACTED.encode())
        return value
