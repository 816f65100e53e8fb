"""Filtering rows of any method's schema: by stage, reason, score range and text.

Row schemas differ by method, so the filters look at the fields the methods share:
``stage`` (failed rows, and SELF-GUIDE's rejected ones), ``reason`` (or ``error`` for
failed rows), ``score`` and the numbers inside ``scores``, and the text of the whole
row. Reasons carry figures (``gap -2.50 within theta 3 after 4 iterations``), so they
are grouped by their *class*, the reason with every number replaced by ``#``.

A filtered query reads rows in order from a start position until it has a page of
matches or has spent its budget (rows or seconds); it returns where it stopped, and
the next query goes on from there. So a search over a million rows answers within
its budget, page by page, and never holds the output in memory.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

from ..jsontypes import JSON, JSONObject
from .catalog import Catalog, Located

__all__ = (
    "Facets",
    "Page",
    "RowQuery",
    "facets",
    "reason_class",
    "reason_of",
    "run_query",
    "score_fields",
    "score_of",
    "summarize",
)

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_TITLE_FIELDS = ("instruction", "question", "input", "header", "text", "prompt")
_BODY_FIELDS = ("response", "answer", "output")


def reason_of(row: JSONObject) -> str | None:
    """Why the row is not kept: its ``reason``, or a failed row's ``error``."""
    for key in ("reason", "error"):
        value = row.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def reason_class(reason: str) -> str:
    """The reason with every number replaced by ``#`` (and at most 160 characters)."""
    return _NUMBER.sub("#", reason.strip())[:160]


def score_of(row: JSONObject, name: str) -> float | None:
    """The numeric score ``name`` of a row: ``score`` or ``scores.KEY``; None if absent."""
    if name.startswith("scores."):
        scores = row.get("scores")
        value = scores.get(name[7:]) if isinstance(scores, dict) else None
    else:
        value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def score_fields(row: JSONObject) -> list[str]:
    """The numeric score names a row has (``score``, ``scores.gap``...)."""
    names = []
    if score_of(row, "score") is not None:
        names.append("score")
    scores = row.get("scores")
    if isinstance(scores, dict):
        names += [f"scores.{k}" for k in scores if score_of(row, f"scores.{k}") is not None]
    return names


@dataclass(frozen=True, slots=True)
class RowQuery:
    """What to show of one kind of rows.

    Attributes:
        kind: ``kept``, ``rejected`` or ``failed``.
        stage: only rows whose ``stage`` is this.
        reason: only rows whose reason's class (:func:`reason_class`) is this.
        text: only rows whose JSON contains this text (case-insensitive).
        score: the score the range applies to (``score``, ``scores.gap``...).
        score_min: only rows with ``score`` at least this.
        score_max: only rows with ``score`` at most this.
    """

    kind: str
    stage: str | None = None
    reason: str | None = None
    text: str | None = None
    score: str | None = None
    score_min: float | None = None
    score_max: float | None = None

    @property
    def filtered(self) -> bool:
        """Whether any filter is set (else a page is a plain read)."""
        return bool(
            self.stage
            or self.reason
            or self.text
            or (self.score and (self.score_min is not None or self.score_max is not None))
        )

    def prefilter(self) -> Callable[[bytes], bool]:
        """A cheap test on the raw line that every match passes (rows failing it are skipped
        without being decoded)."""
        needle = (self.text or "").lower()
        # A plain-ASCII needle without JSON-escaped characters appears as is in the line.
        if (
            needle
            and needle.isascii()
            and not any(c in needle for c in '"\\')
            and needle.isprintable()
        ):
            raw = needle.encode()
            return lambda line: raw in line.lower()
        return lambda line: True

    def matches(self, row: JSONObject, raw: bytes) -> bool:
        """Whether the decoded ``row`` (whose line is ``raw``) passes every filter."""
        if self.stage and row.get("stage") != self.stage:
            return False
        if self.reason:
            reason = reason_of(row)
            if reason is None or reason_class(reason) != self.reason:
                return False
        if self.score and (self.score_min is not None or self.score_max is not None):
            value = score_of(row, self.score)
            if value is None:
                return False
            if self.score_min is not None and value < self.score_min:
                return False
            if self.score_max is not None and value > self.score_max:
                return False
        if self.text:
            needle = self.text.lower()
            if needle not in raw.decode("utf-8", "replace").lower() and needle not in (
                "\n".join(_strings(row)).lower()
            ):
                return False
        return True


