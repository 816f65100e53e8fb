"""LAB's rows: one schema for every kind, and a msgspec Struct per kind.

Every kept, rejected and failed row has the columns of :data:`COLUMNS`, in that order; a
column a kind does not fill is null on every row of that kind (``datasets`` takes a
column's type from the first shard it reads). :class:`LabKept`, :class:`LabRejected` and
:class:`LabFailed` declare exactly those columns, typed per kind (``None`` where a kind
leaves a column null), so a row is built whole, typed and in order, never patched in
place. :class:`Candidate` is a question on its way through the checks.
"""

from __future__ import annotations

import msgspec

from ...errors import EndpointError, ParseError
from ...io.taxonomy import Leaf
from ...records import row_id
from ..base import ERROR_COLUMNS, ORIGIN_COLUMNS, Column

__all__ = (
    "COLUMNS",
    "METHOD",
    "Candidate",
    "Check",
    "LabFailed",
    "LabKept",
    "LabRejected",
    "check",
    "error_kind",
)

METHOD = "lab"
"""The method's name: its ``[method.lab]`` table and the first part of every row id."""

COLUMNS: tuple[Column, ...] = (
    Column("id", str, doc="row id (leaf and unit)"),
    Column("seed_id", str, doc="the leaf's path (the item key)"),
    Column("source", str, doc="the leaf's `qna.yaml`"),
    Column("leaf", str, doc="the leaf's path"),
    Column("kind", str, doc="`freeform_skill`, `grounded_skill` or `knowledge`"),
    Column("phase", str, doc="`knowledge` or `skills`"),
    Column("unit", str, doc="where in the leaf: seed, context, chunk version, sample"),
    Column("question", str, doc='the question (failed: `""` if none yet)'),
    Column("answer", str, "kr", doc='the answer (`""` if not written yet)'),
    Column("context", str, "kr", doc="grounded: the context; knowledge: the chunk used"),
    Column("raw_document", str, "kr", doc="knowledge: the chunk as read (before spellcheck)"),
    Column("dataset_type", str, "kr", doc="knowledge: `base_document` or `spellcheck`"),
    Column("checks", list, "kr", doc="every check applied: check, score, passed, rationale"),
    Column("filter", str, "r", doc="the check that dropped it"),
    Column("reason", str, "r", doc="why"),
    Column("similarity", float, "r", empty=0.0, doc="near duplicates: cosine (else 0.0)"),
    Column("duplicate_of", str, "r", doc='near duplicates: the repeated row id (else `""`)'),
    Column("stage", str, "f", doc="the step that failed"),
    *ERROR_COLUMNS,
    *ORIGIN_COLUMNS,
)
"""The row schema: every kept, rejected and failed row has these columns."""


class Check(msgspec.Struct, frozen=True):
    """One check applied to a question, rule or judge.

    Attributes:
        check: its name (``dedup``, ``near_duplicate``, ``question_check``, ``pair_check``,
            ``faithfulness``, ``relevancy``, ``self_contained``).
        score: the score it gave (always a float: ``1`` and ``1.0`` never load as two types).
        passed: whether the question passed it.
        rationale: the judge's explanation (or why a rule dropped it).
    """

    check: str
    score: float
    passed: bool
    rationale: str = ""


def check(name: str, score: float, passed: bool, rationale: str = "") -> Check:
    """A :class:`Check` with its score as a float."""
    return Check(check=name, score=float(score), passed=passed, rationale=rationale)


class Candidate(msgspec.Struct, kw_only=True):
    """A question on its way through the checks (mutable: the answer and checks grow).

    Attributes:
        unit: where in the leaf it comes from (its row id's last part).
        question: the question.
        answer: the answer, once written (knowledge: generated with the question).
        context: grounded skills: the context; knowledge: the chunk used.
        raw_document: knowledge: the chunk as read.
        dataset_type: knowledge: ``base_document`` or ``spellcheck``.
        seed: skill leaves: the index of the seed example it was generated from.
        checks: the checks applied so far, in order.
    """

    unit: str
    question: str
    answer: str = ""
    context: str = ""
    raw_document: str = ""
    dataset_type: str = ""
    seed: int = 0
    checks: list[Check] = msgspec.field(default_factory=list)


class _Where(msgspec.Struct, frozen=True):
    """The columns every kind fills first: where the row comes from (positional, in
    :data:`COLUMNS` order; the kinds' own columns are keyword-only)."""

    id: str
    seed_id: str
    source: str
    leaf: str
    kind: str
    phase: str
    unit: str
    question: str


