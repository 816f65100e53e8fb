"""SELF-GUIDE (Zhao et al., COLM 2024): a student model writes new inputs for one task,
then labels them itself with a self-consistency vote; rule filters clean both stages.

Pipeline (spec: shared methods.md section 3; reference code ``vllm_prompt_based.py``),
on the public method API (:class:`engine.Method`):

1. ``prepare``: ``generation_rounds`` rounds of ``per_round`` prompts, the input filters
   and the pool each round samples from (:mod:`.rounds`, :mod:`.prompts`, :mod:`.rules`).
2. ``work``: one item per accepted input, then one per dropped candidate.
3. ``process``: an accepted input gets ``annotate_n`` samples (:mod:`.student`), the
   output filters, a vote over whole outputs and, in classification mode, the label
   mapping (:class:`.rules.Annotation`) -> one kept or rejected row; a dropped candidate
   becomes a rejected row with its filter and reason, so every candidate is accounted for.
   Rows are Structs per kind (:mod:`.rows`).
4. ``finalize`` (classification): ``balanced.jsonl`` downsamples every label to the
   smallest class, and ``balanced_dropped.jsonl`` lists what that dropped.

Determinism: every random choice comes from ``random.Random`` seeded by the run seed and
its identity (``selfguide:{seed}:round:{r}:prompt:{j}``), and every call replays from the
cache, so a resume rebuilds the same pool and the same rows.

The task file (``run.input``) may be this engine's format, the reference's task list or a
Natural-Instructions task (:mod:`engine.io.tasks`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from ...config import Config as RunConfig
from ...dedup.semantic import SemanticDedup, semantic_dedup
from ...errors import EndpointError, InputError
from ...filters import balance_classes
from ...io.derived import DerivedFile, write_jsonl_atomic
from ...io.shards import iter_rows
from ...io.tasks import LoadedTask, Task, read_task
from ...records import BadInput, Item, row_id
from ..base import InputCheck, RowSchema
from ..custom import Context, Failed, Kept, Method, Rejected, TypedRow
from .config import (
    Sampling,
    SelfGuideConfig,
    Settings,
    check_options,
    sampling_for,
    sends_extensions,
    settings_for,
)
from .prompts import Chat, Prompter
from .report import AnnotationCounts, AnnotationReport, Balance, SelfGuideReport, input_totals
from .rounds import Rounds, input_filter_names
from .rows import COLUMNS, FailedRow, KeptRow, Origin, RejectedRow, WorkItem
from .rules import Annotation, InputFilters, Voted, noise_phrases
from .student import Student

__all__ = ("SelfGuideMethod",)


class _Parts:
    """What a run builds from its context and task: the pieces of the pipeline."""

    def __init__(self, method: SelfGuideMethod, ctx: Context, loaded: LoadedTask) -> None:
        cfg = method.cfg
        self.loaded = loaded
        self.task = loaded.task
        self.settings = settings_for(cfg, self.task.type)
        self.filters = InputFilters(cfg, self.task, self.settings)
        self.prompter = Prompter(cfg, self.task, seed=ctx.seed, log=ctx.log)
        self.annotation = Annotation(cfg, self.task, self.filters)
        self.student = Student(cfg, ctx, sampling_for(cfg, extensions=method.extensions))


class SelfGuideMethod(Method):
    """The SELF-GUIDE method (see the module docstring).

    Attributes:
        cfg: the ``[method.selfguide]`` options.
        row_schema: the columns of every row (the engine's failed rows share them).
        warnings: what was read differently than the user may expect.
        extensions: whether ``top_k``/``best_of`` are sent.
        semantic: the near-duplicate filter of generated inputs (None: off).
        rounds: the generation rounds of this run (after ``prepare``).
        counts: what the annotation made of the items this invocation processed.
    """

    name = "selfguide"
    Config = SelfGuideConfig
    records_input = False  # its input is a task file, not JSONL records
    global_phase = True  # the generation rounds run over the whole task before any item
    provenance_columns = False  # its row schema has its own seed_id and source

    def __init__(self, options: SelfGuideConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or SelfGuideConfig()
        self.row_schema = RowSchema(self.name, COLUMNS, common=self._common)
        self.ctx: Context | None = None
        self.warnings: list[str] = []
        self.extensions = True
        self.semantic: SemanticDedup | None = None
        self.loaded: LoadedTask | None = None
        self.rounds: Rounds | None = None
        self.counts = AnnotationCounts()
        self.balance: Balance | None = None
        self._parts: _Parts | None = None

    @classmethod
    def check_options(cls, options: object, config: RunConfig) -> None:
        """Template variables, ``best_of`` against ``n``, the ``dedup`` extra (file, line
        and key)."""
        assert isinstance(options, SelfGuideConfig)
        check_options(options, config)

    # ---------------------------------------------------------------- binding
    def bind(self, ctx: Context) -> None:
        """Set the method up for the run of ``ctx``: the sampling extensions, semantic
        dedup, the task file, the filters. ``prepare``, ``work``, ``process``,
        ``finalize`` and ``check_input`` call it; only the first call does the work (the
        engine makes a method for each run and gives it that run's one context).

        Raises:
            InputError: the task file is missing or malformed (a later call reads again).
            ConfigError: semantic dedup is on without its extra.
            RuntimeError: ``ctx`` is another run's context.
        """
        if self.ctx is not ctx:
            if self.ctx is not None:
                raise RuntimeError("a SelfGuideMethod serves one run: make another")
            # No rebuild from committed rows: prepare() replays every round from the cache.
            self.semantic = semantic_dedup(
                self.cfg.semantic_dedup, ctx.config, method=self.name, logger=ctx.log
            )
            self.extensions, warning = sends_extensions(self.cfg, ctx.config)
            if warning:
                self._warn(ctx, warning)
            self.ctx = ctx
        if self._parts is not None:
            return
        if self.loaded is None:
            cfg = self.cfg
            self.loaded = read_task(
                ctx.input_path, name=cfg.task, task_type=cfg.task_type, labels=cfg.labels
            )
            for note in self.loaded.notes:
                self._warn(ctx, note)
        parts = _Parts(self, ctx, self.loaded)
        for warning in parts.filters.warnings:
            self._warn(ctx, warning)
        self._parts = parts

    def _bound(self, ctx: Context) -> _Parts:
        self.bind(ctx)
        assert self._parts is not None
        return self._parts

    def _warn(self, ctx: Context, message: str) -> None:
        self.warnings.append(message)
        ctx.log.warning("selfguide: %s", message)

    def _common(self) -> dict[str, object]:
        """Columns the engine's failed rows take from the run (models, simulated)."""
        if self.ctx is None:
            return {}
        return {"models": self.ctx.models(), "simulated": self.ctx.simulated}

    # ------------------------------------------------------- what it computed
    @property
    def task(self) -> Task:
        """The task (read on first use).

        Raises:
            RuntimeError: the method is not bound to a run yet.
        """
        return self._need().task

    def _need(self) -> _Parts:
        if self._parts is None:
            if self.ctx is None:
                raise RuntimeError("selfguide: bind(ctx) before asking for the task")
            return self._bound(self.ctx)
        return self._parts

    @property
    def classification(self) -> bool:
        """Whether the task is a classification task."""
        return self._parts is not None and self._parts.task.type == "classification"

    def settings(self) -> Settings:
        """The effective per-task-type settings (None options resolved)."""
        return self._need().settings

    def sampling(self) -> Sampling:
        """The sampling extensions in use (None: not sent)."""
        return sampling_for(self.cfg, extensions=self.extensions)

    def generation_messages(
        self, round_no: int, prompt: int, pool: list[str]
    ) -> tuple[Chat, str | None]:
        """The input-generation chat of one prompt and the label it asks for."""
        return self._need().prompter.generation(round_no, prompt, pool)

    @property
    def prompts_over_budget(self) -> int:
        """Prompts no sample of the pool brought under ``context_tokens``."""
        return self._parts.prompter.over_budget if self._parts else 0

    @property
    def prompts_without_low_quality(self) -> int:
        """Of those, the prompts sent without the low-quality section."""
        return self._parts.prompter.without_low_quality if self._parts else 0

    # ------------------------------------------------------------------ input
    def check_input(self, ctx: Context) -> InputCheck:
        """Read the task file as ``run`` will (one usable item: the task)."""
        try:
            parts = self._bound(ctx)
        except InputError as exc:
            return InputCheck.failed(exc)
        task = parts.task
        check = InputCheck(items_ok=1)
        for w in self.warnings:
            check.add_warning(str(ctx.input_path), None, w)
        check.details = {
            "task": task.name,
            "format": parts.loaded.format,
            "type": task.type,
            "labels": list(task.labels),
            "examples": len(task.examples),
            "noise_phrases": len(noise_phrases(self.cfg, task)),
        }
        return check

    # ---------------------------------------------------------------- prepare
    async def prepare(self, ctx: Context) -> None:
        """Read the task file, then run the generation rounds one after the other.

        Raises:
            InputError: the task file is missing or malformed.
            EndpointError: a generation call failed; the run stops (resumable) rather than
                build a pool that a rerun would build differently.
        """
        parts = self._bound(ctx)
        if self.semantic is not None:
            self.semantic.warm_up()
        self.rounds = Rounds(
            self.cfg,
            parts.task,
            prompter=parts.prompter,
            filters=parts.filters,
            student=parts.student,
            semantic=self.semantic,
            temperature=parts.settings["generation_temperature"],
            method=self.name,
        )
        await self.rounds.run()

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """Accepted inputs (annotated), then dropped candidates (as rejected rows)."""
        if self.rounds is None:
            return
        index = 0
        for kind, cands in (("input", self.rounds.accepted), ("dropped", self.rounds.dropped)):
            for c in cands:
                yield Item(
                    index=index,
                    key=c.key,
                    data={"kind": kind, **msgspec.structs.asdict(c)},
                    source=f"round:{c.round}:prompt:{c.prompt}",
                )
                index += 1

    # ---------------------------------------------------------------- process
    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """Annotate and vote one accepted input, or emit one dropped candidate."""
        parts = self._bound(ctx)
        work = msgspec.convert(item.data, WorkItem)
        origin: Origin = {
            "seed_id": item.key,
            "source": item.source,
            "task": parts.task.name,
            "instruction": parts.task.instruction,
            "input": work.text,
            "round": work.round,
            "prompt": work.prompt,
            "requested_label": work.label if self.classification else None,
            "models": ctx.models(),
            "simulated": ctx.simulated,
        }
        row_key = row_id(self.name, item.key)
        if work.kind == "dropped":
            assert work.filter is not None and work.reason is not None
            dropped = RejectedRow(
                id=row_key,
                **origin,
                samples=[work.raw or work.text],
                filter=work.filter,
                reason=work.reason,
                similarity=work.similarity or 0.0,
                duplicate_of=work.duplicate_of or "",
                stage="input",
            )
            return [Rejected(dropped, reason=dropped.reason)]
        try:
            samples = await parts.student.annotate(parts.prompter.annotation(work.text), item.key)
        except EndpointError as exc:
            self.counts.failed += 1
            failed = FailedRow(
                id=row_id(self.name, item.key, "annotate", "failed"),
                **origin,
                stage="annotate",
                error_kind=exc.kind,
                error=str(exc),
            )
            return [Failed(failed.stage, failed.error, data=failed)]
        verdict = parts.annotation.decide(samples, origin["requested_label"])
        if not isinstance(verdict, Voted):
            self.counts.refused(verdict.filter)
            rejected = RejectedRow(
                id=row_key,
                **origin,
                samples=samples,
                filter=verdict.filter,
                reason=verdict.reason,
                stage="annotate",
            )
            return [Rejected(rejected, reason=rejected.reason)]
        self.counts.voted += 1
        self.counts.single_vote += verdict.single_vote
        self.counts.label_changed += bool(verdict.label_changed)
        kept = KeptRow(
            id=row_key,
            **origin,
            output=verdict.output,
            label=verdict.label,
            label_changed=verdict.label_changed,
            votes=verdict.votes,
            single_vote=verdict.single_vote,
            samples=samples,
        )
        return [Kept(kept)]

    # --------------------------------------------------------------- finalize
    async def finalize(self, ctx: Context, out_dir: Path) -> list[DerivedFile]:
        """Classification: ``balanced.jsonl`` (every label downsampled to the smallest
        class, seeded) and ``balanced_dropped.jsonl`` (what balancing left out).

        Idempotent: the same committed rows give the same files.
        """
        self.bind(ctx)
        if not self.classification or not self.cfg.balance_classes:
            return []
        rows = sorted(iter_rows(out_dir, "kept"), key=lambda r: str(r["id"]))
        labels = [str(r["label"]) for r in rows]
        kept, dropped = balance_classes(rows, labels, seed=ctx.seed)
        per_label = Counter(labels)
        self.balance = Balance(
            per_label_before=dict(sorted(per_label.items())),
            per_class_after=min(per_label.values()) if per_label else 0,
            kept=len(kept),
            dropped=len(dropped),
        )
        return [
            write_jsonl_atomic(out_dir / "balanced.jsonl", kept),
            write_jsonl_atomic(
                out_dir / "balanced_dropped.jsonl",
                ({**r, "reason": "class balancing"} for r in dropped),
            ),
        ]

    # ----------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        """Per round: generated / dropped by each filter / kept; then the annotation."""
        parts, rounds = self._parts, self.rounds
        task = parts.task if parts else None
        samples_dropped = parts.annotation.samples_dropped if parts else Counter[str]()
        report = SelfGuideReport(
            task=task.name if task else None,
            task_format=self.loaded.format if self.loaded else None,
            warnings=list(self.warnings),
            task_type=task.type if task else None,
            settings=parts.settings if parts else None,
            sampling=self.sampling(),
            rounds=rounds.stats if rounds else [],
            inputs=input_totals(
                rounds.stats if rounds else [],
                input_filter_names(self.semantic),
                len(rounds.accepted) if rounds else 0,
            ),
            prompts_over_budget=self.prompts_over_budget,
            prompts_without_low_quality=self.prompts_without_low_quality,
            annotation=AnnotationReport.of(self.counts, samples_dropped),
        )
        if self.balance is not None:
            report.balance = self.balance
        if self.semantic is not None:
            report.semantic_dedup = self.semantic.report()
        built: dict[str, Any] = msgspec.to_builtins(report)  # JSON-ready, as the API's
        return built
