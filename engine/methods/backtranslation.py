"""Instruction Backtranslation / Humpback (Li et al., Meta, 2023).

Pipeline (spec: shared methods.md section 2; paper sections 2-3, Table 1):

1. Segments: human-written web text that follows a heading, read by
   :func:`engine.io.corpus.read_corpus` from HTML, Markdown/text or JSONL, with the
   paper's rule-based selection (exact dedup, length bounds, share of capital letters in
   the header). Each segment is one work item.
2. Self-augmentation: a model (role ``backtranslate_role``, default ``strong``) predicts
   the instruction the segment would answer from the segment alone (the paper's backward
   model never sees the heading; ``backtranslate_header = true`` shows it), sampled at
   T=0.7, top-p 0.9 (the paper's generation values).
3. Self-curation: by default the same model (the "self" in self-curation; ``judge_role``
   names another) rates the (instruction, segment) pair on the paper's 5-point rubric,
   with brief reasoning and a final ``Score: k`` line (or the JSON ``{reasoning, score}``
   when the endpoint supports structured output), over ``curation_samples`` samples whose
   scores are averaged.
4. Rescoring rounds (the paper's iteration: M0 curates, M1 is trained on seed + A5 and
   re-curates, then M2): ``rescore_with`` lists the roles serving M1, M2...; each re-scores
   every candidate and the last round's score decides.
5. Keep the pair when the deciding score >= threshold (default 4.5: the paper's A5 set,
   score 5 on a single integer sample; 4 gives A4). Kept rows carry the S_w system-prompt
   tag ("Answer with knowledge from web search.").
6. ``finalize``: with a seed file (``seeds``), the training mix: every seed pair tagged
   S_a ("Answer in the style of an AI Assistant.") plus every kept pair tagged S_w, as
   ``messages`` with the tag as the system turn (``training_mix.jsonl``, counts in the
   manifest and the report).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..config import Base
from ..errors import EndpointError, InputError, ParseError
from ..filters import BloomDedup, ExactDedup
from ..io.corpus import CorpusStats, SegmentRules, read_corpus
from ..io.derived import DerivedFile, write_jsonl_atomic
from ..io.readers import read_jsonl
from ..io.shards import iter_rows
from ..records import BadInput, Item, RowOut, row_id
from ..stages import Generate, check_templates, json_schema, parse_score
from . import prompts_backtranslation as P
from .base import (
    Column,
    InputCheck,
    MethodContext,
    RowSchema,
    bad_input_reason,
    items_for_schema,
)

__all__ = (
    "COLUMNS",
    "MIX_NAME",
    "BacktranslationConfig",
    "BacktranslationMethod",
    "BacktranslationTemplates",
    "Curation",
    "decide",
    "effective_threshold",
    "parse_curation",
    "parse_instruction",
    "read_seeds",
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
        backtranslate_header: show the segment's heading to the backward model (paper: the
            backward model sees the output alone; off).
        temperature: instruction sampling temperature (paper: 0.7).
        top_p: instruction nucleus sampling (paper: 0.9).
        max_tokens: max tokens of an instruction.
        judge_role: role that curates; None: the role that augmented (paper: the model
            curates its own augmentation, "self-curation").
        curation_samples: judge samples per pair, scores averaged (paper: 1).
        judge_temperature: judge temperature (None: 0 for one sample, 0.7 for several).
        judge_max_tokens: max tokens of a judge reply (brief reasoning + score line).
        threshold: keep when score >= this (paper: A5 = score 5, "score >= 4.5" in its
            section 3.3, the set Humpback is trained on; 4 gives A4).
        rescore_with: roles that re-score every candidate, one round each, in order (the
            paper's iteration: serve M1, then M2, and name their roles); the last round's
            score decides. Empty: one round.
        tag: system prompt of augmented rows (paper: S_w).
        seed_tag: system prompt of seed rows in the training mix (paper: S_a).
        seeds: seed file (JSONL of instruction/response pairs, relative to the config
            file; paper: 3,200 OpenAssistant pairs). With it, ``finalize`` writes the
            training mix of seed (S_a) and kept (S_w) pairs. None: no mix.
        seed_instruction_field: seed records' instruction field.
        seed_response_field: seed records' response field.
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
    backtranslate_header: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    judge_role: Role | None = None
    curation_samples: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    threshold: Annotated[float, msgspec.Meta(ge=1, le=5)] = 4.5
    rescore_with: Role | list[Role] = msgspec.field(default_factory=list)
    tag: str = P.S_W
    seed_tag: str = P.S_A
    seeds: str | None = None
    seed_instruction_field: str = "instruction"
    seed_response_field: str = "response"
    templates: BacktranslationTemplates = msgspec.field(default_factory=BacktranslationTemplates)

    @property
    def curator(self) -> Role:
        """The role that curates: ``judge_role``, else the one that augmented."""
        return self.judge_role if self.judge_role is not None else self.backtranslate_role

    @property
    def rescore_roles(self) -> list[Role]:
        """The rescoring rounds' roles, in order."""
        return (
            [self.rescore_with] if isinstance(self.rescore_with, str) else list(self.rescore_with)
        )


