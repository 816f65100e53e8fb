"""SELF-GUIDE's rows: one schema for kept, rejected and failed rows, one Struct per kind.

Every row has the columns of :data:`COLUMNS`, in that order. A column is null on every
row of a kind that does not fill it (the Structs type such a column ``None``), so
``datasets`` loads any set of shards (:class:`~engine.methods.base.RowSchema`). The
Structs are what the method returns (as :class:`~engine.methods.custom.Kept`,
``Rejected`` and ``Failed``); the schema is what the engine uses for the failed rows it
writes itself. ``tests/unit/methods/test_selfguide_package.py`` checks that both agree.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import msgspec

from ..base import ERROR_COLUMNS, ORIGIN_COLUMNS, Column

__all__ = (
    "COLUMNS",
    "Candidate",
    "FailedRow",
    "KeptRow",
    "Origin",
    "RejectedRow",
    "Votes",
    "WorkItem",
)

COLUMNS: tuple[Column, ...] = (
    Column("id", str, doc="row id"),
    Column("seed_id", str, doc="item key `r<round>-p<prompt>`"),
    Column("source", str, doc="`round:R:prompt:P`"),
    Column("task", str, doc="the task's name"),
    Column("instruction", str, doc="the task instruction the input was generated for"),
    Column("input", str, doc="the generated input"),
    Column("round", int, doc="generation round (1-based)"),
    Column("prompt", int, doc="prompt number within the round (0-based)"),
    Column("requested_label", str, doc="classification: the label asked for; else null"),
    Column("output", str, "k", doc="the voted output (classification: the label)"),
    Column("label", str, "k", doc="classification: the voted label; else null"),
    Column("label_changed", bool, "k", doc="classification: the vote chose another label"),
    Column("votes", dict, "k", doc="`{top, survivors, samples}` of the vote"),
    Column("single_vote", bool, "k", doc="the winner was produced once (e.g. 1 of 1)"),
    Column("samples", list, "kr", doc="raw outputs of the deciding step"),
    Column("filter", str, "r", doc="the filter that dropped it"),
    Column("reason", str, "r", doc="why"),
    Column("similarity", float, "r", empty=0.0, doc="near duplicates: cosine (else 0.0)"),
    Column("duplicate_of", str, "r", doc='near duplicates: the repeated row id (else `""`)'),
    Column("stage", str, "rf", doc="`input` or `annotate`"),
    *ERROR_COLUMNS,
    *ORIGIN_COLUMNS,
)
"""The row schema: every kept, rejected and failed row has these columns."""


class Candidate(msgspec.Struct, kw_only=True):
    """One generated input and what the filters made of it.

    Attributes:
        round: 1-based round.
        prompt: 0-based prompt number within the round.
        text: the cleaned input.
        label: the label asked for (classification), else None.
        filter: the filter that dropped it (one of INPUT_FILTERS, or ``near_duplicate``),
            None if accepted.
        reason: the drop reason.
        similarity: a near duplicate's cosine with the accepted input it repeats.
        duplicate_of: the row id of that accepted input.
        raw: the generator's reply before cleaning.
    """

    round: int
    prompt: int
    text: str
    raw: str = ""
    label: str | None = None
    filter: str | None = None
    reason: str | None = None
    similarity: float | None = None
    duplicate_of: str | None = None

    @property
    def key(self) -> str:
        """The work item's key: ``r<round>-p<prompt>``."""
        return f"r{self.round}-p{self.prompt}"


class WorkItem(Candidate, kw_only=True):
    """A work item's data: a candidate, and whether it is to be annotated (``input``) or
    written as the rejected row of a dropped candidate (``dropped``)."""

    kind: Literal["input", "dropped"]


class Origin(TypedDict):
    """The columns every row of an item has besides its ``id``: where its input came from
    (unpacked into the row Structs, so the type checker sees every field)."""

    seed_id: str
    source: str
    task: str
    instruction: str
    input: str
    round: int
    prompt: int
    requested_label: str | None
    models: dict[str, str]
    simulated: bool


class Votes(msgspec.Struct, frozen=True):
    """The vote behind a kept row: the winner's count, the surviving samples, all samples."""

    top: int
    survivors: int
    samples: int


class _Row(msgspec.Struct, frozen=True, kw_only=True):
    """The columns every row has: where its input came from."""

    id: str
    seed_id: str
    source: str
    task: str
    instruction: str
    input: str
    round: int
    prompt: int
    requested_label: str | None


class KeptRow(_Row, frozen=True, kw_only=True):
    """An input the student labelled with a clear majority."""

    output: str
    label: str | None
    label_changed: bool | None
    votes: Votes
    single_vote: bool
    samples: list[str]
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class RejectedRow(_Row, frozen=True, kw_only=True):
    """A candidate an input filter dropped, or an input its annotation rejected."""

    output: None = None
    label: None = None
    label_changed: None = None
    votes: None = None
    single_vote: None = None
    samples: list[str]
    filter: str
    reason: str
    similarity: float = 0.0
    duplicate_of: str = ""
    stage: Literal["input", "annotate"]
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool


class FailedRow(_Row, frozen=True, kw_only=True):
    """An input whose annotation call failed for good."""

    output: None = None
    label: None = None
    label_changed: None = None
    votes: None = None
    single_vote: None = None
    samples: None = None
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: str
    error_kind: str
    error: str
    models: dict[str, str]
    simulated: bool
