"""LAB (InstructLab SDG, arXiv 2403.01081): taxonomy-driven generation with teacher-as-critic.

Spec: shared methods.md section 4. One work item per taxonomy leaf (``qna.yaml``); each
leaf is prompted only with its own seed examples (taxonomy-driven sampling).

``pipeline = "full"``:

* freeform skills: ``gen_questions`` (``num_samples`` calls, one seed question each,
  cycling through the seeds) -> exact dedup -> ``eval_question`` (0/1, keep == 1) ->
  ``gen_responses`` -> ``eval_pair`` (1-3, keep >= ``min_pair_score``).
* grounded skills: ``gen_contexts`` (``num_contexts``, deduplicated) ->
  ``gen_grounded_questions`` (``grounded_questions`` per context) -> the same checks and
  responses, with the context shown; the training user turn is context + question.
* knowledge: documents chunked by words (``chunk_word_count``), optionally a spell-corrected
  copy of every chunk (both used) -> ``gen_knowledge`` (``[QUESTION]...[ANSWER]...[END]``
  blocks) -> exact dedup -> ``eval_faithfulness`` (YES/NO, keep YES) -> ``eval_relevancy``
  (0-2, keep == 2) -> ``eval_verify_question`` (0/1, keep == 1).

``pipeline = "simple"``: ``num_instructions_to_generate`` question/answer generations per
leaf at ``temperature`` and exact dedup on the question; no judge.

With ``[method.lab.semantic_dedup] enabled = true``, questions that pass exact dedup are
also checked against every question admitted so far in the run (all leaves): a near
duplicate becomes a rejected row with filter ``near_duplicate`` before any judge call.

``finalize`` writes ``knowledge.jsonl`` and ``skills.jsonl`` (the phase sets) and
``mixed.jsonl`` (the recipe of ``[method.lab.mix]``) from the committed kept rows.

Determinism: every generation sends a ``seed`` derived from the run seed, the leaf and the
sample's position, dedup runs in generation order after all samples of a step are back,
and mixing draws from ``random.Random`` seeded by the run seed.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..config import Base
from ..errors import EndpointError, InputError, ParseError
from ..filters import ExactDedup, normalize
from ..io.derived import DerivedFile, write_jsonl_atomic
from ..io.knowledge import KnowledgeSettings, chunk_markdown, load_documents
from ..io.shards import iter_rows
from ..io.taxonomy import Leaf, Problem, read_taxonomy
from ..records import BadInput, Item, RowOut, row_id
from ..stages import Generate, check_templates, parse_score
from . import prompts_lab as P
from .base import InputCheck, MethodContext, failed_row
from .semantic_dedup import REASON as NEAR_DUPLICATE
from .semantic_dedup import SemanticDedupConfig, semantic_dedup

__all__ = (
    "LabConfig",
    "LabMethod",
    "LabMix",
    "LabTemplates",
    "chunk_words",
    "mix_rows",
    "parse_judge_score",
    "parse_qa_blocks",
    "parse_tagged",
    "parse_yes_no",
    "sample_rows",
    "training_sample",
)

FILTERS: tuple[str, ...] = (
    "dedup",
    "question_check",
    "pair_check",
    "faithfulness",
    "relevancy",
    "self_contained",
)
"""The filters a question can be dropped by (rejected rows name one in ``filter``)."""

Size = int | float


class LabTemplates(Base, frozen=True):
    """``[method.lab.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    system: str = P.SYSTEM
    gen_questions: str = P.GEN_QUESTIONS
    gen_contexts: str = P.GEN_CONTEXTS
    gen_grounded_questions: str = P.GEN_GROUNDED_QUESTIONS
    eval_question: str = P.EVAL_QUESTION
    gen_responses: str = P.GEN_RESPONSES
    eval_pair: str = P.EVAL_PAIR
    spellcheck: str = P.SPELLCHECK
    gen_knowledge: str = P.GEN_KNOWLEDGE
    eval_faithfulness: str = P.EVAL_FAITHFULNESS
    eval_relevancy: str = P.EVAL_RELEVANCY
    eval_verify_question: str = P.EVAL_VERIFY_QUESTION
    simple_skill: str = P.SIMPLE_SKILL
    simple_knowledge: str = P.SIMPLE_KNOWLEDGE


def _check_size(value: Size, field: str) -> None:
    if value < 0:
        raise ValueError(f"{field}: sampling size must be >= 0, got {value}")


class LabMix(Base, frozen=True):
    """``[method.lab.mix]``: the data-mixing recipe (SDG datamixing ``sampling_size``).

    A size is an int (that many rows) or a float (that ratio of the rows). Asking for more
    rows than there are samples with replacement; otherwise without. Leaves named in
    ``leaves`` are sampled on their own and left out of their phase's pool.

    Attributes:
        knowledge: size of the knowledge phase's pool.
        skills: size of the skills phase's pool.
        leaves: leaf path (e.g. ``compositional_skills/writing/freeform/haiku``) -> size.
    """

    knowledge: Size = 1.0
    skills: Size = 1.0
    leaves: dict[str, Size] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_size(self.knowledge, "knowledge")
        _check_size(self.skills, "skills")
        for leaf, size in self.leaves.items():
            _check_size(size, f"leaves.{leaf}")


class LabConfig(Base, frozen=True):
    """``[method.lab]`` — defaults are InstructLab SDG's (``full`` pipeline).

    Attributes:
        pipeline: ``full`` (generation + teacher-as-critic filters) or ``simple``.
        taxonomy: taxonomy root directory, relative to the config file (default:
            ``run.input``, which names the taxonomy directory; a file there means its
            directory).
        num_samples: freeform questions generated per leaf (SDG gen_questions: 30).
        num_contexts: contexts generated per grounded leaf (SDG gen_contexts: n=10).
        grounded_questions: questions per context (SDG gen_grounded_questions: 3).
        chunk_word_count: words per document chunk (SDG: 1000).
        spellcheck: also use a spell-corrected copy of every chunk (SDG gen_spellcheck).
        knowledge_samples: gen_knowledge calls per chunk version.
        icl_pairs: seed QA pairs shown to gen_knowledge (SDG: 3).
        num_instructions_to_generate: generations per leaf of the simple pipeline (30).
        min_pair_score: keep a skill pair whose 1-3 score is at least this (SDG: 2).
        temperature: sampling temperature of generation (SDG forces 0.7 for n > 1).
        max_tokens: max tokens of a generation.
        response_temperature: temperature of responses and spellcheck (SDG default: 0).
        response_max_tokens: max tokens of a response.
        judge_temperature: judge temperature (SDG default: 0).
        judge_max_tokens: max tokens of a judge reply.
        templates: prompt overrides.
        mix: the data-mixing recipe.
        semantic_dedup: embedding near-duplicate filter on questions (off by default).
        foundational_skills: also read ``foundational_skills/`` leaves, as compositional
            skills (InstructLab's data generation skips them; so does the default).
        document_cache: directory of knowledge-repository checkouts, relative to the
            config file (None: ``~/.cache/synth-engine/knowledge``).
        mirrors: repository URL -> local path or URL to clone instead (offline use).
        git_timeout_s: bound of every git command.
    """

    pipeline: Literal["full", "simple"] = "full"
    taxonomy: str | None = None
    foundational_skills: bool = False
    document_cache: str | None = None
    mirrors: dict[str, str] = msgspec.field(default_factory=dict)
    git_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    num_samples: Annotated[int, msgspec.Meta(ge=1)] = 30
    num_contexts: Annotated[int, msgspec.Meta(ge=1)] = 10
    grounded_questions: Annotated[int, msgspec.Meta(ge=1)] = 3
    chunk_word_count: Annotated[int, msgspec.Meta(ge=1)] = 1000
    spellcheck: bool = True
    knowledge_samples: Annotated[int, msgspec.Meta(ge=1)] = 1
    icl_pairs: Annotated[int, msgspec.Meta(ge=1)] = 3
    num_instructions_to_generate: Annotated[int, msgspec.Meta(ge=1)] = 30
    min_pair_score: Annotated[int, msgspec.Meta(ge=1, le=3)] = 2
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    response_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    response_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 512
    templates: LabTemplates = msgspec.field(default_factory=LabTemplates)
    mix: LabMix = msgspec.field(default_factory=LabMix)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


# ------------------------------------------------------------ structured shapes
class _Question(msgspec.Struct):
    question: str


class _Context(msgspec.Struct):
    context: str


class _QA(msgspec.Struct):
    question: str
    answer: str


class _QAList(msgspec.Struct):
    pairs: list[_QA]


class _Binary(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=0, le=1)]