MIX_NAME = "training_mix.jsonl"
"""The training mix ``finalize`` writes when a seed file is given."""

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
    Column("error_kind", str, "f", doc="the error's class"),
    Column("error", str, "f", doc="the error's message"),
    Column("models", dict, doc="role -> model"),
    Column("simulated", bool, doc="written by the simulated endpoint"),
)
"""The row schema: every kept, rejected and failed row has these columns."""


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
    """The keep threshold: the configured one, else the paper's A5 cut (4.5: score 5 on
    one integer sample, a mean of at least 4.5 over several)."""
    del samples  # the A5 cut is the same for one sample and for averaged scores
    return 4.5 if threshold is None else threshold


def decide(score: float, threshold: float) -> bool:
    """Self-curation: keep when ``score >= threshold``."""
    return score >= threshold - 1e-9


def score_bucket(score: float) -> str:
    """Histogram bucket of a score: rounded down to the half point ("3.5", "4.0")."""
    return f"{int(score * 2) / 2:.1f}"


class SeedPair(msgspec.Struct, frozen=True):
    """One seed pair of the training mix."""

    key: str
    source: str
    instruction: str
    response: str


def read_seeds(
    path: Path, *, instruction_field: str, response_field: str
) -> Iterator[SeedPair | BadInput]:
    """The seed pairs of a JSONL file, streamed (bad lines as BadInput with file:line).

    Raises:
        InputError: the file cannot be opened.
    """
    for rec in read_jsonl(path, required=(instruction_field, response_field)):
        if isinstance(rec, BadInput):
            yield rec
            continue
        instruction = str(rec.data[instruction_field]).strip()
        response = str(rec.data[response_field]).strip()
        if not instruction or not response:
            yield BadInput(
                index=rec.index,
                key=rec.key,
                source=rec.source,
                reason=f"empty {instruction_field if not instruction else response_field}",
            )
            continue
        yield SeedPair(key=rec.key, source=rec.source, instruction=instruction, response=response)


def _messages(system: str, instruction: str, response: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": response},
    ]


