"""Instruction Backtranslation / Humpback (Li et al., Meta, 2023).

Pipeline (spec: shared methods.md section 2; paper sections 2-3, Table 1):

1. Segments: human-written web text that follows a heading, read by
   :func:`engine.io.corpus.read_corpus` from HTML, Markdown/text or JSONL, with the
   paper's rule-based selection (exact dedup, length bounds, share of capital letters in
   the header). Each segment is one work item.
2. Self-augmentation: a model (role ``strong`` by default) predicts the instruction the
   segment would answer, sampled at T=0.7, top-p 0.9 (the paper's generation values).
3. Self-curation: a judge (role ``judge``) rates the (instruction, segment) pair on the
   paper's 5-point rubric, with brief reasoning and a final ``Score: k`` line (or the JSON
   ``{reasoning, score}`` when the endpoint supports structured output), over
   ``curation_samples`` samples whose scores are averaged.
4. Optional second round (the paper's iteration M0 -> M1, which in an API engine means
   re-scoring with a better judge): ``rescore_with`` names a role that re-scores every
   candidate; its score decides.
5. Keep the pair when the deciding score >= threshold (default: 4, or 4.5 when scores are
   averaged over several samples, the paper's A5 set). Kept rows carry the S_w
   system-prompt tag ("Answer with knowledge from web search."); S_a marks seed data.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgspec

from ..config import Base
from ..errors import EndpointError, InputError, ParseError
from ..filters import BloomDedup, ExactDedup
from ..io.corpus import CorpusStats, SegmentRules, read_corpus
from ..records import BadInput, Item, RowOut, row_id
from ..stages import Generate, check_templates, json_schema, parse_score
from . import prompts_backtranslation as P
from .base import InputCheck, MethodContext, failed_row

__all__ = (
    "BacktranslationConfig",
    "BacktranslationMethod",
    "BacktranslationTemplates",
    "Curation",
    "decide",
    "effective_threshold",
    "parse_curation",
    "parse_instruction",
    "score_bucket",
)

Role = Literal["strong", "target", "judge"]


class BacktranslationTemplates(Base, frozen=True):
    """``[method.backtranslation.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    backtranslate: str = P.BACKTRANSLATE
    curate: str = P.CURATE


class BacktranslationConfig(Base, frozen=True):
    """``[method.backtranslation]`` — generation and curation defaults are the paper's.

    Attributes:
        corpus: corpus file or directory, relative to the config file (None: ``run.input``,
            which must be a file; set this to read a directory).
        text_field: JSONL field holding the segment text.
        header_field: JSONL field holding the segment's header (optional per record).
        id_field: JSONL field holding the document id (else ``file:line``).
        min_chars: drop segments shorter than this (ours; the paper's bounds are unverified).
        max_chars: drop segments this long or longer (ours).
        max_header_caps_ratio: drop segments whose header's share of capital letters is
            higher (paper's heuristic; the ratio is ours). 1.0 disables it.
        require_header: drop HTML/Markdown text that follows no heading (paper: segments
            are text following a header).
        dedup: drop repeated segments (normalised text).
        dedup_exact: exact dedup (memory grows ~70 bytes per distinct segment) instead of
            the default fixed-memory Bloom filter (a new segment is taken for a repeat with
            probability about ``dedup_error_rate`` up to ``dedup_capacity`` segments).
        dedup_capacity: segments the Bloom filter is sized for (10 million: 18 MB).
        dedup_error_rate: the Bloom filter's false-duplicate rate at capacity.
        backtranslate_role: role that writes the instruction (paper: backward model M_yx).
        temperature: instruction sampling temperature (paper: 0.7).
        top_p: instruction nucleus sampling (paper: 0.9).
        max_tokens: max tokens of an instruction.
        judge_role: role that curates (paper: forward model M_t).
        curation_samples: judge samples per pair, scores averaged (ours; paper: 1).
        judge_temperature: judge temperature (None: 0 for one sample, 0.7 for several).
        judge_max_tokens: max tokens of a judge reply (brief reasoning + score line).
        threshold: keep when score >= this (None: 4.5 when curation_samples > 1, else 4;
            paper: A4 = score >= 4, A5 = score >= 4.5 / score 5).
        rescore_with: role that re-scores every candidate in a second round (the paper's
            iteration); None: one round.
        tag: system-prompt tag on kept rows (paper: S_w).
        seed_tag: tag for seed data, recorded in the report for users mixing in seeds
            (paper: S_a).
        templates: prompt overrides.
    """

    corpus: str | None = None
    text_field: str = "text"
    header_field: str = "title"
    id_field: str = "id"
    min_chars: Annotated[int, msgspec.Meta(ge=1)] = 200
    max_chars: Annotated[int, msgspec.Meta(ge=2)] = 6000
    max_header_caps_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    require_header: bool = True
    dedup: bool = True
    dedup_exact: bool = False
    dedup_capacity: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000
    dedup_error_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.001
    backtranslate_role: Role = "strong"
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    judge_role: Role = "judge"
    curation_samples: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    threshold: Annotated[float, msgspec.Meta(ge=1, le=5)] | None = None
    rescore_with: Role | None = None
    tag: str = P.S_W
    seed_tag: str = P.S_A
    templates: BacktranslationTemplates = msgspec.field(default_factory=BacktranslationTemplates)


# ------------------------------------------------------------ structured shapes
class _Instruction(msgspec.Struct):
    instruction: str


class Curation(msgspec.Struct):
    """One judge sample: brief reasoning and a 1-5 score (fractional from text replies)."""

    reasoning: str
    score: Annotated[float, msgspec.Meta(ge=1, le=5)]


class _CurationWire(msgspec.Struct):
    reasoning: str
    score: Annotated[int, msgspec.Meta(ge=1, le=5)]


# ------------------------------------------------------------------ parsers
_LABEL = re.compile(r"^\s*\**\s*(?:instruction|question|user)\s*\**\s*:\s*\**\s*", re.I)
_SCORE_LINE = re.compile(r"^\W*score\W*[:=]", re.I)


def parse_instruction(text: str) -> _Instruction:
    """The instruction of a backtranslation reply (a leading label and quotes removed).

    Raises:
        ParseError: the reply is empty.
    """
    out = _LABEL.sub("", text.strip()).strip().strip('"').strip("\u201c\u201d").strip()
    if not out:
        raise ParseError("empty instruction", stage="backtranslate")
    return _Instruction(instruction=out)


def parse_curation(text: str) -> Curation:
    """A curation reply: the last ``Score: k`` (1-5, fractional allowed) and the reasoning
    before it; without a score line, the last number in 1-5.

    Raises:
        ParseError: no score between 1 and 5.
    """
    score = parse_score(text, low=1, high=5, stage="curate")
    lines = text.strip().splitlines()
    while lines and (not lines[-1].strip() or _SCORE_LINE.match(lines[-1])):
        lines.pop()
    reasoning = "\n".join(lines).strip()
    reasoning = re.sub(r"^\W*reasoning\W*[:=]\s*", "", reasoning, flags=re.I)
    return Curation(reasoning=reasoning, score=score)


# ---------------------------------------------------------------- pure functions
def effective_threshold(threshold: float | None, samples: int) -> float:
    """The keep threshold: the configured one, else 4.5 for averaged scores, else 4."""
    if threshold is not None:
        return threshold
    return 4.5 if samples > 1 else 4.0


def decide(score: float, threshold: float) -> bool:
    """Self-curation: keep when ``score >= threshold``."""
    return score >= threshold - 1e-9


def score_bucket(score: float) -> str:
    """Histogram bucket of a score: rounded down to the half point ("3.5", "4.0")."""
    return f"{int(score * 2) / 2:.1f}"


class BacktranslationMethod:
    """The ``backtranslation`` pipeline."""

    name = "backtranslation"

    def __init__(self, cfg: BacktranslationConfig, ctx: MethodContext) -> None:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix="method.backtranslation.templates")
        self.cfg = cfg
        self.ctx = ctx
        self.threshold = effective_threshold(cfg.threshold, cfg.curation_samples)
        judge_t = cfg.judge_temperature
        if judge_t is None:
            judge_t = 0.0 if cfg.curation_samples == 1 else 0.7
        self.backtranslate = Generate(
            "backtranslate",
            depth=1,
            template=cfg.templates.backtranslate,
            schema=_Instruction,
            parse_text=parse_instruction,
            params={
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "max_tokens": cfg.max_tokens,
            },
            observer_for=ctx.stage,
        )

        def judge_step(name: str, depth: int) -> Generate[Curation]:
            return Generate(
                name,
                depth=depth,
                template=cfg.templates.curate,
                schema=Curation,
                parse_text=parse_curation,
                params={"temperature": judge_t, "max_tokens": cfg.judge_max_tokens},
                observer_for=ctx.stage,
                wire_schema=json_schema(_CurationWire),
            )

        self.curate = judge_step("curate", 2)
        self.rescore = judge_step("rescore", 3)
        self.corpus = CorpusStats()
        self.backtranslated = 0
        self.curated = 0
        self.rescored = 0
        self.kept = 0
        self.rejected = 0
        self.failed_by_stage: Counter[str] = Counter()
        self.histogram: Counter[str] = Counter()
        self.first_round_histogram: Counter[str] = Counter()
        self.samples_unparsed = 0

    async def prepare(self) -> None:
        """Nothing to prepare: segments stream from the corpus."""

    def work(self) -> Iterator[Item | BadInput]:
        """One item per segment that passes the rules, in a stable order."""
        cfg = self.cfg
        path = (
            self.ctx.config.resolve(cfg.corpus) if cfg.corpus is not None else self.ctx.input_path
        )
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
        dedup: ExactDedup | BloomDedup = (
            ExactDedup()
            if cfg.dedup_exact
            else BloomDedup(cfg.dedup_capacity, cfg.dedup_error_rate)
        )
        self._dedup = dedup
        return read_corpus(path, rules, seen=dedup.add, stats=self.corpus)

    def check_input(self) -> InputCheck:
        """Read the whole corpus as ``run`` will: segments, bad records, drops by rule."""
        check = InputCheck()
        try:
            for item in self.work():
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
        check.details = self.corpus.as_dict()
        return check

    async def _score(
        self, gen: Generate[Curation], role: str, instruction: str, answer: str
    ) -> list[Curation]:
        """``curation_samples`` judge samples; unparsable samples are left out.

        Raises:
            ParseError: no sample parsed.
            EndpointError: a call failed.
        """
        caller = self.ctx.callers[role]
        values = {"instruction": instruction, "answer": answer}
        results = await asyncio.gather(
            *(gen(caller, values, sample_index=i) for i in range(self.cfg.curation_samples)),
            return_exceptions=True,
        )
        out: list[Curation] = []
        last: ParseError | None = None
        for res in results:
            if isinstance(res, Curation):
                out.append(res)
            elif isinstance(res, ParseError):
                self.samples_unparsed += 1
                last = res
            elif isinstance(res, BaseException):
                raise res
        if not out:
            assert last is not None
            raise last
        return out

    async def process(self, item: Item) -> list[RowOut]:
        """Backtranslate, curate (and re-score), route."""
        cfg = self.cfg
        segment = str(item.data["text"])
        header = str(item.data.get("header", ""))
        source = {"doc_id": item.data["doc_id"], "offset": item.data["offset"]}
        base: dict[str, Any] = {
            "id": row_id(self.name, item.key),
            "response": segment,
            "header": header,
            "source": source,
            "models": self.ctx.models(),
            "simulated": self.ctx.simulated,
        }
        stage = "backtranslate"
        instruction: str | None = None
        try:
            got = await self.backtranslate(
                self.ctx.callers[cfg.backtranslate_role], {"segment": segment, "header": header}
            )
            instruction = got.instruction.strip()
            if not instruction:
                raise ParseError("empty instruction", stage="backtranslate")
            self.backtranslated += 1
            stage = "curate"
            samples = await self._score(self.curate, cfg.judge_role, instruction, segment)
            self.curated += 1
            rounds = [self._round(cfg.judge_role, samples)]
            if cfg.rescore_with is not None:
                stage = "rescore"
                self.first_round_histogram[score_bucket(rounds[0]["score"])] += 1
                samples = await self._score(self.rescore, cfg.rescore_with, instruction, segment)
                self.rescored += 1
                rounds.append(self._round(cfg.rescore_with, samples))
        except (EndpointError, ParseError) as exc:
            self.failed_by_stage[stage] += 1
            extra: dict[str, Any] = {"doc_id": source["doc_id"], "offset": source["offset"]}
            if instruction is not None:
                extra["instruction"] = instruction
            _, row = failed_row(
                self.name, item.key, source=item.source, stage=stage, error=exc, **extra
            )
            return [("failed", {**row, "models": base["models"], "simulated": base["simulated"]})]
        final = rounds[-1]
        score = float(final["score"])
        self.histogram[score_bucket(score)] += 1
        row = {
            **base,
            "instruction": instruction,
            "score": score,
            "scores": final["scores"],
            "reasoning": final["reasoning"],
            "threshold": self.threshold,
        }
        if len(rounds) > 1:
            row["rounds"] = rounds
        if decide(score, self.threshold):
            self.kept += 1
            return [("kept", {**row, "tag": "S_w", "system": cfg.tag})]
        self.rejected += 1
        return [
            (
                "rejected",
                {**row, "reason": f"score {score:g} below threshold {self.threshold:g}"},
            )
        ]

    @staticmethod
    def _round(role: str, samples: list[Curation]) -> dict[str, Any]:
        scores = [float(s.score) for s in samples]
        return {
            "role": role,
            "score": round(sum(scores) / len(scores), 4),
            "scores": scores,
            "reasoning": samples[0].reasoning,
        }

    def report(self) -> dict[str, Any]:
        """Corpus rule counts, calls that succeeded, kept/rejected, score histogram."""
        dedup = getattr(self, "_dedup", None)
        return {
            "corpus": self.corpus.as_dict(),
            "dedup": (
                {"mode": "bloom", "capacity": dedup.capacity, "saturated": dedup.saturated}
                if isinstance(dedup, BloomDedup)
                else {"mode": "exact" if dedup is not None else "off"}
            ),
            "backtranslated": self.backtranslated,
            "curated": self.curated,
            "rescored": self.rescored,
            "curation_samples": self.cfg.curation_samples,
            "samples_unparsed": self.samples_unparsed,
            "threshold": self.threshold,
            "kept": self.kept,
            "rejected": self.rejected,
            "failed_by_stage": dict(sorted(self.failed_by_stage.items())),
            "score_histogram": dict(sorted(self.histogram.items())),
            "first_round_histogram": dict(sorted(self.first_round_histogram.items())),
            "tags": {"S_w": self.cfg.tag, "S_a": self.cfg.seed_tag},
            "note": (
                "corpus counts cover the whole corpus; call and row counts cover the items "
                "processed by this invocation (resumed items are skipped)"
            ),
        }
