"""LAB (InstructLab SDG, arXiv 2403.01081): taxonomy-driven generation with teacher-as-critic.

Spec: shared methods.md section 4. One work item per taxonomy leaf (``qna.yaml``); each
leaf is prompted only with its own seed examples (taxonomy-driven sampling).

``pipeline = "full"``:

* freeform skills: ``gen_questions`` (one call per seed example asking for a set of
  ``num_samples`` questions, parsed as a list, as SDG does) -> exact dedup ->
  ``eval_question`` (0/1, keep == 1) -> ``gen_responses`` -> ``eval_pair`` (1-3, keep >=
  ``min_pair_score``).
* grounded skills: ``gen_contexts`` (``num_contexts`` per seed example, deduplicated) ->
  ``gen_grounded_questions`` (one call per context asking for a set of
  ``grounded_questions``) -> the same checks and responses, with the context shown; the
  training user turn is context + question.
* knowledge: documents chunked by words (``chunk_word_count``), optionally a spell-corrected
  copy of every chunk (both used) -> ``gen_knowledge`` (``[QUESTION]...[ANSWER]...[END]``
  blocks) -> exact dedup -> ``eval_faithfulness`` (YES/NO, keep YES) -> ``eval_relevancy``
  (0-2, keep == 2) -> ``eval_verify_question`` (0/1, keep == 1).

``pipeline = "simple"``: ``num_instructions_to_generate`` question/answer generations per
leaf at ``temperature`` and exact dedup on the question; no judge.

With ``[method.lab.semantic_dedup] enabled = true``, questions that pass exact dedup are
also checked against every question admitted so far in the run (all leaves): a near
duplicate becomes a rejected row with filter ``near_duplicate`` before any judge call.

Every judge's rationale is kept on the row (``checks``: one entry per check applied,
rule or judge, with its score and rationale). ``finalize`` writes InstructLab's phase sets
``knowledge.jsonl`` and ``skills.jsonl`` and ``mixed.jsonl`` (the recipe of
``[method.lab.mix]``) from the committed kept rows (:mod:`engine.methods.lab_mix`).

Determinism: every generation sends a ``seed`` derived from the run seed, the leaf and the
sample's position, dedup runs in generation order after all samples of a step are back,
and mixing draws from ``random.Random`` seeded by the run seed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..config import Base
from ..dedup.semantic import REASON as NEAR_DUPLICATE
from ..dedup.semantic import SemanticDedupConfig, semantic_dedup
from ..errors import EndpointError, InputError, ParseError
from ..filters import ExactDedup, normalize
from ..io.derived import DerivedFile, write_jsonl_atomic
from ..io.knowledge import KnowledgeSettings, chunk_markdown, load_documents
from ..io.shards import iter_rows
from ..io.taxonomy import Leaf, Problem, read_taxonomy
from ..records import BadInput, Item, RowOut, row_id
from ..stages import Generate, check_templates
from . import prompts_lab as P
from .base import (
    Column,
    InputCheck,
    MethodContext,
    RowSchema,
    bad_input_reason,
    failed_row,
    items_for_schema,
)
from .lab_mix import LabMix, mix_rows, phase_sets, sample_rows, training_sample
from .lab_parsers import (
    Binary,
    Context,
    PairScore,
    QAList,
    QAPair,
    Questions,
    Relevancy,
    YesNo,
    binary,
    chunk_words,
    first_qa,
    nonempty,
    parse_judge_score,
    parse_qa_blocks,
    parse_tagged,
    parse_yes_no,
    questions_schema,
)

__all__ = (
    "COLUMNS",
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


class LabConfig(Base, frozen=True):
    """``[method.lab]`` — defaults are InstructLab SDG's (``full`` pipeline).

    Attributes:
        pipeline: ``full`` (generation + teacher-as-critic filters) or ``simple``.
        taxonomy: taxonomy root directory, relative to the config file (default:
            ``run.input``, which names the taxonomy directory; a file there means its
            directory).
        num_samples: questions asked for in one gen_questions call, one call per seed
            example (SDG freeform_skills.yaml batch_kwargs num_samples: 30).
        num_contexts: contexts generated per seed example of a grounded leaf (SDG
            gen_contexts: n=10 per seed row).
        grounded_questions: questions asked for in one call per context (SDG
            gen_grounded_questions num_samples: 3).
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
        mix: the phase sets (system turn, RAFT, skills per leaf, auxiliary instructions)
            and the ``mixed.jsonl`` recipe.
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