def _strings(value: JSON) -> Iterable[str]:
    """Every string in a decoded row (keys and values), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


class Facets(TypedDict):
    """What the rows of a kind can be filtered by (``GET /api/facets``)."""

    kind: str
    sampled: int
    total: int
    reasons: list[tuple[str, int]]
    stages: list[tuple[str, int]]
    scores: list[str]


@dataclass(slots=True)
class Page:
    """Rows of one query.

    Attributes:
        rows: the matching rows (position, shard file, committed flag, decoded row).
        start: the position the read began at.
        next: the position to continue from (None: nothing after it, as of now).
        scanned: rows read to find these.
        total: rows of the kind now.
        budget_spent: the read stopped on its budget before filling the page.
    """

    rows: list[tuple[Located, dict[str, Any]]] = field(default_factory=list)
    start: int = 0
    next: int | None = None
    scanned: int = 0
    total: int = 0
    budget_spent: bool = False


def _decode(raw: bytes) -> JSONObject:
    try:
        value: JSON = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {
            "_unreadable": f"line is not valid JSON ({exc})",
            "_raw": raw[:2000].decode("utf-8", "replace"),
        }
    return value if isinstance(value, dict) else {"_value": value}


def run_query(
    catalog: Catalog,
    query: RowQuery,
    *,
    start: int = 0,
    limit: int = 50,
    max_rows: int = 200_000,
    max_seconds: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> Page:
    """One page of ``query`` from position ``start``.

    Without filters it reads exactly ``limit`` rows at ``start``; with filters it reads
    on until ``limit`` matches, the end, ``max_rows`` rows or ``max_seconds``.
    """
    start = max(0, start)
    page = Page(start=start)
    with catalog.lock:
        page.total = catalog.rows(query.kind)
        if not query.filtered:
            for found in catalog.read(query.kind, start, limit):
                page.rows.append((found, _decode(found.raw)))
            page.scanned = len(page.rows)
            end = start + len(page.rows)
            page.next = end if end < page.total else None
            return page
        deadline = clock() + max_seconds
        test = query.prefilter()
        position = start
        for found in catalog.scan(query.kind, start):
            position = found.position + 1
            page.scanned += 1
            if test(found.raw):
                row = _decode(found.raw)
                if query.matches(row, found.raw):
                    page.rows.append((found, row))
                    if len(page.rows) >= limit:
                        break
            if page.scanned >= max_rows or (page.scanned % 256 == 0 and clock() > deadline):
                page.budget_spent = True
                break
        page.next = position if position < page.total else None
    return page


def facets(catalog: Catalog, kind: str, *, sample: int = 5000) -> Facets:
    """Reasons, stages and score names among the first ``sample`` rows of ``kind``."""
    reasons: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    scores: dict[str, None] = {}
    seen = 0
    with catalog.lock:
        total = catalog.rows(kind)
        for found in catalog.read(kind, 0, sample):
            row = _decode(found.raw)
            seen += 1
            reason = reason_of(row)
            if reason is not None:
                reasons[reason_class(reason)] += 1
            stage = row.get("stage")
            if isinstance(stage, str):
                stages[stage] += 1
            for name in score_fields(row):
                scores.setdefault(name, None)
    return {
        "kind": kind,
        "sampled": seen,
        "total": total,
        "reasons": reasons.most_common(50),
        "stages": stages.most_common(50),
        "scores": list(scores),
    }


def _text(value: JSON, limit: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = " ".join(value.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first(row: JSONObject, names: Iterable[str], limit: int) -> str | None:
    for name in names:
        text = _text(row.get(name), limit)
        if text:
            return text
    return None


def summarize(found: Located, row: JSONObject, *, simulated: bool) -> dict[str, Any]:
    """A row as one line of the list: id, title, reason, stage, scores, flags."""
    scores: dict[str, float] = {}
    for name in score_fields(row):
        value = score_of(row, name)
        if value is not None:
            scores[name.removeprefix("scores.")] = value
    reason = reason_of(row)
    return {
        "position": found.position,
        "id": str(row.get("id", "")),
        "title": _first(row, _TITLE_FIELDS, 200) or _text(row.get("_unreadable"), 200) or "",
        "body": _first(row, _BODY_FIELDS, 160),
        "reason": _text(reason, 200),
        "stage": row.get("stage") if isinstance(row.get("stage"), str) else None,
        "scores": scores,
        "committed": found.shard.committed,
        "simulated": bool(row.get("simulated")) or simulated,
    }