class _PairScore(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=1, le=3)]


class _Relevancy(msgspec.Struct):
    explanation: str
    score: Annotated[int, msgspec.Meta(ge=0, le=2)]


class _YesNo(msgspec.Struct):
    explanation: str
    score: Literal["YES", "NO"]


# ----------------------------------------------------------------- text parsers
def parse_tagged(text: str, start: str, end: str, *, stage: str = "parse") -> list[str]:
    """The non-empty texts between each ``start``/``end`` tag pair.

    Tolerant: an unclosed last tag runs to the end; a reply without any tag counts as
    one item (the whole reply) when it is not empty.

    Raises:
        ParseError: nothing non-empty found.
    """
    pattern = re.compile(rf"{re.escape(start)}(.*?)(?:{re.escape(end)}|$)", re.S | re.I)
    found = [m.group(1).strip() for m in pattern.finditer(text)]
    if not found and start.lower() not in text.lower():
        found = [text.replace(end, "").strip()]
    items = [f for f in found if f]
    if not items:
        raise ParseError(f"expected text between {start} and {end}", stage=stage)
    return items


_QA_BLOCK = re.compile(
    r"\[QUESTION\]\s*(.*?)\s*\[ANSWER\]\s*(.*?)\s*(?:\[END\]|(?=\[QUESTION\])|$)", re.S | re.I
)


def parse_qa_blocks(text: str, *, stage: str = "gen_knowledge") -> list[tuple[str, str]]:
    """``[QUESTION] q [ANSWER] a [END]`` blocks; ``[UNANSWERABLE]`` alone gives none.

    Raises:
        ParseError: no block and no ``[UNANSWERABLE]``.
    """
    pairs = [(q.strip(), a.strip()) for q, a in _QA_BLOCK.findall(text)]
    pairs = [(q, a) for q, a in pairs if q and a]
    if not pairs and "[unanswerable]" not in text.lower():
        raise ParseError("expected [QUESTION] ... [ANSWER] ... [END] blocks", stage=stage)
    return pairs