class LabKept(_Where, kw_only=True, frozen=True):
    """A kept row: a question that passed every check, with its answer."""

    answer: str
    context: str
    raw_document: str
    dataset_type: str
    checks: list[Check]
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool

    @classmethod
    def of(cls, leaf: Leaf, cand: Candidate, models: dict[str, str], simulated: bool) -> LabKept:
        """The kept row of ``cand``."""
        return cls(
            *_where(leaf, cand.unit, cand.question),
            answer=cand.answer,
            context=cand.context,
            raw_document=cand.raw_document,
            dataset_type=cand.dataset_type,
            checks=list(cand.checks),
            models=models,
            simulated=simulated,
        )


class LabRejected(_Where, kw_only=True, frozen=True):
    """A rejected row: the check that dropped the question (``filter``) and why."""

    answer: str
    context: str
    raw_document: str
    dataset_type: str
    checks: list[Check]
    filter: str
    reason: str
    similarity: float = 0.0
    duplicate_of: str = ""
    stage: None = None
    error_kind: None = None
    error: None = None
    models: dict[str, str]
    simulated: bool

    @classmethod
    def of(
        cls,
        leaf: Leaf,
        cand: Candidate,
        models: dict[str, str],
        simulated: bool,
        *,
        filter: str,
        reason: str,
        similarity: float = 0.0,
        duplicate_of: str = "",
    ) -> LabRejected:
        """The rejected row of ``cand``, dropped by ``filter``."""
        return cls(
            *_where(leaf, cand.unit, cand.question),
            answer=cand.answer,
            context=cand.context,
            raw_document=cand.raw_document,
            dataset_type=cand.dataset_type,
            checks=list(cand.checks),
            filter=filter,
            reason=reason,
            similarity=float(similarity),
            duplicate_of=duplicate_of,
            models=models,
            simulated=simulated,
        )


class LabFailed(_Where, kw_only=True, frozen=True):
    """A failed row: the step that failed, the error's class and message."""

    answer: None = None
    context: None = None
    raw_document: None = None
    dataset_type: None = None
    checks: None = None
    filter: None = None
    reason: None = None
    similarity: None = None
    duplicate_of: None = None
    stage: str
    error_kind: str
    error: str
    models: dict[str, str]
    simulated: bool

    @classmethod
    def of(
        cls,
        leaf: Leaf,
        unit: str,
        stage: str,
        error: EndpointError | ParseError,
        models: dict[str, str],
        simulated: bool,
        *,
        question: str = "",
    ) -> LabFailed:
        """The failed row of a step of ``leaf`` at ``unit``."""
        # The id engine.methods.base.failed_row gives with extra (unit, leaf, kind, phase).
        failed_id = row_id(
            METHOD, leaf.path, stage, "failed", unit, leaf.path, leaf.kind, leaf.phase
        )
        return cls(
            failed_id,
            leaf.path,
            leaf.file,
            leaf.path,
            leaf.kind,
            leaf.phase,
            unit,
            question,
            stage=stage,
            error_kind=error_kind(error),
            error=str(error),
            models=models,
            simulated=simulated,
        )

    @classmethod
    def input(
        cls, key: str, source: str, reason: str, models: dict[str, str], simulated: bool
    ) -> LabFailed:
        """The failed row of a leaf the taxonomy reader refused (stage ``input``)."""
        # leaf, kind, phase, unit and question: unknown ("")
        return cls(
            row_id(METHOD, key, "input", "failed"),
            key,
            source,
            "",
            "",
            "",
            "",
            "",
            stage="input",
            error_kind="input",
            error=reason,
            models=models,
            simulated=simulated,
        )


def error_kind(error: EndpointError | ParseError) -> str:
    """The error's kind in a failed row (``engine.methods.base.failed_row``'s rule)."""
    return error.kind if isinstance(error, EndpointError) else type(error).__name__


_WhereValues = tuple[str, str, str, str, str, str, str, str]


def _where(leaf: Leaf, unit: str, question: str) -> _WhereValues:
    """:class:`_Where`'s values, in order, for a row of ``leaf`` at ``unit``."""
    return (
        row_id(METHOD, leaf.path, unit),
        leaf.path,
        leaf.file,
        leaf.path,
        leaf.kind,
        leaf.phase,
        unit,
        question,
    )
