"""The ``backtranslation`` method on the public method API: segment -> backtranslate ->
curate (-> rescore) -> keep or reject; the training mix at the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import msgspec

from ...config import Config as RunConfig
from ...errors import EndpointError, InputError, ParseError
from ...filters import BloomDedup, ExactDedup
from ...io.corpus import CorpusStats, SegmentRules, read_corpus
from ...io.derived import DerivedFile
from ...records import BadInput, Item
from ...stages import Generate, json_schema
from ..base import InputCheck, RowSchema, bad_input_reason, items_for_schema
from ..custom import Context, Failed, Kept, Method, Rejected, TypedRow
from .config import BacktranslationConfig, Role, check_config
from .parsing import (
    Curation,
    CurationWire,
    InstructionReply,
    decide,
    parse_curation,
    parse_instruction,
    score_bucket,
)
from .report import Tally
from .rows import (
    COLUMNS,
    NAME,
    Round,
    Scored,
    Segment,
    failed_row,
    segment_of,
)
from .seeds import MixCounts, check_seeds, write_training_mix

__all__ = ("Backtranslation",)


class _Steps:
    """The model calls of one run, built once from the options and the run's context."""

    def __init__(self, cfg: BacktranslationConfig, ctx: Context) -> None:
        self.backtranslate = Generate(
            "backtranslate",
            depth=1,
            template=cfg.templates.backtranslate,
            schema=InstructionReply,
            parse_text=parse_instruction,
            params={
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "max_tokens": cfg.max_tokens,
            },
            observer_for=ctx.observer,
        )
        judge = {"temperature": cfg.judge_sampling_temperature, "max_tokens": cfg.judge_max_tokens}

        def judge_step(name: str, depth: int) -> Generate[Curation]:
            return Generate(
                name,
                depth=depth,
                template=cfg.templates.curate,
                schema=Curation,
                parse_text=parse_curation,
                params=judge,
                observer_for=ctx.observer,
                wire_schema=json_schema(CurationWire),
            )

        self.curate = judge_step("curate", 2)
        self.rescore = judge_step("rescore", 3)


