"""The rows the method writes: one schema (:data:`COLUMNS`) for every kind, a Struct per kind.

Each Struct lists every column in the schema's order; a column a kind does not fill is
typed ``None`` on it, so a row of any kind loads as the same table (``datasets`` takes a
column's type from the first shard it reads). :data:`COLUMNS` is the same schema as the
engine's :class:`~engine.methods.base.RowSchema` uses for failed rows it writes itself
(``tests/unit/methods/test_backtranslation_rows.py`` checks that they agree).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ...errors import EndpointError, EngineError
from ...records import Item, row_id
from ..base import ERROR_COLUMNS, ORIGIN_COLUMNS, Column

__all__ = (
    "COLUMNS",
    "NAME",
    "FailedRow",
    "KeptRow",
    "RejectedRow",
    "Round",
    "Scored",
    "Segment",
    "error_kind",
    "failed_row",
    "segment_of",
)

NAME = "backtranslation"
"""The method's name: its rows' ids, its ``[method.backtranslation]`` table."""

COLUMNS: tuple[Column, ...] = (
    Column("id", str, doc="row id (from the item key)"),
    Column("seed_id", str, doc="item key: `doc_id@offset` (`.N` for a part)"),
    Column("source", str, doc="`file:line` (or `file#offset`) of the segment"),
    Column("doc_id", str, doc="document: path under the corpus, or the JSONL record id"),
    Column("offset", int, "kr", doc="segment position in its document"),
    Column("part", int, "kr", doc="part number of a split section (0: not split)"),
    Column("header", str, "kr", doc="the heading the segment follows"),
    Column("instruction", str, doc='the backtranslated instruction (failed: `""` if none)'),
    Column("response", str, "kr", doc="the segment (the answer)"),
    Column("score", float, "kr", doc="the deciding round's mean score"),
    Column("scores", list, "kr", doc="the deciding round's per-sample scores"),
    Column("reasoning", str, "kr", doc="the deciding round's first reasoning"),
    Column("rounds", list, "kr", doc="every curation round: role, model, score, scores, reasoning"),
    Column("threshold", float, "kr", doc="the keep threshold"),
    Column("tag", str, "k", doc="`S_w`"),
    Column("system", str, "k", doc="the S_w system prompt"),
    Column("reason", str, "r", doc="why it was rejected"),
    Column("stage", str, "f", doc="`input`, `backtranslate`, `curate` or `rescore`"),
    *ERROR_COLUMNS,
    *ORIGIN_COLUMNS,
)
"""The row schema: every kept, rejected and failed row has these columns, in this order."""


class Segment(msgspec.Struct, frozen=True):
    """A work item's segment, as :func:`engine.io.corpus.read_corpus` yields it."""

    text: str
    header: str
    doc_id: str
    offset: int
    part: int


def segment_of(item: Item) -> Segment:
    """The segment an item carries (``part`` 0 when the section was not split)."""
    data = item.data
    return Segment(
        text=str(data["text"]),
        header=str(data.get("header", "")),
        doc_id=str(data["doc_id"]),
        offset=int(data["offset"]),
        part=int(data.get("part", 0)),
    )


class Round(msgspec.Struct, frozen=True):
    """One curation round: who scored, the mean, every sample and the first reasoning."""

    role: str
    model: str
    score: float
    scores: list[float]
    reasoning: str