_SCORE_BLOCK = re.compile(r"\[Start of Score\](.*?)(?:\[End of Score\]|$)", re.S | re.I)
_TOTAL = re.compile(r"total\s*score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.I)


def parse_judge_score(text: str, *, low: int, high: int, stage: str = "judge") -> int:
    """A judge's integer score: from the ``[Start of Score]`` block, else a ``Total
    Score: X`` line, else the last ``Score: k`` (or number) in range.

    Raises:
        ParseError: no score in [low, high].
    """
    m = _SCORE_BLOCK.search(text)
    if m:
        try:
            return round(parse_score(m.group(1), low=low, high=high, stage=stage))
        except ParseError:
            pass
    totals = [float(x) for x in _TOTAL.findall(text)]
    for value in reversed(totals):
        if low <= value <= high:
            return round(value)
    return round(parse_score(text, low=low, high=high, stage=stage))


_YES_NO = re.compile(r"\b(YES|NO)\b", re.I)


def parse_yes_no(text: str, *, stage: str = "eval_faithfulness") -> str:
    """``YES`` or ``NO``: the last one in the score block, else in the whole reply.

    Raises:
        ParseError: neither word found.
    """
    m = _SCORE_BLOCK.search(text)
    for part in ([m.group(1)] if m else []) + [text]:
        found = _YES_NO.findall(part)
        if found:
            return str(found[-1]).upper()
    raise ParseError("expected YES or NO", stage=stage)


def _binary(text: str, stage: str) -> _Binary:
    return _Binary(
        explanation=text.strip(), score=parse_judge_score(text, low=0, high=1, stage=stage)
    )


# --------------------------------------------------------------- pure functions
_WORD = re.compile(r"\S+\s*")


def chunk_words(text: str, size: int) -> list[str]:
    """Split ``text`` into chunks of at most ``size`` words (whitespace kept inside a chunk).

    The last chunk may be shorter; an empty text gives no chunk.
    """
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    words = _WORD.findall(text.strip())
    return ["".join(words[i : i + size]).strip() for i in range(0, len(words), size)]


def sample_rows(
    rows: Sequence[dict[str, Any]], size: Size, rng: random.Random
) -> list[dict[str, Any]]:
    """``size`` rows (int) or ``size`` x len(rows) rows (float), seeded.

    All rows (in order) when the count equals the number of rows, a sample without
    replacement when it is smaller, and a sample with replacement when it is larger.
    """
    n = size if isinstance(size, int) else round(size * len(rows))
    if not rows or n <= 0:
        return []
    if n == len(rows):
        return list(rows)
    if n < len(rows):
        return rng.sample(list(rows), n)
    return rng.choices(list(rows), k=n)


def mix_rows(rows: Sequence[dict[str, Any]], recipe: LabMix, *, seed: int) -> list[dict[str, Any]]:
    """The mixed training set: each group sampled by its size, then shuffled (seeded).

    Groups: every leaf named in ``recipe.leaves``, then each phase's remaining rows.
    """
    groups: dict[str, tuple[list[dict[str, Any]], Size]] = {}
    for leaf, size in sorted(recipe.leaves.items()):
        groups[f"leaf:{leaf}"] = ([r for r in rows if r["leaf"] == leaf], size)
    for phase, size in (("knowledge", recipe.knowledge), ("skills", recipe.skills)):
        pool = [r for r in rows if r["phase"] == phase and r["leaf"] not in recipe.leaves]
        groups[f"phase:{phase}"] = (pool, size)
    out: list[dict[str, Any]] = []
    for name, (pool, size) in groups.items():
        out.extend(sample_rows(pool, size, random.Random(f"lab:mix:{seed}:{name}")))
    random.Random(f"lab:mix:{seed}:shuffle").shuffle(out)
    return out


def training_sample(row: dict[str, Any]) -> dict[str, Any]:
    """A kept row as a chat training sample (grounded skills: the user turn is context +
    question; knowledge keeps the gold chunk as ``context``)."""
    question = str(row["question"])
    context = str(row.get("context") or "")
    user = f"{context}\n\n{question}" if row["kind"] == "grounded_skill" and context else question
    sample: dict[str, Any] = {
        "id": row["id"],
        "leaf": row["leaf"],
        "kind": row["kind"],
        "phase": row["phase"],
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": row["answer"]},
        ],
    }
    if context:
        sample["context"] = context
    return sample


# ---------------------------------------------------------------------- method
class _Drop(Exception):
    def __init__(self, filter_name: str, reason: str) -> None:
        super().__init__(reason)
        self.filter = filter_name
        self.reason = reason


