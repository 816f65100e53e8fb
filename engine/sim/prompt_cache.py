"""Anthropic-style prompt caching for the simulated Messages API.

A request whose prompt carries a ``cache_control`` breakpoint (on a system or content
block, or at the top level for the whole prompt) writes that prefix to the cache the first
time (``cache_creation_input_tokens``) and reads it while it lives
(``cache_read_input_tokens``; a read renews its lifetime), as
https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching describes. A prefix
shorter than 1,024 tokens (the documented minimum of most models) is not cached. Tokens
are the endpoint's estimate, ``ceil(chars / 4)``. Caching changes usage only, never the
reply's text.
"""

from __future__ import annotations

import hashlib

from engine.clock import Clock

__all__ = ("MIN_CACHE_TOKENS", "PromptCache")

MIN_CACHE_TOKENS = 1024
_MAX_ENTRIES = 100_000


class PromptCache:
    """Cached prompt prefixes with their expiry times.

    Args:
        clock: monotonic seconds (lifetimes are real time, not batch time).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: dict[bytes, float] = {}
        self.writes = 0
        self.reads = 0

    def use(self, prefix: bytes, chars: int, ttl_s: float) -> tuple[int, int]:
        """Look a prefix up (writing it on a miss): (cache_creation, cache_read) tokens."""
        tokens = -(-chars // 4)
        if not prefix or tokens < MIN_CACHE_TOKENS:
            return 0, 0
        key = hashlib.blake2b(prefix, digest_size=16).digest()
        now = self._clock()
        alive = self._expiry.get(key, -1.0) > now
        if len(self._expiry) >= _MAX_ENTRIES and not alive:
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
        self._expiry[key] = now + ttl_s
        if alive:
            self.reads += 1
            return 0, tokens
        self.writes += 1
        return tokens, 0
