"""The CodecLM method on the public method API (:class:`engine.Method`).

``prepare`` encodes every seed into the metadata pool (:mod:`.seeds`, :mod:`.store`) and,
with ``metadata_check``, has the judge check the augmented combinations (:mod:`.check`);
``work`` makes the items from the pool on demand (:mod:`.items`); ``process`` asks for one
metadata item's Self-Rubrics and basic instructions at once, then runs every instruction
through Contrastive Filtering (:mod:`.contrastive`) concurrently; ``report`` is
:mod:`.report`'s. The engine owns concurrency, retries, the cache, resume and output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import ClassVar

import msgspec

from ...config import Config as RunConfig
from ...dedup.semantic import SemanticDedup, semantic_dedup
from ...errors import EndpointError, EngineError, InputError, ParseError
from ...io.readers import read_jsonl
from ...io.shards import iter_rows
from ...records import BadInput, Item, row_id
from ...stages import concurrently
from ..base import RowSchema
from ..custom import Context, Failed, Kept, Method, TypedRow
from .check import check_metadata
from .config import CodecLMConfig, check_options
from .contrastive import Contrastive
from .items import BuiltPool, Catalog, ItemMetadata
from .pool import Metadata
from .report import Tally
from .rows import COLUMNS, MetadataColumn, RowBase, failed_item, failed_seed_row
from .seeds import encode_seeds
from .steps import Steps
from .store import POOL_NAME, SqlitePoolWriter, pool_error

__all__ = ("CodecLM",)


class CodecLM(Method):
    """CodecLM (Wang et al., NAACL 2024): encode seeds to metadata, decode instructions,
    Self-Rubrics, Contrastive Filtering (docs/methods/codeclm.md).

    Attributes:
        cfg: the ``[method.codeclm]`` options.
        tally: what the run counts (the report's figures).
        semantic: the near-duplicate check (None: off); built by ``prepare``.
        row_schema: the one schema of every row (the engine's failed rows use it too).
    """

    name: ClassVar[str] = "codeclm"
    Config = CodecLMConfig
    required_fields = ("instruction",)
    records_input = True
    global_phase = True  # encodes every seed and builds the metadata pool first
    provenance_columns = False  # its rows carry their own seed_id and source

    def __init__(self, options: CodecLMConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or CodecLMConfig()
        self.tally = Tally()
        self.semantic: SemanticDedup | None = None
        self.row_schema = RowSchema(self.name, COLUMNS, common=self._common)
        self._ctx: Context | None = None
        self._steps: Steps | None = None
        self._catalog: Catalog | None = None

    @classmethod
    def check_options(cls, options: object, config: RunConfig) -> None:
        """Template placeholders and the dedup extra, with the file, line and key."""
        assert isinstance(options, CodecLMConfig)
        check_options(options, config)

    # ------------------------------------------------------------------ context
    def _bind(self, ctx: Context) -> None:
        self._ctx = ctx

    def _common(self) -> dict[str, object]:
        """The columns the engine's own failed rows take from the run."""
        ctx = self._ctx
        return {} if ctx is None else {"models": ctx.models(), "simulated": ctx.simulated}

    def steps(self, ctx: Context) -> Steps:
        """The run's steps, built on first use with ``ctx``'s roles and observers.

        Raises:
            EngineError: a role is not configured.
        """
        if self._steps is None:
            self._steps = Steps(self.cfg, ctx)
        return self._steps

    # ------------------------------------------------------------------ prepare
    async def prepare(self, ctx: Context) -> None:
        """Encode every seed and build the metadata pool in ``OUT/codeclm_pool.sqlite``.

        The pool file is rebuilt from scratch each time (the encodings replay from the
        response cache), in seed order whatever order the encodings finish in.

        Raises:
            InputError: the input holds no record.
            EngineError: no seed could be encoded.
            ExceptionGroup: a seed could not be encoded because the endpoint failed (its
                EndpointError inside); the run stops (resumable) rather than build a
                metadata pool that a rerun would build differently.
            ShardError: the pool file cannot be written.
        """
        self._bind(ctx)
        steps = self.steps(ctx)
        cfg, tally = self.cfg, self.tally
        self.semantic = semantic_dedup(
            cfg.semantic_dedup,
            ctx.config,
            method=self.name,
            logger=ctx.log,
            text_field="instruction",
        )
        path = ctx.out_dir / POOL_NAME
        try:
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise pool_error(path, exc, "create") from exc
        self._catalog = None
        tally.seeds_read = 0
        pool = SqlitePoolWriter(path)
        try:
            await encode_seeds(
                pool,
                read_jsonl(
                    ctx.input_path,
                    required=("instruction",),
                    duplicate_ids=ctx.config.run.duplicate_ids,
                ),
                step=steps.encode,
                strong=steps.roles.strong,
                concurrency=cfg.encode_concurrency,
                count=cfg.metadata_count,
                max_skills=cfg.max_skills,
                method=self.name,
                tally=tally,
            )
            if tally.seeds_read == 0:
                raise InputError(
                    "input holds no seed records (each line must be a JSON object with an instruction)",
                    path=str(ctx.input_path),
                )
            if pool.use_case_count == 0:
                raise EngineError(
                    "no seed could be encoded into metadata; check the input and the strong endpoint"
                )
        except BaseException:
            pool.abandon()
            raise
        pool.finish()
        built = BuiltPool(
            path,
            own=pool.own_count,
            seeds=pool.seed_count,
            use_cases=pool.use_case_count,
            skills=pool.skill_count,
            failed=pool.failed_count,
        )
        catalog = Catalog(built, count=cfg.metadata_count, max_skills=cfg.max_skills, seed=ctx.seed)
        self._catalog = catalog
        tally.seeds_failed = built.failed
        tally.metadata_items = cfg.metadata_count
        self.total = cfg.metadata_count + built.failed if cfg.target_pairs is None else None
        if cfg.metadata_check:
            await check_metadata(
                catalog,
                steps,
                rounds=cfg.metadata_check_rounds,
                concurrency=cfg.encode_concurrency,
                tally=tally,
            )
        if cfg.target_pairs is not None:
            # A rerun continues the count: the pairs already committed are kept pairs.
            tally.kept_before = sum(1 for _ in iter_rows(ctx.out_dir, "kept"))
            tally.kept_now = 0

    def catalog(self) -> Catalog:
        """The items of the pool ``prepare`` built.

        Raises:
            RuntimeError: :meth:`prepare` has not built the pool.
        """
        if self._catalog is None:
            raise RuntimeError("CodecLM.prepare() must build the metadata pool first")
        return self._catalog

    def metadata(self) -> Iterator[Metadata]:
        """The ``metadata_count`` metadata items, generated lazily from the pool.

        Raises:
            RuntimeError: :meth:`prepare` has not built the pool.
            ShardError: the pool file cannot be read.
        """
        return self.catalog().metadata()

    def kept_total(self) -> int:
        """Pairs kept so far: committed before this run, plus kept by it."""
        return self.tally.kept_total()

    # --------------------------------------------------------------------- work
    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """Metadata items (made on demand), then one item per seed that failed to encode;
        with ``target_pairs``, passes until enough pairs are kept (:mod:`.items`).

        Raises:
            RuntimeError: :meth:`prepare` has not built the pool (when first iterated).
        """
        self._bind(ctx)
        return self._work()

    def _work(self) -> Iterator[Item]:
        catalog = self.catalog()
        target = self.cfg.target_pairs
        if target is None:
            yield from catalog.one_pass()
            return

        def started(pass_: int) -> None:
            self.tally.passes = pass_

        yield from catalog.until(target, self.kept_total, self.cfg.target_max_passes, started)

    # ------------------------------------------------------------------ process
    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """Rubrics + decode for one metadata item, then every instruction's loop; or the
        failed row of a seed that could not be read or encoded."""
        self._bind(ctx)
        models, simulated = ctx.models(), ctx.simulated
        failed = item.data.get("failed")
        if failed is not None:
            row = failed_seed_row(failed, models=models, simulated=simulated)
            self.tally.failed_by_stage[row.stage] += 1
            return [Failed(row.stage, row.error, row)]
        rows = await self._metadata_item(item, ctx, models)
        self.tally.kept_now += sum(isinstance(row, Kept) for row in rows)
        return rows

    async def _metadata_item(
        self, item: Item, ctx: Context, models: dict[str, str]
    ) -> list[TypedRow]:
        cfg, steps = self.cfg, self.steps(ctx)
        meta = ItemMetadata.of(item)
        md = meta.metadata
        values = {"use_case": md.use_case, "skills": ", ".join(md.skills)}
        n = cfg.instructions_per_metadata
        try:
            rubrics, decoded = await concurrently(
                steps.rubrics(steps.roles.strong, {**values, "k": cfg.rubric_count}),
                # a later pass (target_pairs) decodes new basic instructions
                steps.decode(steps.roles.strong, {**values, "n": n}, sample_index=meta.pass_),
            )
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or "decode"
            self.tally.failed_by_stage[stage] += 1
            row = failed_item(
                self.name,
                item.key,
                seed_id=md.seed_id,
                source=item.source,
                stage=stage,
                error=exc,
                models=models,
                simulated=ctx.simulated,
            )
            return [Failed(row.stage, row.error, row)]
        instructions = [s.strip() for s in decoded.instructions if s.strip()][:n]
        if len(instructions) < n:
            self.tally.short_decodes += 1
        actions = [a.strip() for a in rubrics.actions if a.strip()] or ["Add one more constraint."]
        loop = Contrastive(steps, cfg, self.tally, self.semantic, ctx.seed)
        column = MetadataColumn(use_case=md.use_case, skills=list(md.skills))
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(
                    loop.run(
                        RowBase(
                            id=row_id(self.name, item.key, j),
                            seed_id=md.seed_id,
                            source=item.source,
                            metadata=column,
                            origin=meta.origin,
                            basic_instruction=text,
                            models=models,
                            simulated=ctx.simulated,
                        ),
                        item.key,
                        j,
                        actions,
                    )
                )
                for j, text in enumerate(instructions)
            ]
        self.tally.instructions += len(instructions)
        return [task.result() for task in tasks]

    # ------------------------------------------------------------------- report
    def report(self) -> dict[str, object]:
        """Kept per iteration, rejected, failed per stage, judge calls, seeds (see
        :class:`~.report.CodecLMReport`)."""
        built = msgspec.to_builtins(self.tally.report(self.cfg, self.semantic))
        assert isinstance(built, dict)
        return built
