"""Secrets out of every text the engine writes: rows, logs, reports, error messages.

A :class:`Redactor` knows the secrets of a run (the API keys it read from the
environment) and replaces them, whole or any leading part of 6 characters or more, with
``[redacted]``. It is
applied where text leaves the engine's hands: the client's error messages (before they
are cut to length, never after, so a key at the cut cannot leak in part), every row the
sink writes, and the report. Key-like values are also recognised without being known
(:func:`looks_like_secret`), so a key pasted where a variable name belongs is never
printed back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import AnyStr
from urllib.parse import urlsplit, urlunsplit

__all__ = ("REDACTED", "Redactor", "display_url", "looks_like_secret")

REDACTED = "[redacted]"

# Shorter strings are not treated as secrets (an empty or 1-character "key" would
# redact every occurrence of that character), and shorter leading parts are not hidden.
_MIN_SECRET = 6

_KEY_PREFIX = re.compile(r"^(sk-|sk_|pk-|rk-|xai-|gsk_|hf_|ghp_|github_pat_|AKIA|AIza|Bearer\s)")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` looks like a credential rather than a variable name.

    True for the prefixes providers give their keys (``sk-``, ``hf_``, ``AKIA``...),
    and for long values (20 characters or more) that cannot be a variable's name or
    read as a run of letters and digits without underscores (a hex key): a key pasted
    where its variable's name belongs.
    """
    value = value.strip()
    if _KEY_PREFIX.match(value):
        return True
    if len(value) < 20:
        return False
    # Long, and either no valid name at all or a run of letters and digits without the
    # underscores that long variable names have (a 32-digit hex key, say).
    return not _ENV_NAME.match(value) or ("_" not in value and any(c.isdigit() for c in value))


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
    """Replaces known secrets in text and bytes, whole or any leading part of them.

    A leading part is hidden too, from 6 characters on: a server (or a parser's error
    message) that cuts an echoed key at some length must not leak the part before the
    cut. Longer matches are never shortened by an earlier replacement.

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
        """Hide ``secret`` (and every leading part of it of 6 characters or more)."""
        secret = secret.strip()
        if len(secret) < _MIN_SECRET or secret in self._text:
            return
        self._text.append(secret)
        self._bytes.append(secret.encode("utf-8"))

    def __bool__(self) -> bool:
        return bool(self._text)

    def text(self, value: str) -> str:
        """``value`` with every known secret (or leading part of one) replaced."""
        for secret in self._text:
            value = _hide(value, secret, REDACTED)
        return value

    def bytes(self, value: bytes) -> bytes:
        """``value`` (UTF-8) with every known secret (or leading part of one) replaced."""
        for secret in self._bytes:
            value = _hide(value, secret, _REDACTED_BYTES)
        return value


_REDACTED_BYTES = REDACTED.encode()


def _hide(value: AnyStr, secret: AnyStr, mark: AnyStr) -> AnyStr:
    """``value`` with each run of ``secret``'s leading characters (6 or more) replaced."""
    head = secret[:_MIN_SECRET]
    at = value.find(head)
    if at < 0:
        return value
    out: list[AnyStr] = []
    done = 0
    while at >= 0:
        end = at + _MIN_SECRET
        limit = min(len(value), at + len(secret))
        while end < limit and value[end] == secret[end - at]:
            end += 1
        out += [value[done:at], mark]
        done = end
        at = value.find(head, end)
    out.append(value[done:])
    return mark[:0].join(out)
