"""LAB as an :class:`engine.Method`: a taxonomy in, one work item per leaf, rows out, and
InstructLab's phase sets written by ``finalize``.

The method is written on the public method API only: it calls the endpoints through its
:class:`~engine.Context` (callers by role, stage observers, seed, models) and returns
typed rows (:mod:`.rows`). Its input is a taxonomy directory, not JSONL records
(``records_input = False``: ``Engine.stream(items)`` refuses it), and its rows carry
their own provenance columns (``seed_id``, ``source``), so ``provenance_columns`` is off
and ``row_schema`` gives failed rows the engine writes the same columns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from ...config import Config as RunConfig
from ...dedup.semantic import REASON as NEAR_DUPLICATE
from ...dedup.semantic import SemanticDedup, semantic_dedup
from ...errors import InputError
from ...io.derived import DerivedFile, write_jsonl_atomic
from ...io.shards import iter_rows
from ...io.taxonomy import Leaf, Problem
from ...records import BadInput, Item
from ..base import InputCheck, RowSchema, bad_input_reason, items_for_schema
from ..custom import Context, Failed, Method, TypedRow
from .config import LabConfig, check_config
from .knowledge import knowledge_rows
from .leaves import Taxonomy, leaf_items
from .mix import phase_sets
from .pipeline import Pipeline
from .report import FILTERS, BadLeaf, Tally
from .rows import COLUMNS, METHOD, LabFailed
from .simple import simple_rows
from .skills import skill_rows

__all__ = ("LabMethod",)


class LabMethod(Method):
    """The LAB (InstructLab SDG) pipelines over a taxonomy (docs/methods/lab.md)."""

    name = METHOD
    Config = LabConfig
    records_input = False
    provenance_columns = False

    def __init__(self, options: LabConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options if options is not None else LabConfig()
        self.row_schema = RowSchema(METHOD, COLUMNS, common=self._common)
        # Built in prepare: the near-duplicate filter is rebuilt from every committed row
        # whose question passed exact dedup, so it needs the run's output.
        self.semantic: SemanticDedup | None = None
        enabled = self.cfg.semantic_dedup.enabled
        self.tally = Tally(FILTERS + ((NEAR_DUPLICATE,) if enabled else ()))
        self.total: int | None = None
        self.taxonomy: Taxonomy | None = None
        self.leaves: dict[str, Leaf] = {}
        self.bad_leaves: list[BadLeaf] = []
        self._ctx: Context | None = None
        self._pipeline: Pipeline | None = None

    @classmethod
    def check_options(cls, options: LabConfig, config: RunConfig) -> None:
        """Template variables and the semantic-dedup extra, with file, line and key.

        Raises:
            ConfigError: a template uses a variable it is not given, or semantic dedup
                is enabled without ``synth-engine[dedup]``.
        """
        check_config(options, config)

    def _common(self) -> dict[str, object]:
        """What the engine's own failed rows of this method carry (models, simulated)."""
        ctx = self._ctx
        return {} if ctx is None else {"models": ctx.models(), "simulated": ctx.simulated}

    def _read(self, ctx: Context) -> Taxonomy:
        self._ctx = ctx
        return Taxonomy.read(self.cfg, ctx.config, ctx.input_path, ctx.log)

    # ------------------------------------------------------------------ input
    async def prepare(self, ctx: Context) -> None:
        """Read and validate the taxonomy and fetch its documents (refused leaves become
        failed rows).

        Raises:
            InputError: the taxonomy is not a directory or holds no leaf.
            ConfigError: semantic dedup is enabled without its extra.
        """
        self._ctx = ctx
        self.semantic = semantic_dedup(
            self.cfg.semantic_dedup,
            ctx.config,
            method=METHOD,
            logger=ctx.log,
            text_field="question",
            kinds=("kept", "rejected", "failed"),
            skip_filters=frozenset({"dedup", NEAR_DUPLICATE}),
        )
        self._pipeline = Pipeline(self.cfg, ctx, self.tally, self.semantic)
        if self.semantic is not None:
            self.semantic.warm_up()
        taxonomy = self.taxonomy = await asyncio.to_thread(self._read, ctx)
        for entry in taxonomy.entries:
            if isinstance(entry, Leaf):
                self.leaves[entry.path] = entry
            else:
                self.bad_leaves.append(BadLeaf(entry.source, entry.reason))
                ctx.log.warning("taxonomy leaf skipped: %s: %s", entry.source, entry.reason)
        self.total = len(taxonomy.entries)

    def check_input(self, ctx: Context) -> InputCheck:
        """Read the taxonomy and its documents as ``run`` will, calling no endpoint."""
        try:
            taxonomy = self._read(ctx)
        except InputError as exc:
            return InputCheck.failed(exc)
        return taxonomy.check(self.cfg.chunk_word_count)

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """One item per leaf, in the taxonomy's sorted order (a refused leaf is an item
        too, answered with a failed row in the method's schema)."""
        entries = self.taxonomy.entries if self.taxonomy is not None else []
        return items_for_schema(leaf_items(entries))

    # ---------------------------------------------------------------- process
    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """All rows of one leaf."""
        bad = bad_input_reason(item)
        if bad is not None:
            self.tally.failed_by_stage["input"] += 1
            row = LabFailed.input(item.key, item.source, bad, ctx.models(), ctx.simulated)
            return [Failed(stage="input", error=bad, data=row)]
        assert self._pipeline is not None, "prepare runs before process"
        leaf = self.leaves[item.key]
        self.tally.leaf(leaf)
        if self.cfg.pipeline == "simple":
            return await simple_rows(self._pipeline, leaf)
        if leaf.kind == "knowledge":
            return await knowledge_rows(self._pipeline, leaf)
        return await skill_rows(self._pipeline, leaf)

    # --------------------------------------------------------------- finalize
    async def finalize(self, ctx: Context, out_dir: Path) -> list[DerivedFile]:
        """Write InstructLab's phase sets (``knowledge.jsonl``, ``skills.jsonl``) and
        ``mixed.jsonl`` (:func:`engine.methods.lab.mix.phase_sets`)."""
        kept = sorted(iter_rows(out_dir, "kept"), key=lambda r: (r["phase"], r["leaf"], r["id"]))
        out: list[DerivedFile] = []
        for name, rows in phase_sets(kept, self.cfg.mix, seed=ctx.seed).items():
            self.tally.derived[name] = len(rows)
            out.append(write_jsonl_atomic(out_dir / name, rows))
        return out

    def report(self) -> dict[str, object]:
        """Counts per leaf and per filter (generated, dropped by each check, kept, failed)."""
        notes: list[Problem] = self.taxonomy.notes if self.taxonomy is not None else []
        report = self.tally.report(
            pipeline=self.cfg.pipeline,
            leaves_total=len(self.taxonomy.entries) if self.taxonomy is not None else 0,
            bad=self.bad_leaves,
            notes=notes,
            semantic=self.semantic.report() if self.semantic is not None else None,
        )
        return report.to_dict()
