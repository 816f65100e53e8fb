"""Fakes at the lowest seam for method and stage tests: a reply and per-stage counters.

Each test module keeps its own fake endpoint (what it answers is specific to the method
under test); what they return and how stages are counted is shared here.
"""

from __future__ import annotations

from dataclasses import dataclass


class Reply:
    """What a ChatCaller returns: one or more choice texts, never from a cache."""

    def __init__(self, text: str | list[str], cached: bool = False) -> None:
        self.texts = [text] if isinstance(text, str) else list(text)
        self.cached = cached

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.texts[0] if self.texts else ""


@dataclass
class Counts:
    """Per-stage counters, the StageObserver protocol of ``engine.stages``."""

    calls: int = 0
    ok: int = 0
    failed: int = 0
    parse_errors: int = 0


class Observers:
    """Stage name -> its Counts, created on first use (``MethodContext.stage``)."""

    def __init__(self) -> None:
        self.by_stage: dict[str, Counts] = {}

    def __call__(self, stage: str) -> Counts:
        return self.by_stage.setdefault(stage, Counts())