class KeptRow(msgspec.Struct, frozen=True, kw_only=True):
    """A pair whose deciding score reached the threshold, tagged S_w."""

    id: str
    seed_id: str
    source: str
    doc_id: str
    offset: int
    part: int
    header: str
    instruction: str
    response: str
    score: float
    scores: list[float]
    reasoning: str
    rounds: list[Round]
    threshold: float
    tag: Literal["S_w"] = "S_w"
    system: str
    reason: None = None
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class RejectedRow(msgspec.Struct, frozen=True, kw_only=True):
    """A pair whose deciding score fell below the threshold, and why."""

    id: str
    seed_id: str
    source: str
    doc_id: str
    offset: int
    part: int
    header: str
    instruction: str
    response: str
    score: float
    scores: list[float]
    reasoning: str
    rounds: list[Round]
    threshold: float
    tag: None = None
    system: None = None
    reason: str
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class FailedRow(msgspec.Struct, frozen=True, kw_only=True):
    """A segment that could not be processed: a bad record, or a call that failed."""

    id: str
    seed_id: str
    source: str
    doc_id: str
    offset: None = None
    part: None = None
    header: None = None
    instruction: str
    response: None = None
    score: None = None
    scores: None = None
    reasoning: None = None
    rounds: None = None
    threshold: None = None
    tag: None = None
    system: None = None
    reason: None = None
    stage: str
    error_kind: str
    error: str
    models: dict[str, str]
    simulated: bool


class Scored(msgspec.Struct, frozen=True, kw_only=True):
    """A curated pair before the threshold decides: what its kept and rejected rows share."""

    item: Item
    segment: Segment
    instruction: str
    rounds: list[Round]
    threshold: float
    models: dict[str, str]
    simulated: bool

    @property
    def score(self) -> float:
        """The deciding (last) round's mean score."""
        return self.rounds[-1].score

    def kept(self, system: str) -> KeptRow:
        """The kept row, tagged S_w with ``system`` as its system prompt."""
        final, seg = self.rounds[-1], self.segment
        return KeptRow(
            id=row_id(NAME, self.item.key),
            seed_id=self.item.key,
            source=self.item.source,
            doc_id=seg.doc_id,
            offset=seg.offset,
            part=seg.part,
            header=seg.header,
            instruction=self.instruction,
            response=seg.text,
            score=final.score,
            scores=final.scores,
            reasoning=final.reasoning,
            rounds=self.rounds,
            threshold=self.threshold,
            system=system,
            models=self.models,
            simulated=self.simulated,
        )

    def rejected(self, reason: str) -> RejectedRow:
        """The rejected row, and why."""
        final, seg = self.rounds[-1], self.segment
        return RejectedRow(
            id=row_id(NAME, self.item.key),
            seed_id=self.item.key,
            source=self.item.source,
            doc_id=seg.doc_id,
            offset=seg.offset,
            part=seg.part,
            header=seg.header,
            instruction=self.instruction,
            response=seg.text,
            score=final.score,
            scores=final.scores,
            reasoning=final.reasoning,
            rounds=self.rounds,
            threshold=self.threshold,
            reason=reason,
            models=self.models,
            simulated=self.simulated,
        )


def error_kind(error: EngineError | str) -> str:
    """The ``error_kind`` of a failed row: an endpoint error's snake_case kind, another
    error's class name, ``input`` for a bad record's reason."""
    if isinstance(error, str):
        return "input"
    if isinstance(error, EndpointError):
        return error.kind
    return type(error).__name__


def failed_row(
    item: Item,
    *,
    stage: str,
    error: EngineError | str,
    segment: Segment | None,
    instruction: str | None,
    models: dict[str, str],
    simulated: bool,
) -> FailedRow:
    """The failed row of ``item`` at ``stage``.

    Its id derives from the item key, the stage and, for a segment that was read, its
    document, offset and the instruction written before the failure (so a failure at
    another point is another row).
    """
    parts: list[object] = [NAME, item.key, stage, "failed"]
    if segment is not None:
        parts += [segment.doc_id, segment.offset]
        if instruction is not None:
            parts.append(instruction)
    return FailedRow(
        id=row_id(*parts),
        seed_id=item.key,
        source=item.source,
        doc_id=segment.doc_id if segment is not None else "",
        instruction=instruction or "",
        stage=stage,
        error_kind=error_kind(error),
        error=str(error),
        models=models,
        simulated=simulated,
    )