class Backtranslation(Method):
    """Instruction Backtranslation (Humpback): see :mod:`engine.methods.backtranslation`."""

    name: ClassVar[str] = NAME
    Config = BacktranslationConfig
    provenance_columns: ClassVar[bool] = False

    def __init__(self, options: BacktranslationConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or BacktranslationConfig()
        self.threshold = self.cfg.threshold
        self.row_schema = RowSchema(NAME, COLUMNS, common=self._common)
        self.tally = Tally()
        self.corpus = CorpusStats()
        self.seed_check: InputCheck | None = None
        self.mix: MixCounts | None = None
        self._dedup: BloomDedup | ExactDedup | None = None
        self._ctx: Context | None = None
        self._steps: _Steps | None = None

    @classmethod
    def check_options(cls, options: object, config: RunConfig) -> None:
        """Every template uses only its own placeholders (file, line and key if not)."""
        assert isinstance(options, BacktranslationConfig)
        check_config(options, config)

    def _common(self) -> dict[str, object]:
        # Columns every row has, for the failed rows the engine writes in this schema.
        ctx = self._ctx
        return {} if ctx is None else {"models": ctx.models(), "simulated": ctx.simulated}

    def _bind(self, ctx: Context) -> _Steps:
        self._ctx = ctx
        if self._steps is None:
            self._steps = _Steps(self.cfg, ctx)
        return self._steps

    # ------------------------------------------------------------------ input
    def _seeds_path(self, ctx: Context) -> Path | None:
        seeds = self.cfg.seeds
        return ctx.config.resolve(seeds) if seeds else None

    def _check_seeds(self, ctx: Context) -> InputCheck | None:
        path = self._seeds_path(ctx)
        if path is None:
            return None
        return check_seeds(
            path,
            instruction_field=self.cfg.seed_instruction_field,
            response_field=self.cfg.seed_response_field,
        )

    async def prepare(self, ctx: Context) -> None:
        """Read the seed file through, if one is given (segments stream from the corpus).

        Raises:
            InputError: the seed file cannot be read or holds no usable pair.
        """
        self._bind(ctx)
        check = self._check_seeds(ctx)
        self.seed_check = check
        if check is None:
            return
        if check.problems and not check.items_ok:
            first = check.problems[0]
            raise InputError(
                f"seed file holds no usable pair (first problem: {first.message}); "
                f"each line needs {self.cfg.seed_instruction_field!r} and "
                f"{self.cfg.seed_response_field!r}",
                path=first.file,
                line=first.line,
            )
        for problem in check.problems:
            ctx.log.warning(
                "backtranslation seeds: %s:%s: %s (left out of the mix)",
                problem.file,
                problem.line,
                problem.message,
            )

    def work(self, ctx: Context) -> Iterator[Item | BadInput]:
        """One item per segment that passes the rules, in a stable order (a bad record
        is an item too, answered with a failed row in the method's schema)."""
        self._bind(ctx)
        return items_for_schema(self._segments(ctx))

    def _segments(self, ctx: Context) -> Iterator[Item | BadInput]:
        cfg = self.cfg
        path = ctx.config.resolve(cfg.corpus) if cfg.corpus is not None else ctx.input_path
        rules = SegmentRules(
            min_chars=cfg.min_chars,
            max_chars=cfg.max_chars,
            max_header_caps_ratio=cfg.max_header_caps_ratio,
            require_header=cfg.require_header,
            dedup=cfg.dedup,
            text_field=cfg.text_field,
            header_field=cfg.header_field,
            id_field=cfg.id_field,
        )
        self.corpus = CorpusStats()
        self._dedup = None
        if cfg.dedup:
            self._dedup = (
                ExactDedup()
                if cfg.dedup_exact
                else BloomDedup(cfg.dedup_capacity, cfg.dedup_error_rate)
            )
        seen = self._dedup.add if self._dedup is not None else None
        return read_corpus(path, rules, seen=seen, stats=self.corpus)

    def check_input(self, ctx: Context) -> InputCheck:
        """Read the whole corpus as ``run`` will: segments, bad records, drops by rule."""
        check = InputCheck()
        try:
            for item in self._segments(ctx):
                if isinstance(item, BadInput):
                    check.items_bad += 1
                    file, _, line = item.source.rpartition(":")
                    if not file or not line.isdigit():
                        file, line = item.source, ""
                    check.add_problem(file, int(line) if line else None, item.reason)
                else:
                    check.items_ok += 1
        except InputError as exc:
            return InputCheck.failed(exc)
        check.details = dict(self.corpus.as_dict())
        seeds = self._check_seeds(ctx)
        if seeds is not None:
            for problem in seeds.problems:
                check.add_warning(problem.file, problem.line, f"seed left out: {problem.message}")
            if not seeds.items_ok:
                check.add_problem(
                    str(self._seeds_path(ctx)), None, "seed file holds no usable pair"
                )
            check.details["seeds"] = {"usable": seeds.items_ok, "bad": seeds.items_bad}
        return check

    # ---------------------------------------------------------------- process
    async def _score(
        self, ctx: Context, gen: Generate[Curation], role: Role, instruction: str, answer: str
    ) -> Round:
        """A round of ``curation_samples`` judge samples by ``role``; unparsable samples
        are left out.

        Raises:
            ParseError: no sample parsed.
            EndpointError: a call failed.
        """
        caller = ctx.caller(role)
        values = {"instruction": instruction, "answer": answer}
        results = await asyncio.gather(
            *(gen(caller, values, sample_index=i) for i in range(self.cfg.curation_samples)),
            return_exceptions=True,
        )
        samples: list[Curation] = []
        last: ParseError | None = None
        for res in results:
            if isinstance(res, Curation):
                samples.append(res)
            elif isinstance(res, ParseError):
                self.tally.samples_unparsed += 1
                last = res
            elif isinstance(res, BaseException):
                raise res
        if not samples:
            assert last is not None
            raise last
        scores = [float(s.score) for s in samples]
        return Round(
            role=role,
            model=caller.model,
            score=round(sum(scores) / len(scores), 4),
            scores=scores,
            reasoning=samples[0].reasoning,
        )

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        """Backtranslate, curate (and re-score), route."""
        steps = self._bind(ctx)
        cfg = self.cfg
        bad = bad_input_reason(item)
        if bad is not None:
            self.tally.failed_by_stage["input"] += 1
            return [self._failed(item, ctx, "input", bad, None, None)]
        seg = segment_of(item)
        stage = "backtranslate"
        instruction: str | None = None
        heading = f"Heading: {seg.header}\n\n" if cfg.backtranslate_header and seg.header else ""
        try:
            got = await steps.backtranslate(
                ctx.caller(cfg.backtranslate_role),
                {"segment": seg.text, "header": seg.header, "heading_block": heading},
            )
            instruction = got.instruction.strip()
            if not instruction:
                raise ParseError("empty instruction", stage="backtranslate")
            self.tally.backtranslated += 1
            stage = "curate"
            rounds = [await self._score(ctx, steps.curate, cfg.curator, instruction, seg.text)]
            self.tally.curated += 1
            for role in cfg.rescore_roles:
                stage = "rescore"
                if len(rounds) == 1:
                    self.tally.first_round_histogram[score_bucket(rounds[0].score)] += 1
                rounds.append(await self._score(ctx, steps.rescore, role, instruction, seg.text))
            if len(rounds) > 1:
                self.tally.rescored += 1
        except (EndpointError, ParseError) as exc:
            self.tally.failed_by_stage[stage] += 1
            return [self._failed(item, ctx, stage, exc, seg, instruction)]
        return [self._decided(item, ctx, seg, instruction, rounds)]

    def _decided(
        self, item: Item, ctx: Context, seg: Segment, instruction: str, rounds: list[Round]
    ) -> TypedRow:
        pair = Scored(
            item=item,
            segment=seg,
            instruction=instruction,
            rounds=rounds,
            threshold=float(self.threshold),
            models=ctx.models(),
            simulated=ctx.simulated,
        )
        kept = decide(pair.score, pair.threshold)
        self.tally.decided(pair.score, kept)
        if kept:
            return Kept(pair.kept(self.cfg.tag))
        reason = f"score {pair.score:g} below threshold {pair.threshold:g}"
        return Rejected(pair.rejected(reason), reason=reason)

    def _failed(
        self,
        item: Item,
        ctx: Context,
        stage: str,
        error: EndpointError | ParseError | str,
        seg: Segment | None,
        instruction: str | None,
    ) -> TypedRow:
        row = failed_row(
            item,
            stage=stage,
            error=error,
            segment=seg,
            instruction=instruction,
            models=ctx.models(),
            simulated=ctx.simulated,
        )
        return Failed(row.stage, row.error, data=row)

    # --------------------------------------------------------------- finalize
    async def finalize(self, ctx: Context, out_dir: Path) -> list[DerivedFile]:
        """With a seed file: ``training_mix.jsonl`` (see :func:`write_training_mix`)."""
        path = self._seeds_path(ctx)
        if path is None:
            return []
        cfg = self.cfg
        written, self.mix = write_training_mix(
            out_dir,
            path,
            instruction_field=cfg.seed_instruction_field,
            response_field=cfg.seed_response_field,
            seed_tag=cfg.seed_tag,
            tag=cfg.tag,
        )
        return [written]

    def report(self) -> dict[str, object]:
        """Corpus rule counts, calls that succeeded, kept/rejected, score histogram."""
        report = self.tally.report(
            self.cfg, corpus=self.corpus, dedup=self._dedup, mix=self.mix, seeds=self.seed_check
        )
        built: dict[str, object] = msgspec.to_builtins(report)
        return built