# ---------------------------------------------------------------------- method
class _Drop(Exception):
    def __init__(self, filter_name: str, reason: str) -> None:
        super().__init__(reason)
        self.filter = filter_name
        self.reason = reason


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
    Column("error_kind", str, "f", doc="the error's class"),
    Column("error", str, "f", doc="the error's message"),
    Column("models", dict, doc="role -> model"),
    Column("simulated", bool, doc="written by the simulated endpoint"),
)
"""The row schema: every kept, rejected and failed row has these columns."""


def _check(name: str, score: float, passed: bool, rationale: str = "") -> dict[str, Any]:
    return {"check": name, "score": float(score), "passed": passed, "rationale": rationale}


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
        self.row_schema = RowSchema(
            self.name,
            COLUMNS,
            common=lambda: {"models": ctx.models(), "simulated": ctx.simulated},
        )

        def step(
            name: str,
            depth: int,
            schema: Any,
            parse: Any,
            params: dict[str, Any],
            wire: dict[str, Any] | None = None,
        ) -> Any:
            return Generate(
                name,
                depth=depth,
                template=getattr(t, name),
                system=system,
                schema=schema,
                parse_text=parse,
                params=params,
                observer_for=obs,
                wire_schema=wire,
            )

        def first_tag(start: str, end: str, name: str, wrap: Any) -> Any:
            return lambda s: wrap(parse_tagged(s, start, end, stage=name)[0])

        def all_tags(name: str) -> Any:
            return lambda s: Questions(
                parse_tagged(s, "[Start of Question]", "[End of Question]", stage=name)
            )

        self.gen_questions: Generate[Questions] = step(
            "gen_questions",
            0,
            Questions,
            all_tags("gen_questions"),
            gen,
            questions_schema(cfg.num_samples),
        )
        self.gen_contexts: Generate[Context] = step(
            "gen_contexts",
            0,
            Context,
            first_tag("[Start of Context]", "[End of Context]", "gen_contexts", Context),
            gen,
        )
        self.gen_grounded_questions: Generate[Questions] = step(
            "gen_grounded_questions",
            1,
            Questions,
            all_tags("gen_grounded_questions"),
            gen,
            questions_schema(cfg.grounded_questions),
        )
        self.eval_question: Generate[Binary] = step(
            "eval_question", 2, Binary, lambda s: binary(s, "eval_question"), judge
        )

        def text_step(name: str, depth: int, template: str) -> Generate[str]:
            return Generate(
                name,
                depth=depth,
                template=template,
                system=system,
                schema=None,
                parse_text=nonempty(name),
                params=resp,
                observer_for=obs,
            )

        self.gen_responses = text_step("gen_responses", 3, t.gen_responses)
        self.eval_pair: Generate[PairScore] = step(
            "eval_pair",
            4,
            PairScore,
            lambda s: PairScore(
                explanation=s.strip(), score=parse_judge_score(s, low=1, high=3, stage="eval_pair")
            ),
            judge,
        )
        self.spellcheck = text_step("spellcheck", 0, t.spellcheck)
        self.gen_knowledge: Generate[QAList] = step(
            "gen_knowledge",
            1,
            QAList,
            lambda s: QAList([QAPair(q, a) for q, a in parse_qa_blocks(s)]),
            gen,
        )
        self.eval_faithfulness: Generate[YesNo] = step(
            "eval_faithfulness",
            2,
            YesNo,
            lambda s: YesNo(explanation=s.strip(), score=parse_yes_no(s)),  # type: ignore[arg-type]
            judge,
        )
        self.eval_relevancy: Generate[Relevancy] = step(
            "eval_relevancy",
            3,
            Relevancy,
            lambda s: Relevancy(
                explanation=s.strip(),
                score=parse_judge_score(s, low=0, high=2, stage="eval_relevancy"),
            ),
            judge,
        )
        self.eval_verify_question: Generate[Binary] = step(
            "eval_verify_question", 4, Binary, lambda s: binary(s, "eval_verify_question"), judge
        )
        self.simple_skill: Generate[QAPair] = step(
            "simple_skill", 0, QAPair, first_qa("simple_skill"), gen
        )
        self.simple_knowledge: Generate[QAPair] = step(
            "simple_knowledge", 0, QAPair, first_qa("simple_knowledge"), gen
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
        """One item per leaf, in the taxonomy's sorted order (a refused leaf is an item
        too, answered with a failed row in the method's schema)."""
        return items_for_schema(self._leaf_items())

    def _leaf_items(self) -> Iterator[Item | BadInput]:
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

    def _where(self, leaf: Leaf, unit: str) -> dict[str, Any]:
        return {
            "id": row_id(self.name, leaf.path, unit),
            "seed_id": leaf.path,
            "source": leaf.file,
            "leaf": leaf.path,
            "kind": leaf.kind,
            "phase": leaf.phase,
            "unit": unit,
        }

    def _failed(self, leaf: Leaf, unit: str, stage: str, exc: Exception, **extra: Any) -> RowOut:
        self._counts(leaf)["failed"] += 1
        self.failed_by_stage[stage] += 1
        err = exc if isinstance(exc, (EndpointError, ParseError)) else str(exc)
        _, row = failed_row(
            self.name,
            leaf.path,
            source=leaf.file,
            stage=stage,
            error=err,
            unit=unit,
            leaf=leaf.path,
            kind=leaf.kind,
            phase=leaf.phase,
        )
        return self.row_schema.row("failed", {**row, **extra})

    async def _gen(
        self,
        gen: Generate[Any],
        role: str,
        values: dict[str, Any],
        leaf: Leaf,
        unit: str,
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
        return {
            **self._where(leaf, unit),
            "question": cand["question"],
            "answer": cand.get("answer", ""),
            "context": cand.get("context", ""),
            "raw_document": cand.get("raw_document", ""),
            "dataset_type": cand.get("dataset_type", ""),
            "checks": cand.setdefault("checks", []),
        }

    async def _dedup(
        self, leaf: Leaf, cands: list[tuple[str, dict[str, Any]]], rows: list[RowOut]
    ) -> list[tuple[str, dict[str, Any]]]:
        seen = ExactDedup()
        unique: list[tuple[str, dict[str, Any]]] = []
        counts = self._counts(leaf)
        for unit, cand in cands:
            counts["generated"] += 1
            if seen.add(cand["question"]):
                cand["checks"] = [_check("dedup", 1.0, True)]
                unique.append((unit, cand))
            else:
                counts["dedup"] += 1
                cand["checks"] = [_check("dedup", 0.0, False, "duplicate question")]
                rows.append(
                    self.row_schema.row(
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
            cand["checks"].append(
                _check(
                    NEAR_DUPLICATE,
                    round(dup.similarity, 4),
                    False,
                    f"near duplicate of {dup.duplicate_of}",
                )
            )
            rows.append(
                self.row_schema.row(
                    "rejected",
                    {
                        **self._row(leaf, unit, cand),
                        "filter": NEAR_DUPLICATE,
                        "reason": NEAR_DUPLICATE,
                        **dup.fields(),
                    },
                )
            )
        return admitted

    # ---------------------------------------------------------------- process
    async def process(self, item: Item) -> list[RowOut]:
        """All rows of one leaf."""
        bad = bad_input_reason(item)
        if bad is not None:
            self.failed_by_stage["input"] += 1
            return [self.row_schema.failed(item.key, source=item.source, stage="input", error=bad)]
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
        seeds = range(len(leaf.skill_seeds))
        if leaf.kind == "freeform_skill":
            # As SDG: one call per seed example, asking for a set of num_samples questions.
            jobs = [
                (f"s{i}", {**self._skill_values(leaf, i), "num_samples": cfg.num_samples})
                for i in seeds
            ]
            for unit, res in await self._many(self.gen_questions, jobs, leaf):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                    continue
                sidx = dict(jobs)[unit]["_seed"]
                for k, question in enumerate(res.questions[: cfg.num_samples]):
                    if question.strip():
                        cands.append(
                            (f"{unit}.q{k}", {"question": question.strip(), "_seed": sidx})
                        )
        else:
            # As SDG: num_contexts contexts per seed example (its n=10), then one call per
            # context asking for a set of grounded_questions questions.
            jobs = [
                (f"s{i}.c{j}", self._skill_values(leaf, i))
                for i in seeds
                for j in range(cfg.num_contexts)
            ]
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
            qjobs: list[tuple[str, dict[str, Any]]] = [
                (
                    cunit,
                    {
                        **self._skill_values(leaf, sidx),
                        "context": context,
                        "num_samples": cfg.grounded_questions,
                    },
                )
                for cunit, context, sidx in contexts
            ]
            for unit, res in await self._many(self.gen_grounded_questions, qjobs, leaf):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                    continue
                values = dict(qjobs)[unit]
                for k, question in enumerate(res.questions[: cfg.grounded_questions]):
                    if question.strip():
                        cands.append(
                            (
                                f"{unit}.q{k}",
                                {
                                    "question": question.strip(),
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
        checks: list[dict[str, Any]] = cand["checks"]
        stage = "eval_question"
        try:
            q = await self._gen(self.eval_question, "judge", values, leaf, unit)
            checks.append(_check("question_check", q.score, q.score == 1, q.explanation))
            if q.score != 1:
                raise _Drop("question_check", f"question_check={q.score}")
            stage = "gen_responses"
            answer = await self._gen(self.gen_responses, "strong", values, leaf, unit)
            cand["answer"] = answer
            stage = "eval_pair"
            p = await self._gen(self.eval_pair, "judge", {**values, "answer": answer}, leaf, unit)
            ok = p.score >= self.cfg.min_pair_score
            checks.append(_check("pair_check", p.score, ok, p.explanation))
            if not ok:
                raise _Drop("pair_check", f"pair_score={p.score}<{self.cfg.min_pair_score}")
        except _Drop as drop:
            return self._reject(leaf, unit, cand, drop)
        except (EndpointError, ParseError) as exc:
            return self._failed(leaf, unit, stage, exc, question=cand["question"])
        self._counts(leaf)["kept"] += 1
        return self.row_schema.row("kept", self._row(leaf, unit, cand))

    def _reject(self, leaf: Leaf, unit: str, cand: dict[str, Any], drop: _Drop) -> RowOut:
        self._counts(leaf)[drop.filter] += 1
        return self.row_schema.row(
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
        # (unit, text used, chunk index, dataset_type): SDG's flattened document columns
        versions: list[tuple[str, str, int, str]] = [
            (u, t, i, "base_document") for i, (u, t) in enumerate(chunks)
        ]
        if cfg.spellcheck:
            jobs = [(u, {"document": t, "domain": leaf.domain}) for u, t in chunks]
            for i, (unit, res) in enumerate(await self._many(self.spellcheck, jobs, leaf)):
                if isinstance(res, _Failed):
                    rows.append(res.row)
                elif normalize(res) != normalize(chunks[i][1]):
                    versions.append((f"{unit}.spell", res.strip(), i, "spellcheck"))
        gjobs: list[tuple[str, dict[str, Any]]] = [
            (f"{unit}.s{k}", {**self._icl(leaf, i), "document": text, "_v": (i, kind)})
            for unit, text, i, kind in versions
            for k in range(cfg.knowledge_samples)
        ]
        cands: list[tuple[str, dict[str, Any]]] = []
        for unit, res in await self._many(self.gen_knowledge, gjobs, leaf):
            if isinstance(res, _Failed):
                rows.append(res.row)
                continue
            values = dict(gjobs)[unit]
            chunk_index, kind = values["_v"]
            for p, qa in enumerate(res.pairs):
                if qa.question.strip() and qa.answer.strip():
                    cands.append(
                        (
                            f"{unit}.p{p}",
                            {
                                "question": qa.question.strip(),
                                "answer": qa.answer.strip(),
                                "context": values["document"],
                                "raw_document": chunks[chunk_index][1],
                                "dataset_type": kind,
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
        checks: list[dict[str, Any]] = cand["checks"]
        stage = "eval_faithfulness"
        try:
            f = await self._gen(self.eval_faithfulness, "judge", values, leaf, unit)
            yes = f.score == "YES"
            checks.append(_check("faithfulness", 1.0 if yes else 0.0, yes, f.explanation))
            if not yes:
                raise _Drop("faithfulness", f"faithfulness={f.score}")
            stage = "eval_relevancy"
            r = await self._gen(self.eval_relevancy, "judge", values, leaf, unit)
            checks.append(_check("relevancy", r.score, r.score == 2, r.explanation))
            if r.score != 2:
                raise _Drop("relevancy", f"relevancy={r.score}<2")
            stage = "eval_verify_question"
            v = await self._gen(self.eval_verify_question, "judge", values, leaf, unit)
            checks.append(_check("self_contained", v.score, v.score == 1, v.explanation))
            if v.score != 1:
                raise _Drop("self_contained", f"self_contained={v.score}")
        except _Drop as drop:
            return self._reject(leaf, unit, cand, drop)
        except (EndpointError, ParseError) as exc:
            return self._failed(leaf, unit, stage, exc, question=cand["question"])
        self._counts(leaf)["kept"] += 1
        return self.row_schema.row("kept", self._row(leaf, unit, cand))

    async def _simple(self, leaf: Leaf) -> list[RowOut]:
        n = self.cfg.num_instructions_to_generate
        rows: list[RowOut] = []
        jobs: list[tuple[str, dict[str, Any]]] = []
        contexts: dict[str, tuple[str, str]] = {}
        if leaf.kind == "knowledge":
            chunks = self._chunks(leaf)
            self._counts(leaf)["chunks"] += len(chunks)
            for i in range(n if chunks else 0):
                _, text = chunks[i % len(chunks)]
                jobs.append((f"s{i}", {**self._icl(leaf, i), "document": text}))
                contexts[f"s{i}"] = (text, "base_document")
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
                    contexts[f"s{i}"] = (ctx, "")
                jobs.append((f"s{i}", {**values, "context": ctx}))
            gen = self.simple_skill
        cands: list[tuple[str, dict[str, Any]]] = []
        for unit, res in await self._many(gen, jobs, leaf):
            if isinstance(res, _Failed):
                rows.append(res.row)
                continue
            cand: dict[str, Any] = {"question": res.question.strip(), "answer": res.answer.strip()}
            if unit in contexts:
                text, kind = contexts[unit]
                cand["context"] = text
                if kind:
                    cand["raw_document"] = text
                    cand["dataset_type"] = kind
            cands.append((unit, cand))
        for unit, cand in await self._dedup(leaf, cands, rows):
            self._counts(leaf)["kept"] += 1
            rows.append(self.row_schema.row("kept", self._row(leaf, unit, cand)))
        return rows

    # --------------------------------------------------------------- finalize
    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        """Write InstructLab's phase sets (``knowledge.jsonl``, ``skills.jsonl``) and
        ``mixed.jsonl`` (:func:`engine.methods.lab_mix.phase_sets`)."""
        kept = sorted(iter_rows(out_dir, "kept"), key=lambda r: (r["phase"], r["leaf"], r["id"]))
        out: list[DerivedFile] = []
        for name, rows in phase_sets(kept, self.cfg.mix, seed=self.ctx.seed).items():
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