class BacktranslationMethod:
    """The ``backtranslation`` pipeline."""

    name = "backtranslation"

    def __init__(self, cfg: BacktranslationConfig, ctx: MethodContext) -> None:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix="method.backtranslation.templates")
        self.cfg = cfg
        self.ctx = ctx
        self.threshold = cfg.threshold
        self.row_schema = RowSchema(
            self.name,
            COLUMNS,
            common=lambda: {"models": ctx.models(), "simulated": ctx.simulated},
        )
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
        self.seed_check: InputCheck | None = None
        self.mix: dict[str, Any] = {}

    def _seeds_path(self) -> Path | None:
        seeds = self.cfg.seeds
        return self.ctx.config.resolve(seeds) if seeds else None

    def _check_seeds(self) -> InputCheck | None:
        """Read the seed file through (problems with file:line); None without one."""
        path = self._seeds_path()
        if path is None:
            return None
        check = InputCheck()
        try:
            for pair in read_seeds(
                path,
                instruction_field=self.cfg.seed_instruction_field,
                response_field=self.cfg.seed_response_field,
            ):
                if isinstance(pair, BadInput):
                    check.items_bad += 1
                    file, _, line = pair.source.rpartition(":")
                    check.add_problem(
                        file or pair.source, int(line) if line.isdigit() else None, pair.reason
                    )
                else:
                    check.items_ok += 1
        except InputError as exc:
            return InputCheck.failed(exc)
        return check

    async def prepare(self) -> None:
        """Read the seed file through, if one is given (segments stream from the corpus).

        Raises:
            InputError: the seed file cannot be read or holds no usable pair.
        """
        check = self._check_seeds()
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
            self.ctx.log.warning(
                "backtranslation seeds: %s:%s: %s (left out of the mix)",
                problem.file,
                problem.line,
                problem.message,
            )

    def work(self) -> Iterator[Item | BadInput]:
        """One item per segment that passes the rules, in a stable order (a bad record
        is an item too, answered with a failed row in the method's schema)."""
        return items_for_schema(self._segments())

    def _segments(self) -> Iterator[Item | BadInput]:
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
            for item in self._segments():
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
        seeds = self._check_seeds()
        if seeds is not None:
            for problem in seeds.problems:
                check.add_warning(problem.file, problem.line, f"seed left out: {problem.message}")
            if not seeds.items_ok:
                check.add_problem(str(self._seeds_path()), None, "seed file holds no usable pair")
            check.details["seeds"] = {"usable": seeds.items_ok, "bad": seeds.items_bad}
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
        bad = bad_input_reason(item)
        if bad is not None:
            self.failed_by_stage["input"] += 1
            return [self.row_schema.failed(item.key, source=item.source, stage="input", error=bad)]
        segment = str(item.data["text"])
        header = str(item.data.get("header", ""))
        base: dict[str, Any] = {
            "id": row_id(self.name, item.key),
            "seed_id": item.key,
            "source": item.source,
            "doc_id": str(item.data["doc_id"]),
            "offset": int(item.data["offset"]),
            "part": int(item.data.get("part", 0)),
            "header": header,
            "response": segment,
        }
        stage = "backtranslate"
        instruction: str | None = None
        heading = f"Heading: {header}\n\n" if cfg.backtranslate_header and header else ""
        try:
            got = await self.backtranslate(
                self.ctx.callers[cfg.backtranslate_role],
                {"segment": segment, "header": header, "heading_block": heading},
            )
            instruction = got.instruction.strip()
            if not instruction:
                raise ParseError("empty instruction", stage="backtranslate")
            self.backtranslated += 1
            stage = "curate"
            samples = await self._score(self.curate, cfg.curator, instruction, segment)
            self.curated += 1
            rounds = [self._round(cfg.curator, samples)]
            for role in cfg.rescore_roles:
                stage = "rescore"
                if len(rounds) == 1:
                    self.first_round_histogram[score_bucket(rounds[0]["score"])] += 1
                samples = await self._score(self.rescore, role, instruction, segment)
                rounds.append(self._round(role, samples))
            if len(rounds) > 1:
                self.rescored += 1
        except (EndpointError, ParseError) as exc:
            self.failed_by_stage[stage] += 1
            return [
                self.row_schema.failed(
                    item.key,
                    source=item.source,
                    stage=stage,
                    error=exc,
                    doc_id=base["doc_id"],
                    offset=base["offset"],
                    **({"instruction": instruction} if instruction is not None else {}),
                )
            ]
        final = rounds[-1]
        score = float(final["score"])
        self.histogram[score_bucket(score)] += 1
        row = {
            **base,
            "instruction": instruction,
            "score": score,
            "scores": final["scores"],
            "reasoning": final["reasoning"],
            "rounds": rounds,
            "threshold": self.threshold,
        }
        if decide(score, self.threshold):
            self.kept += 1
            return [self.row_schema.row("kept", {**row, "tag": "S_w", "system": cfg.tag})]
        self.rejected += 1
        return [
            self.row_schema.row(
                "rejected", {**row, "reason": f"score {score:g} below threshold {self.threshold:g}"}
            )
        ]

    def _round(self, role: str, samples: list[Curation]) -> dict[str, Any]:
        scores = [float(s.score) for s in samples]
        caller = self.ctx.callers.get(role)
        return {
            "role": role,
            "model": caller.model if caller is not None else "",
            "score": round(sum(scores) / len(scores), 4),
            "scores": scores,
            "reasoning": samples[0].reasoning,
        }

    # ------------------------------------------------------------ finalize
    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        """With a seed file: ``training_mix.jsonl``, every seed pair tagged S_a then every
        kept pair tagged S_w (in id order), as ``messages`` with the tag as the system turn.

        Idempotent: the same seeds and committed rows give the same file.
        """
        path = self._seeds_path()
        if path is None:
            return []
        cfg = self.cfg
        counts = {"seed": 0, "augmented": 0, "seed_bad": 0}

        def rows() -> Iterator[dict[str, Any]]:
            for pair in read_seeds(
                path,
                instruction_field=cfg.seed_instruction_field,
                response_field=cfg.seed_response_field,
            ):
                if isinstance(pair, BadInput):
                    counts["seed_bad"] += 1
                    continue
                counts["seed"] += 1
                yield {
                    "id": row_id(self.name, "seed", pair.key),
                    "origin": "seed",
                    "tag": "S_a",
                    "source": pair.source,
                    "messages": _messages(cfg.seed_tag, pair.instruction, pair.response),
                }
            for kept in sorted(iter_rows(out_dir, "kept"), key=lambda r: str(r["id"])):
                counts["augmented"] += 1
                yield {
                    "id": str(kept["id"]),
                    "origin": "augmented",
                    "tag": "S_w",
                    "source": str(kept["source"]),
                    "messages": _messages(cfg.tag, str(kept["instruction"]), str(kept["response"])),
                }

        written = write_jsonl_atomic(out_dir / MIX_NAME, rows())
        self.mix = {"file": MIX_NAME, **counts, "rows": written.rows}
        return [written]

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
            "curated_by": self.cfg.curator,
            "rescore_with": self.cfg.rescore_roles,
            **({"training_mix": self.mix} if self.mix else {}),
            **(
                {"seeds": {"usable": self.seed_check.items_ok, "bad": self.seed_check.items_bad}}
                if self.seed_check is not None
                else {}
            ),
            "note": (
                "corpus counts cover the whole corpus; call and row counts cover the items "
                "processed by this invocation (resumed items are skipped)"
            ),
        }