class LabMethod:
    """The LAB (InstructLab SDG) pipelines over a taxonomy."""

    name = "lab"

    def __init__(self, cfg: LabConfig, ctx: MethodContext) -> None:
        t = cfg.templates
        check_templates(t, P.TEMPLATE_VARS, prefix="method.lab.templates")
        self.cfg = cfg
        self.ctx = ctx
        gen = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        resp = {"temperature": cfg.response_temperature, "max_tokens": cfg.response_max_tokens}
        judge = {"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens}
        obs = ctx.stage
        system = t.system or None

        def step(name: str, depth: int, schema: Any, parse: Any, params: dict[str, Any]) -> Any:
            return Generate(
                name,
                depth=depth,
                template=getattr(t, name),
                system=system,
                schema=schema,
                parse_text=parse,
                params=params,
                observer_for=obs,
            )

        def first_tag(start: str, end: str, name: str, wrap: Any) -> Any:
            return lambda s: wrap(parse_tagged(s, start, end, stage=name)[0])

        self.gen_questions: Generate[_Question] = step(
            "gen_questions",
            0,
            _Question,
            first_tag("[Start of Question]", "[End of Question]", "gen_questions", _Question),
            gen,
        )
        self.gen_contexts: Generate[_Context] = step(
            "gen_contexts",
            0,
            _Context,
            first_tag("[Start of Context]", "[End of Context]", "gen_contexts", _Context),
            gen,
        )
        self.gen_grounded_questions: Generate[_Question] = step(
            "gen_grounded_questions",
            1,
            _Question,
            first_tag(
                "[Start of Question]", "[End of Question]", "gen_grounded_questions", _Question
            ),
            gen,
        )
        self.eval_question: Generate[_Binary] = step(
            "eval_question", 2, _Binary, lambda s: _binary(s, "eval_question"), judge
        )

        def text_step(name: str, depth: int, template: str) -> Generate[str]:
            return Generate(
                name,
                depth=depth,
                template=template,
                system=system,
                schema=None,
                parse_text=_nonempty(name),
                params=resp,
                observer_for=obs,
            )

        self.gen_responses = text_step("gen_responses", 3, t.gen_responses)
        self.eval_pair: Generate[_PairScore] = step(
            "eval_pair",
            4,
            _PairScore,
            lambda s: _PairScore(
                explanation=s.strip(), score=parse_judge_score(s, low=1, high=3, stage="eval_pair")
            ),
            judge,
        )
        self.spellcheck = text_step("spellcheck", 0, t.spellcheck)
        self.gen_knowledge: Generate[_QAList] = step(
            "gen_knowledge",
            1,
            _QAList,
            lambda s: _QAList([_QA(q, a) for q, a in parse_qa_blocks(s)]),
            gen,
        )
        self.eval_faithfulness: Generate[_YesNo] = step(
            "eval_faithfulness",
            2,
            _YesNo,
            lambda s: _YesNo(explanation=s.strip(), score=parse_yes_no(s)),  # type: ignore[arg-type]
            judge,
        )
        self.eval_relevancy: Generate[_Relevancy] = step(
            "eval_relevancy",
            3,
            _Relevancy,
            lambda s: _Relevancy(
                explanation=s.strip(),
                score=parse_judge_score(s, low=0, high=2, stage="eval_relevancy"),
            ),
            judge,
        )
        self.eval_verify_question: Generate[_Binary] = step(
            "eval_verify_question", 4, _Binary, lambda s: _binary(s, "eval_verify_question"), judge
        )
        self.simple_skill: Generate[_QA] = step(
            "simple_skill", 0, _QA, _first_qa("simple_skill"), gen
        )
        self.simple_knowledge: Generate[_QA] = step(
            "simple_knowledge", 0, _QA, _first_qa("simple_knowledge"), gen
        )
        self.root: Path | None = None
        self.entries: list[Leaf | BadInput] = []
        self.leaves: dict[str, Leaf] = {}
        self.total: int | None = None
        self.per_leaf: dict[str, Counter[str]] = {}
        self.failed_by_stage: Counter[str] = Counter()
        self.bad_leaves: list[dict[str, str]] = []
        self.notes: list[Problem] = []
        self.derived_counts: dict[str, int] = {}
        # Rebuilt on resume from every committed row whose question passed dedup.
        self.semantic = semantic_dedup(
            cfg.semantic_dedup,
            ctx.config,
            method=self.name,
            logger=ctx.log,
            text_field="question",
            kinds=("kept", "rejected", "failed"),
            skip_filters=frozenset({"dedup", NEAR_DUPLICATE}),
        )
        self.filters = FILTERS + ((NEAR_DUPLICATE,) if self.semantic is not None else ())

    # ---------------------------------------------------------------- prepare
    def _root(self) -> Path:
        cfg = self.ctx.config
        if self.cfg.taxonomy:
            return cfg.resolve(self.cfg.taxonomy)
        path = self.ctx.input_path
        return path if path.is_dir() else path.parent

    def knowledge_settings(self) -> KnowledgeSettings:
        """Where knowledge repositories are checked out, and the mirrors."""
        cache = self.cfg.document_cache
        return KnowledgeSettings(
            cache_dir=(
                self.ctx.config.resolve(cache)
                if cache
                else Path.home() / ".cache" / "synth-engine" / "knowledge"
            ),
            mirrors=dict(self.cfg.mirrors),
            timeout_s=self.cfg.git_timeout_s,
        )

    def read_entries(self) -> list[Leaf | BadInput]:
        """Every leaf, validated, with its documents read (refused ones as BadInput).

        Files that are not read (``qna.yml``, ``foundational_skills/``) and other warnings
        are logged and kept in :attr:`notes`.

        Raises:
            InputError: the taxonomy is not a directory or holds no leaf.
        """
        root = self.root = self._root()
        self.notes = []

        def note(p: Problem) -> None:
            self.notes.append(p)
            self.ctx.log.warning("taxonomy: %s: %s", p.file, p.message)

        settings = self.knowledge_settings()
        entries: list[Leaf | BadInput] = []
        for entry in read_taxonomy(
            root, foundational_skills=self.cfg.foundational_skills, on_note=note
        ):
            if isinstance(entry, Leaf) and entry.source is not None:
                file = entry.file
                try:
                    entry = load_documents(
                        entry,
                        root,
                        settings,
                        warn=lambda m, f=file: note(Problem(f, None, m)),  # type: ignore[misc]
                    )
                except InputError as exc:
                    entry = BadInput(
                        index=len(entries),
                        key=entry.path,
                        source=f"{exc.path}:{exc.line}" if exc.line else str(exc.path),
                        reason=exc.reason,
                    )
            if isinstance(entry, Leaf) and entry.kind != "knowledge":
                mixed = {bool(s.context) for s in entry.skill_seeds}
                if len(mixed) > 1:
                    note(
                        Problem(
                            entry.file,
                            None,
                            f"seeds with and without a context: run as a {entry.kind} "
                            "(the first seed decides, as in InstructLab SDG)",
                        )
                    )
            entries.append(entry)
        return entries

    async def prepare(self) -> None:
        """Read and validate the taxonomy and fetch its documents (refused leaves become
        failed rows).

        Raises:
            InputError: the taxonomy is not a directory or holds no leaf.
        """
        if self.semantic is not None:
            self.semantic.warm_up()
        self.entries = await asyncio.to_thread(self.read_entries)
        for entry in self.entries:
            if isinstance(entry, Leaf):
                self.leaves[entry.path] = entry
            else:
                self.bad_leaves.append({"source": entry.source, "reason": entry.reason})
                self.ctx.log.warning("taxonomy leaf skipped: %s: %s", entry.source, entry.reason)
        self.total = len(self.entries)

    def check_input(self) -> InputCheck:
        """Read the taxonomy and its documents as ``run`` will, calling no endpoint."""
        try:
            entries = self.read_entries()
        except InputError as exc:
            return InputCheck.failed(exc)
        check = InputCheck()
        kinds: Counter[str] = Counter()
        chunks = 0
        for entry in entries:
            if isinstance(entry, Leaf):
                check.items_ok += 1
                kinds[entry.kind] += 1
                chunks += len(self._chunks(entry))
            else:
                check.items_bad += 1
                file, _, line = entry.source.rpartition(":")
                if not file or not line.isdigit():
                    file, line = entry.source, ""
                check.add_problem(file, int(line) if line else None, entry.reason)
        for note in self.notes:
            check.add_warning(note.file, note.line, note.message)
        check.details = {"leaves_by_kind": dict(sorted(kinds.items())), "knowledge_chunks": chunks}
        return check

    def work(self) -> Iterator[Item | BadInput]:
        """One item per leaf, in the taxonomy's sorted order (malformed leaves as BadInput)."""
        for index, entry in enumerate(self.entries):
            if isinstance(entry, BadInput):
                yield entry
            else:
                yield Item(
                    index=index, key=entry.path, data={"leaf": entry.path}, source=entry.file
                )

    # ---------------------------------------------------------------- helpers
    def _counts(self, leaf: Leaf) -> Counter[str]:
        return self.per_leaf.setdefault(leaf.path, Counter())

    def _seed(self, leaf: Leaf, *parts: object) -> int:
        return int(row_id("lab", self.ctx.seed, leaf.path, *parts)[:8], 16)

    def _failed(self, leaf: Leaf, unit: str, stage: str, exc: Exception, **extra: Any) -> RowOut:
        self._counts(leaf)["failed"] += 1
        self.failed_by_stage[stage] += 1
        err = exc if isinstance(exc, (EndpointError, ParseError)) else str(exc)
        return failed_row(
            self.name,
            leaf.path,
            source=leaf.file,
            stage=stage,
            error=err,
            unit=unit,
            leaf=leaf.path,
            kind=leaf.kind,
            phase=leaf.phase,
            **extra,
        )

    async def _gen(
        self, gen: Generate[Any], role: str, values: dict[str, Any], leaf: Leaf, unit: str
    ) -> Any:
        return await gen(self.ctx.callers[role], values, seed=self._seed(leaf, gen.name, unit))

    async def _many(
        self, gen: Generate[Any], jobs: list[tuple[str, dict[str, Any]]], leaf: Leaf
    ) -> list[tuple[str, Any]]:
        """Run generation ``jobs`` (unit, values) concurrently; failures become failed rows."""

        async def one(unit: str, values: dict[str, Any]) -> Any:
            try:
                return await self._gen(gen, "strong", values, leaf, unit)
            except (EndpointError, ParseError) as exc:
                return _Failed(self._failed(leaf, unit, gen.name, exc))

        results = await asyncio.gather(*(one(u, v) for u, v in jobs))
        return [(u, r) for (u, _), r in zip(jobs, results, strict=True)]

    def _row(self, leaf: Leaf, unit: str, cand: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": row_id(self.name, leaf.path, unit),
            "leaf": leaf.path,
            "kind": leaf.kind,
            "phase": leaf.phase,
            "question": cand["question"],
            "answer": cand.get("answer", ""),
        }
        if cand.get("context"):
            row["context"] = cand["context"]
        row["scores"] = cand.get("scores", {})
        if cand.get("rationales"):
            row["rationales"] = cand["rationales"]
        row["unit"] = unit
        row["source"] = leaf.file
        row["models"] = self.ctx.models()
        row["simulated"] = self.ctx.simulated
        return row

    async def _dedup(
        self, leaf: Leaf, cands: list[tuple[str, dict[str, Any]]], rows: list[RowOut]
    ) -> list[tuple[str, dict[str, Any]]]:
        seen = ExactDedup()
        unique: list[tuple[str, dict[str, Any]]] = []
        counts = self._counts(leaf)
        for unit, cand in cands:
            counts["generated"] += 1
            if seen.add(cand["question"]):
                unique.append((unit, cand))
            else:
                counts["dedup"] += 1
                rows.append(
                    (
                        "rejected",
                        {
                            **self._row(leaf, unit, cand),
                            "filter": "dedup",
                            "reason": "duplicate question",
                        },
                    )
                )
        if self.semantic is None or not unique:
            return unique
        verdicts = await self.semantic.check(
            [(row_id(self.name, leaf.path, unit), cand["question"]) for unit, cand in unique]
        )
        admitted: list[tuple[str, dict[str, Any]]] = []
        for (unit, cand), dup in zip(unique, verdicts, strict=True):
            if dup is None:
                admitted.append((unit, cand))
                continue
            counts[NEAR_DUPLICATE] += 1
            rows.append(
                (
                    "rejected",
                    {**self._row(leaf, unit, cand), "filter": NEAR_DUPLICATE, **dup.fields()},
                )
            )
        return admitted

    # ---------------------------------------------------------------- process
    async def process(self, item: Item) -> list[RowOut]:
        """All rows of one leaf."""
        leaf = self.leaves[item.key]
        self._counts(leaf)
        if self.cfg.pipeline == "simple":
            return await self._simple(leaf)
        if leaf.kind == "knowledge":
            return await self._knowledge(leaf)
        return await self._skill(leaf)

    def _skill_values(self, leaf: Leaf, i: int) -> dict[str, Any]:
        seed = leaf.skill_seeds[i % len(leaf.skill_seeds)]
        return {
            "task_description": leaf.task_description,
            "seed_question": seed.question,
            "seed_answer": seed.answer,
            "seed_context": seed.context,
            "context_block": "",
            "_seed": i % len(leaf.skill_seeds),
        }

    async def _skill(self, leaf: Leaf) -> list[RowOut]:
        cfg = self.cfg
        rows: list[RowOut] = []
        cands: list[tuple[str, dict[str, Any]]] = []
        if leaf.kind == "freeform_skill":
            jobs = [(f"q{i}", self._skill_values(leaf, i)) for i in range(cfg.num_samples)]
            for unit, res in await self._many(self.gen_questions, jobs, leaf):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                else:
                    cands.append(
                        (
                            unit,
                            {"question": res.question.strip(), "_seed": dict(jobs)[unit]["_seed"]},
                        )
                    )
        else:
            jobs = [(f"c{i}", self._skill_values(leaf, i)) for i in range(cfg.num_contexts)]
            contexts: list[tuple[str, str, int]] = []
            seen = ExactDedup()
            counts = self._counts(leaf)
            for unit, res in await self._many(self.gen_contexts, jobs, leaf):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                    continue
                counts["contexts_generated"] += 1
                if seen.add(res.context):
                    contexts.append((unit, res.context.strip(), int(dict(jobs)[unit]["_seed"])))
                else:
                    counts["contexts_duplicate"] += 1
            qjobs: list[tuple[str, dict[str, Any]]] = []
            for cunit, context, sidx in contexts:
                for j in range(cfg.grounded_questions):
                    values = self._skill_values(leaf, sidx + j)
                    qjobs.append((f"{cunit}.q{j}", {**values, "context": context}))
            for unit, res in await self._many(self.gen_grounded_questions, qjobs, leaf):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                else:
                    values = dict(qjobs)[unit]
                    cands.append(
                        (
                            unit,
                            {
                                "question": res.question.strip(),
                                "context": values["context"],
                                "_seed": values["_seed"],
                            },
                        )
                    )
        unique = await self._dedup(leaf, cands, rows)
        rows.extend(await asyncio.gather(*(self._skill_chain(leaf, u, c) for u, c in unique)))
        return rows

    async def _skill_chain(self, leaf: Leaf, unit: str, cand: dict[str, Any]) -> RowOut:
        values = self._skill_values(leaf, int(cand.pop("_seed")))
        context = cand.get("context", "")
        values |= {
            "question": cand["question"],
            "context": context,
            "context_block": f"Context:\n[Start of Context]\n{context}\n[End of Context]\n\n"
            if context
            else "",
        }
        values.pop("_seed")
        scores: dict[str, Any] = {}
        cand["scores"] = scores
        why = cand["rationales"] = {}  # each judge's explanation, beside its score
        stage = "eval_question"
        try:
            q = await self._gen(self.eval_question, "judge", values, leaf, unit)
            scores["question_check"] = q.score
            why["question_check"] = q.explanation
            if q.score != 1:
                raise _Drop("question_check", f"question_check={q.score}")
            stage = "gen_responses"
            answer = await self._gen(self.gen_responses, "strong", values, leaf, unit)
            cand["answer"] = answer
            stage = "eval_pair"
            p = await self._gen(self.eval_pair, "judge", {**values, "answer": answer}, leaf, unit)
            scores["pair_score"] = p.score
            why["pair_score"] = p.explanation
            if p.score < self.cfg.min_pair_score:
                raise _Drop("pair_check", f"pair_score={p.score}<{self.cfg.min_pair_score}")
        except _Drop as drop:
            return self._reject(leaf, unit, cand, drop)
        except (EndpointError, ParseError) as exc:
            return self._failed(leaf, unit, stage, exc, question=cand["question"])
        self._counts(leaf)["kept"] += 1
        return ("kept", self._row(leaf, unit, cand))

    def _reject(self, leaf: Leaf, unit: str, cand: dict[str, Any], drop: _Drop) -> RowOut:
        self._counts(leaf)[drop.filter] += 1
        return (
            "rejected",
            {**self._row(leaf, unit, cand), "filter": drop.filter, "reason": drop.reason},
        )

    def _chunks(self, leaf: Leaf) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for d, doc in enumerate(leaf.documents):
            for c, text in enumerate(chunk_markdown(doc.text, self.cfg.chunk_word_count)):
                out.append((f"d{d}.c{c}", text))
        return out

    def _icl(self, leaf: Leaf, i: int) -> dict[str, Any]:
        seed = leaf.knowledge_seeds[i % len(leaf.knowledge_seeds)]
        pairs = "\n".join(
            f"[QUESTION] {q} [ANSWER] {a} [END]" for q, a in seed.qa[: self.cfg.icl_pairs]
        )
        return {
            "domain": leaf.domain,
            "document_outline": leaf.document_outline,
            "icl_document": seed.context,
            "icl_pairs": pairs,
        }

    async def _knowledge(self, leaf: Leaf) -> list[RowOut]:
        cfg = self.cfg
        rows: list[RowOut] = []
        chunks = self._chunks(leaf)
        self._counts(leaf)["chunks"] += len(chunks)
        versions: list[tuple[str, str, int]] = [(u, t, i) for i, (u, t) in enumerate(chunks)]
        if cfg.spellcheck:
            jobs = [(u, {"document": t, "domain": leaf.domain}) for u, t in chunks]
            for i, (unit, res) in enumerate(await self._many(self.spellcheck, jobs, leaf)):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                elif normalize(res) != normalize(chunks[i][1]):
                    versions.append((f"{unit}.spell", res.strip(), i))
        gjobs: list[tuple[str, dict[str, Any]]] = [
            (f"{unit}.s{k}", {**self._icl(leaf, i), "document": text})
            for unit, text, i in versions
            for k in range(cfg.knowledge_samples)
        ]
        cands: list[tuple[str, dict[str, Any]]] = []
        for unit, res in await self._many(self.gen_knowledge, gjobs, leaf):
            if isinstance(res, _Failed):
                rows.append(res.row)
                continue
            document = dict(gjobs)[unit]["document"]
            for p, qa in enumerate(res.pairs):
                if qa.question.strip() and qa.answer.strip():
                    cands.append(
                        (
                            f"{unit}.p{p}",
                            {
                                "question": qa.question.strip(),
                                "answer": qa.answer.strip(),
                                "context": document,
                            },
                        )
                    )
        unique = await self._dedup(leaf, cands, rows)
        rows.extend(await asyncio.gather(*(self._knowledge_chain(leaf, u, c) for u, c in unique)))
        return rows

    async def _knowledge_chain(self, leaf: Leaf, unit: str, cand: dict[str, Any]) -> RowOut:
        values = {
            "document": cand["context"],
            "question": cand["question"],
            "answer": cand["answer"],
            "domain": leaf.domain,
        }
        scores: dict[str, Any] = {}
        cand["scores"] = scores
        why = cand["rationales"] = {}  # each judge's explanation, beside its score
        stage = "eval_faithfulness"
        try:
            f = await self._gen(self.eval_faithfulness, "judge", values, leaf, unit)
            scores["faithfulness"] = f.score
            why["faithfulness"] = f.explanation
            if f.score != "YES":
                raise _Drop("faithfulness", f"faithfulness={f.score}")
            stage = "eval_relevancy"
            r = await self._gen(self.eval_relevancy, "judge", values, leaf, unit)
            scores["relevancy"] = r.score
            why["relevancy"] = r.explanation
            if r.score != 2:
                raise _Drop("relevancy", f"relevancy={r.score}<2")
            stage = "eval_verify_question"
            v = await self._gen(self.eval_verify_question, "judge", values, leaf, unit)
            scores["self_contained"] = v.score
            why["self_contained"] = v.explanation
            if v.score != 1:
                raise _Drop("self_contained", f"self_contained={v.score}")
        except _Drop as drop:
            return self._reject(leaf, unit, cand, drop)
        except (EndpointError, ParseError) as exc:
            return self._failed(leaf, unit, stage, exc, question=cand["question"])
        self._counts(leaf)["kept"] += 1
        return ("kept", self._row(leaf, unit, cand))

    async def _simple(self, leaf: Leaf) -> list[RowOut]:
        n = self.cfg.num_instructions_to_generate
        rows: list[RowOut] = []
        jobs: list[tuple[str, dict[str, Any]]] = []
        contexts: dict[str, str] = {}
        if leaf.kind == "knowledge":
            chunks = self._chunks(leaf)
            self._counts(leaf)["chunks"] += len(chunks)
            for i in range(n if chunks else 0):
                _, text = chunks[i % len(chunks)]
                jobs.append((f"s{i}", {**self._icl(leaf, i), "document": text}))
                contexts[f"s{i}"] = text
            gen = self.simple_knowledge
        else:
            for i in range(n):
                values = self._skill_values(leaf, i)
                values.pop("_seed")
                ctx = str(values["seed_context"])
                if ctx:
                    values["context_block"] = (
                        f"Context:\n[Start of Context]\n{ctx}\n[End of Context]\n\n"
                    )
                    contexts[f"s{i}"] = ctx
                jobs.append((f"s{i}", {**values, "context": ctx}))
            gen = self.simple_skill
        cands: list[tuple[str, dict[str, Any]]] = []
        for unit, res in await self._many(gen, jobs, leaf):
            if isinstance(res, _Failed):
                rows.append(res.row)
                continue
            cand: dict[str, Any] = {"question": res.question.strip(), "answer": res.answer.strip()}
            if unit in contexts:
                cand["context"] = contexts[unit]
            cands.append((unit, cand))
        for unit, cand in await self._dedup(leaf, cands, rows):
            self._counts(leaf)["kept"] += 1
            rows.append(("kept", self._row(leaf, unit, cand)))
        return rows

    # --------------------------------------------------------------- finalize
    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        """Write the phase sets (``knowledge.jsonl``, ``skills.jsonl``) and ``mixed.jsonl``."""
        kept = sorted(iter_rows(out_dir, "kept"), key=lambda r: (r["phase"], r["leaf"], r["id"]))
        samples = [training_sample(r) for r in kept]
        sets = {
            "knowledge.jsonl": [s for s in samples if s["phase"] == "knowledge"],
            "skills.jsonl": [s for s in samples if s["phase"] == "skills"],
            "mixed.jsonl": mix_rows(samples, self.cfg.mix, seed=self.ctx.seed),
        }
        out: list[DerivedFile] = []
        for name, rows in sets.items():
            self.derived_counts[name] = len(rows)
            out.append(write_jsonl_atomic(out_dir / name, rows))
        return out

    def report(self) -> dict[str, Any]:
        """Counts per leaf and per filter (generated, dropped by each check, kept, failed)."""
        by_filter: Counter[str] = Counter()
        leaves: dict[str, Any] = {}
        for path in sorted(self.per_leaf):
            counts = self.per_leaf[path]
            leaf = self.leaves[path]
            dropped = {f: counts.get(f, 0) for f in self.filters}
            by_filter.update(dropped)
            entry: dict[str, Any] = {
                "kind": leaf.kind,
                "generated": counts.get("generated", 0),
                "dropped": dropped,
                "kept": counts.get("kept", 0),
                "failed": counts.get("failed", 0),
            }
            for extra in ("contexts_generated", "contexts_duplicate", "chunks"):
                if extra in counts:
                    entry[extra] = counts[extra]
            leaves[path] = entry
        out: dict[str, Any] = {
            "pipeline": self.cfg.pipeline,
            "leaves_total": len(self.entries),
            "leaves_bad": self.bad_leaves,
            "leaves_not_read": [msgspec.to_builtins(n) for n in self.notes],
            "per_leaf": leaves,
            "generated": sum(e["generated"] for e in leaves.values()),
            "dropped_by_filter": {f: by_filter.get(f, 0) for f in self.filters},
            "kept": sum(e["kept"] for e in leaves.values()),
            "failed_by_stage": dict(self.failed_by_stage),
            "derived": dict(self.derived_counts),
            "note": "counts cover the items processed by this invocation (resumed items are skipped)",
        }
        if self.semantic is not None:
            out["semantic_dedup"] = self.semantic.report()
        return out


class _Failed:
    __slots__ = ("row",)

    def __init__(self, row: RowOut) -> None:
        self.row = row


def _nonempty(stage: str) -> Any:
    def parse(text: str) -> str:
        out = text.strip()
        if not out:
            raise ParseError("empty reply", stage=stage)
        return out

    return parse


def _first_qa(stage: str) -> Any:
    def parse(text: str) -> _QA:
        pairs = parse_qa_blocks(text, stage=stage)
        if not pairs:
            raise ParseError("no [QUESTION] ... [ANSWER] ... [END] block", stage=stage)
        return _QA(*pairs[0])

    return parse
