"""CodecLM's prompt templates, now in :mod:`engine.methods.codeclm.prompts` (re-exported
here for code that imports them from their old place)."""

from __future__ import annotations

from .codeclm.prompts import (
    CHECK_METADATA,
    DECODE,
    ENCODE,
    IMPROVE,
    JUDGE,
    RESPOND,
    RUBRICS,
    TEMPLATE_VARS,
)

__all__ = (
    "CHECK_METADATA",
    "DECODE",
    "ENCODE",
    "IMPROVE",
    "JUDGE",
    "RESPOND",
    "RUBRICS",
    "TEMPLATE_VARS",
)
