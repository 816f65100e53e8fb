"""SELF-GUIDE (Zhao et al., COLM 2024): a student model writes new inputs for one task,
then labels them itself with a self-consistency vote; rule filters clean both stages.

Pipeline (spec: shared methods.md section 3; reference code ``vllm_prompt_based.py``):

1. ``prepare``: ``generation_rounds`` rounds, one after the other (each depends on the
   inputs accepted so far). A round sends ``per_round`` prompts concurrently; each holds
   the instruction, all gold inputs shuffled ("high quality") and a sample of 1..min(10,
   #accepted) previously accepted inputs ("low quality"; "N/A" in round 1). A prompt over
   the context budget is rebuilt with another sample. In classification mode each prompt
   asks for an input of a label sampled uniformly. Candidates then pass the input filters:
   empty -> length (optional) -> noise phrases -> exact dedup against all accepted inputs
   -> (``[method.selfguide.semantic_dedup] enabled = true``) near-duplicate check against
   all accepted inputs, in prompt order (filter and reason ``near_duplicate``).
2. One work item per accepted input: ``annotate_n`` samples at low temperature (one
   request with ``n``, or parallel requests with distinct ``seed``), the output filters
   (length, optional; noise), a vote over whole outputs (ties -> the shortest, then the
   first seen; rejected below ``min_frequency``), then in classification mode the winner
   mapped to a label (case-sensitive, whole label; none -> rejected), as the reference
   does (``engine.methods.selfguide_rules``) -> one kept or rejected row.
3. Then one item per dropped candidate input, each becoming a rejected row with its filter
   and reason, so every candidate is accounted for.
4. ``finalize`` (classification): ``balanced.jsonl`` downsamples every label to the
   smallest class, and ``balanced_dropped.jsonl`` lists what that dropped.

Determinism: every random choice comes from ``random.Random`` seeded by the run seed and
its identity (``selfguide:{seed}:round:{r}:prompt:{j}``), and every call replays from the
cache, so a resume rebuilds the same pool and the same rows.

The task file (``run.input``) may be this engine's format, the reference's task list or a
Natural-Instructions task (:mod:`engine.io.tasks`).

Not reproduced: the reference code's noise filter extended a module-level phrase list on
every call (the list grew without bound); :class:`NoiseFilter` copies its phrases once.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from ..config import Base
from ..dedup.semantic import REASON as NEAR_DUPLICATE
from ..dedup.semantic import SemanticDedupConfig, semantic_dedup
from ..errors import BudgetExceeded, ConfigError, EndpointError, InputError
from ..filters import ExactDedup, LengthBounds, balance_classes
from ..io.derived import DerivedFile, write_jsonl_atomic
from ..io.shards import iter_rows
from ..io.tasks import LoadedTask, Task, TaskExample, TaskType, load_task, match_label, read_task
from ..records import BadInput, Item, RowOut, row_id
from ..stages import ChatCaller, check_templates, render
from . import prompts_selfguide as P
from .base import Column, InputCheck, MethodContext, RowSchema
from .selfguide_rules import GREETINGS, NoiseFilter, narrow_window, reference_vote

__all__ = (
    "COLUMNS",
    "INPUT_FILTERS",
    "Candidate",
    "SelfGuideConfig",
    "SelfGuideMethod",
    "SelfGuideTemplates",
    "Task",
    "TaskExample",
    "clean_reply",
    "estimate_tokens",
    "load_task",
    "refuses_extensions",
    "sample_pool",
)

INPUT_FILTERS: tuple[str, ...] = ("empty", "length", "noise", "duplicate")
"""Input filters in the order they apply (the rejected rows' ``filter`` values)."""


class SelfGuideTemplates(Base, frozen=True):
    """``[method.selfguide.templates]``: prompt overrides (``{{var}}`` placeholders).

    Attributes:
        generate: input generation (``instruction``, ``high_quality``, ``low_quality``).
        generate_conditional: classification input generation (also ``label``).
        annotate_system: the annotator's system message.
    """

    generate: str = P.GENERATE
    generate_conditional: str = P.GENERATE_CONDITIONAL
    annotate_system: str = P.ANNOTATE_SYSTEM


class SelfGuideConfig(Base, frozen=True):
    """``[method.selfguide]`` — defaults are the reference code's (spec section 3 (c)).

    Options left at ``None`` take the per-task-type default of the reference pipelines.

    Attributes:
        role: endpoint role of the student model (``target`` falls back to ``strong``).
        generation_rounds: input-generation rounds (reference ``generation_epochs``: 10-200).
        per_round: prompts per round, sent concurrently (reference: 10).
        generation_temperature: None -> 0.9 (generation) / 0.7 (classification).
        generation_max_tokens: max tokens of a generated input (reference: 500).
        generation_top_k: ``top_k`` of input generation (reference: 40; None: not sent).
        max_low_quality: at most this many previous inputs per prompt (reference: 10).
        context_tokens: prompt budget in estimated tokens (~4 chars each; reference: 3000).
        prompt_rebuilds: tries at a different sample for a prompt over the budget; then the
            low-quality section is left out ("N/A").
        input_length_filter: None -> off (generation) / on (classification).
        output_length_filter: None -> on (generation) / off (classification: the reference
            pipeline forces the output constraint off).
        length_sd: the length filters keep mean ± this many standard deviations (2).
        noise_filter: apply the noise phrase filter to inputs and outputs.
        default_noise_phrases: include the reference's 14 greetings
            (``engine.methods.selfguide_rules.GREETINGS``).
        noise_phrases: extra phrases, added to the task file's ``noise_phrases``.
        dedup_examples: also drop candidates equal to a gold example input.
        annotate_n: samples per input for the vote (reference: 10).
        annotate_temperature: sampling temperature of the annotation (reference: 0.2).
        annotate_max_tokens: max tokens of an output (reference: 500).
        annotate_top_k: ``top_k`` of annotation (reference: 10; None: not sent).
        annotate_best_of: ``best_of`` of annotation: the server samples this many and
            returns the ``annotate_n`` most likely (reference: 20; None: not sent; only
            with ``annotate_n_in_one_request``).
        sampling_extensions: send ``top_k`` and ``best_of`` (vLLM's and SGLang's
            extensions to the OpenAI API): ``"auto"`` sends them except to OpenAI's own
            API (``api.openai.com``, ``*.openai.azure.com``), which refuses unknown
            parameters; true always; false never.
        annotate_n_in_one_request: ask for ``n`` choices in one request; false -> parallel
            requests with distinct ``sample_index`` and ``seed`` (for servers without ``n``).
        min_frequency: reject an input whose top output is below this share of the
            surviving samples (reference pipelines: 0.3).
        min_votes: reject an input whose top output was produced fewer times than this
            (reference: 1, so a lone surviving sample wins 1/1; kept rows flag it with
            ``single_vote``; 2 rejects such votes, filter ``min_votes``).
        balance_classes: write ``balanced.jsonl`` in classification mode.
        concurrency: calls in flight during the generation rounds (None: ``per_round``).
        templates: prompt overrides.
        semantic_dedup: embedding near-duplicate filter on generated inputs (off by default).
        task: the task to run when ``run.input`` lists several (the reference's
            ``tasks.json``): its ``task_name``.
        task_type: override the task file's (or the inferred) type.
        labels: override the task file's (or the inferred) labels (classification).
    """

    task: str | None = None
    task_type: TaskType | None = None
    labels: tuple[str, ...] | None = None
    role: Literal["strong", "target", "judge"] = "target"
    generation_rounds: Annotated[int, msgspec.Meta(ge=1)] = 10
    per_round: Annotated[int, msgspec.Meta(ge=1)] = 10
    generation_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    generation_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 500
    generation_top_k: Annotated[int, msgspec.Meta(ge=1)] | None = 40
    max_low_quality: Annotated[int, msgspec.Meta(ge=0)] = 10
    context_tokens: Annotated[int, msgspec.Meta(ge=1)] = 3000
    prompt_rebuilds: Annotated[int, msgspec.Meta(ge=0)] = 10
    input_length_filter: bool | None = None
    output_length_filter: bool | None = None
    length_sd: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    noise_filter: bool = True
    default_noise_phrases: bool = True
    noise_phrases: tuple[str, ...] = ()
    dedup_examples: bool = True
    annotate_n: Annotated[int, msgspec.Meta(ge=1)] = 10
    annotate_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.2
    annotate_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 500
    annotate_top_k: Annotated[int, msgspec.Meta(ge=1)] | None = 10
    annotate_best_of: Annotated[int, msgspec.Meta(ge=1)] | None = 20
    sampling_extensions: bool | Literal["auto"] = "auto"
    annotate_n_in_one_request: bool = True
    min_frequency: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3
    min_votes: Annotated[int, msgspec.Meta(ge=1)] = 1
    balance_classes: bool = True
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    templates: SelfGuideTemplates = msgspec.field(default_factory=SelfGuideTemplates)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


# --------------------------------------------------------------- pure helpers
def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` estimated at about 4 characters each."""
    return math.ceil(len(text) / 4)


def sample_pool(pool: Sequence[str], rng: random.Random, *, cap: int = 10) -> list[str]:
    """The rolling "low-quality" sample: 1..min(cap, len(pool)) items, none if empty."""
    if not pool or cap <= 0:
        return []
    k = rng.randint(1, min(cap, len(pool)))
    return rng.sample(list(pool), k)


def clean_reply(text: str) -> str:
    """A generated input, stripped of surrounding space, quotes and a ``[input]=`` echo."""
    out = text.strip()
    for prefix in ("[input]=", "[input] =", "[input]:"):
        if out.lower().startswith(prefix):
            out = out[len(prefix) :].strip()
    if len(out) >= 2 and out[0] == out[-1] == '"':
        out = out[1:-1].strip()
    return out


def _numbered(texts: Sequence[str]) -> str:
    return "\n".join(
        f"{i}. [input]={json.dumps(t, ensure_ascii=False)}" for i, t in enumerate(texts, 1)
    )


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
    Column("error_kind", str, "f", doc="the error's class"),
    Column("error", str, "f", doc="the error's message"),
    Column("models", dict, doc="role -> model"),
    Column("simulated", bool, doc="written by the simulated endpoint"),
)
"""The row schema: every kept, rejected and failed row has these columns."""

_OPENAI_HOSTS = ("api.openai.com", ".openai.azure.com")


def refuses_extensions(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own API, which refuses ``top_k`` and ``best_of``."""
    host = urlsplit(base_url).hostname or ""
    return host == _OPENAI_HOSTS[0] or host.endswith(_OPENAI_HOSTS[1])


class _Observer:
    """Stage metrics when no observer is given."""

    def __init__(self) -> None:
        self.calls = 0
        self.ok = 0
        self.failed = 0
        self.parse_errors = 0


# --------------------------------------------------------------------- method
class SelfGuideMethod:
    """The SELF-GUIDE method (see the module docstring)."""

    name = "selfguide"
    global_phase = (
        True  # runs its input-generation rounds over the whole task before the first item
    )

    def __init__(self, cfg: SelfGuideConfig, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        t = cfg.templates
        check_templates(t, P.TEMPLATE_VARS, prefix="method.selfguide.templates")
        self.task: Task | None = None
        self.loaded: LoadedTask | None = None
        self.warnings: list[str] = []
        self.accepted: list[Candidate] = []
        self.dropped: list[Candidate] = []
        self.total: int | None = None
        self.rounds: list[dict[str, Any]] = []
        self.prompts_over_budget = 0
        self.prompts_without_low_quality = 0
        self.annotation: Counter[str] = Counter()
        self.samples_dropped: Counter[str] = Counter()
        self.balance: dict[str, Any] = {}
        self._input_length: LengthBounds | None = None
        self._output_length: LengthBounds | None = None
        self._noise: NoiseFilter | None = None
        # No rebuild from committed rows: prepare() replays every round from the cache.
        self.semantic = semantic_dedup(
            cfg.semantic_dedup, ctx.config, method=self.name, logger=ctx.log
        )
        self.input_filters = INPUT_FILTERS + (
            (NEAR_DUPLICATE,) if self.semantic is not None else ()
        )
        self.row_schema = RowSchema(
            self.name,
            COLUMNS,
            common=lambda: {"models": ctx.models(), "simulated": ctx.simulated},
        )
        if (
            cfg.annotate_best_of is not None
            and cfg.annotate_n_in_one_request
            and cfg.annotate_best_of < cfg.annotate_n
        ):
            raise ConfigError(
                f"annotate_best_of = {cfg.annotate_best_of} is below annotate_n = {cfg.annotate_n}",
                field="method.selfguide.annotate_best_of",
                hint="best_of is how many samples the server draws to return the n best: "
                "set it to at least annotate_n, or leave it out",
            )
        self.extensions = self._extensions()

    def _extensions(self) -> bool:
        """Whether ``top_k``/``best_of`` are sent (see ``sampling_extensions``)."""
        mode = self.cfg.sampling_extensions
        if mode != "auto":
            return bool(mode)
        config = self.ctx.config
        if config.roles is None:
            return True
        urls = [
            config.endpoints[name].base_url
            for name in config.role_endpoints(self.cfg.role)
            if name in config.endpoints
        ]
        refused = [u for u in urls if refuses_extensions(u)]
        if refused:
            self._warn(
                f"top_k and best_of are not sent: {refused[0]} is OpenAI's API, which refuses "
                "parameters it does not define (the reference's top_k=40/10 and best_of=20 need "
                "a vLLM or SGLang server; sampling_extensions = true sends them anyway)"
            )
            return False
        return True

    def sampling(self) -> dict[str, Any]:
        """The sampling extensions in use (None: not sent)."""
        cfg = self.cfg
        on = self.extensions
        return {
            "generation_top_k": cfg.generation_top_k if on else None,
            "annotate_top_k": cfg.annotate_top_k if on else None,
            "annotate_best_of": (
                cfg.annotate_best_of if on and cfg.annotate_n_in_one_request else None
            ),
        }

    # ------------------------------------------------------------ settings
    @property
    def classification(self) -> bool:
        """Whether the task is a classification task."""
        return self.task is not None and self.task.type == "classification"

    def _task(self) -> Task:
        if self.task is None:
            cfg = self.cfg
            self.loaded = read_task(
                self.ctx.input_path, name=cfg.task, task_type=cfg.task_type, labels=cfg.labels
            )
            self.task = self.loaded.task
            for note in self.loaded.notes:
                self._warn(note)
        return self.task

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.ctx.log.warning("selfguide: %s", message)

    def settings(self) -> dict[str, Any]:
        """The effective per-task-type settings (None options resolved)."""
        cls = self._task().type == "classification"
        cfg = self.cfg
        return {
            "generation_temperature": (
                cfg.generation_temperature
                if cfg.generation_temperature is not None
                else (0.7 if cls else 0.9)
            ),
            "input_length_filter": (
                cfg.input_length_filter if cfg.input_length_filter is not None else cls
            ),
            "output_length_filter": (
                cfg.output_length_filter if cfg.output_length_filter is not None else not cls
            ),
        }

    def noise_phrases(self) -> tuple[str, ...]:
        """The noise phrases in use (a fresh tuple; nothing global is extended)."""
        task = self._task()
        base = GREETINGS if self.cfg.default_noise_phrases else ()
        return tuple(dict.fromkeys((*base, *task.noise_phrases, *self.cfg.noise_phrases)))

    def _setup_filters(self) -> None:
        task = self._task()
        s = self.settings()
        k = self.cfg.length_sd
        if s["input_length_filter"]:
            self._input_length = LengthBounds.from_examples([e.input for e in task.examples], k)
            why = narrow_window(self._input_length, [len(e.input) for e in task.examples])
            if why:
                self._warn(
                    f"input length filter {why}; set input_length_filter = false or add examples"
                )
        if s["output_length_filter"]:
            self._output_length = LengthBounds.from_examples([e.output for e in task.examples], k)
            why = narrow_window(self._output_length, [len(e.output) for e in task.examples])
            if why:
                self._warn(
                    f"output length filter {why}; set output_length_filter = false or add examples"
                )
        if self.cfg.noise_filter:
            self._noise = NoiseFilter(self.noise_phrases())

    @property
    def _student(self) -> ChatCaller:
        return self.ctx.callers[self.cfg.role]

    # -------------------------------------------------------------- prompts
    def generation_messages(
        self, round_no: int, prompt: int, pool: Sequence[str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The input-generation messages of one prompt and the label it asks for.

        Rebuilt with another low-quality sample while over ``context_tokens`` (up to
        ``prompt_rebuilds`` times), then without the low-quality section.
        """
        task = self._task()
        rng = random.Random(f"selfguide:{self.ctx.seed}:round:{round_no}:prompt:{prompt}")
        gold = [e.input for e in task.examples]
        rng.shuffle(gold)
        label = rng.choice(task.labels) if task.type == "classification" else None
        template = self.cfg.templates.generate_conditional if label else self.cfg.templates.generate
        values: dict[str, object] = {
            "instruction": task.instruction,
            "high_quality": _numbered(gold),
            "label": label or "",
        }
        text = ""
        for _ in range(self.cfg.prompt_rebuilds + 1):
            sample = sample_pool(pool, rng, cap=self.cfg.max_low_quality)
            values["low_quality"] = _numbered(sample) if sample else "N/A"
            text = render(template, values)
            if estimate_tokens(text) <= self.cfg.context_tokens:
                return [{"role": "user", "content": text}], label
            if not sample:
                break
        self.prompts_over_budget += 1
        values["low_quality"] = "N/A"
        text = render(template, values)
        if estimate_tokens(text) > self.cfg.context_tokens:
            self.ctx.log.warning(
                "selfguide: prompt is over context_tokens=%d even without low-quality "
                "examples (~%d tokens); sent anyway",
                self.cfg.context_tokens,
                estimate_tokens(text),
            )
        else:
            self.prompts_without_low_quality += 1
        return [{"role": "user", "content": text}], label

    def annotation_messages(self, text: str) -> list[dict[str, Any]]:
        """The annotator's chat: instruction, few-shot pairs, then the new input."""
        task = self._task()
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": render(self.cfg.templates.annotate_system, {})},
            {"role": "user", "content": task.instruction},
            {"role": "assistant", "content": "Okay."},
        ]
        for ex in task.examples:
            msgs.append({"role": "user", "content": f"[input] = {ex.input}"})
            msgs.append({"role": "assistant", "content": ex.output})
        msgs.append({"role": "user", "content": f"[input] = {text}"})
        return msgs

    # -------------------------------------------------------------- filters
    def filter_input(self, text: str, dedup: ExactDedup) -> tuple[str, str] | None:
        """(filter, reason) of the first input filter that drops ``text``, else None.

        A kept text is added to ``dedup``.
        """
        if not text.strip():
            return "empty", "empty input"
        if self._input_length is not None:
            why = self._input_length.check(text)
            if why:
                return "length", why
        if self._noise is not None:
            why = self._noise.check(text)
            if why:
                return "noise", why
        if not dedup.add(text):
            return "duplicate", "duplicated input"
        return None

    # -------------------------------------------------------------- prepare
    async def _call(
        self, stage: str, messages: list[dict[str, Any]], *, sample_index: int, **params: Any
    ) -> list[str]:
        obs = self.ctx.stage(stage)
        obs.calls += 1
        try:
            reply = await self._student.chat(
                messages,
                priority=0 if stage == "generate" else 1,
                sample_index=sample_index,
                stage=stage,
                **params,
            )
        except BudgetExceeded:
            raise  # refused before it was sent: not a failure of this stage
        except Exception:
            obs.failed += 1
            raise
        obs.ok += 1
        return list(reply.texts)

    async def prepare(self) -> None:
        """Read the task file, then run the generation rounds one after the other.

        Raises:
            InputError: the task file is missing or malformed.
            EndpointError: a generation call failed; the run stops (resumable) rather than
                build a pool that a rerun would build differently.
        """
        task = self._task()
        self._setup_filters()
        if self.semantic is not None:
            self.semantic.warm_up()
        cfg = self.cfg
        temperature = self.settings()["generation_temperature"]
        dedup = ExactDedup(e.input for e in task.examples) if cfg.dedup_examples else ExactDedup()
        limit = asyncio.Semaphore(cfg.concurrency or cfg.per_round)
        self.accepted, self.dropped, self.rounds = [], [], []

        top_k = self.sampling()["generation_top_k"]

        async def one(round_no: int, j: int, pool: list[str]) -> tuple[str, str, str | None]:
            messages, label = self.generation_messages(round_no, j, pool)
            async with limit:
                texts = await self._call(
                    "generate",
                    messages,
                    sample_index=(round_no - 1) * cfg.per_round + j,
                    temperature=temperature,
                    max_tokens=cfg.generation_max_tokens,
                    top_k=top_k,
                )
            raw = texts[0] if texts else ""
            return clean_reply(raw), raw, label

        for round_no in range(1, cfg.generation_rounds + 1):
            pool = [c.text for c in self.accepted]
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(round_no, j, pool)) for j in range(cfg.per_round)]
            stats: dict[str, Any] = {
                "round": round_no,
                "generated": cfg.per_round,
                "dropped": dict.fromkeys(self.input_filters, 0),
                "kept": 0,
            }
            cands: list[Candidate] = []
            for j, t in enumerate(tasks):
                text, raw, label = t.result()
                cand = Candidate(round=round_no, prompt=j, text=text, raw=raw, label=label)
                verdict = self.filter_input(text, dedup)
                if verdict is not None:
                    cand.filter, cand.reason = verdict
                cands.append(cand)
            await self._near_duplicates(cands)
            for cand in cands:
                if cand.filter is None:
                    self.accepted.append(cand)
                    stats["kept"] += 1
                else:
                    self.dropped.append(cand)
                    stats["dropped"][cand.filter] += 1
            self.rounds.append(stats)
        self.total = len(self.accepted) + len(self.dropped)

    async def _near_duplicates(self, cands: list[Candidate]) -> None:
        """Mark the candidates that passed the input filters but repeat an accepted input."""
        if self.semantic is None:
            return
        survivors = [c for c in cands if c.filter is None]
        verdicts = await self.semantic.check(
            [(row_id(self.name, f"r{c.round}-p{c.prompt}"), c.text) for c in survivors]
        )
        for cand, dup in zip(survivors, verdicts, strict=True):
            if dup is not None:
                cand.filter = cand.reason = NEAR_DUPLICATE
                cand.similarity = round(dup.similarity, 4)
                cand.duplicate_of = dup.duplicate_of

    # ----------------------------------------------------------------- work
    def work(self) -> Iterator[Item | BadInput]:
        """Accepted inputs (annotated), then dropped candidates (as rejected rows)."""
        index = 0
        for kind, cands in (("input", self.accepted), ("dropped", self.dropped)):
            for c in cands:
                key = f"r{c.round}-p{c.prompt}"
                yield Item(
                    index=index,
                    key=key,
                    data={"kind": kind, **msgspec.to_builtins(c)},
                    source=f"round:{c.round}:prompt:{c.prompt}",
                )
                index += 1

    def _base_row(self, item: Item) -> dict[str, Any]:
        task = self._task()
        return {
            "id": row_id(self.name, item.key),
            "seed_id": item.key,
            "source": item.source,
            "task": task.name,
            "instruction": task.instruction,
            "input": item.data["text"],
            "round": item.data["round"],
            "prompt": item.data["prompt"],
            "requested_label": item.data["label"] if self.classification else None,
        }

    # -------------------------------------------------------------- process
    async def _samples(self, text: str, key: str) -> list[str]:
        cfg = self.cfg
        messages = self.annotation_messages(text)
        sampling = self.sampling()
        params: dict[str, Any] = {
            "temperature": cfg.annotate_temperature,
            "max_tokens": cfg.annotate_max_tokens,
            "top_k": sampling["annotate_top_k"],
        }
        if cfg.annotate_n_in_one_request:
            texts = await self._call(
                "annotate",
                messages,
                sample_index=0,
                n=cfg.annotate_n,
                best_of=sampling["annotate_best_of"],
                **params,
            )
            return [t.strip() for t in texts]
        seed_base = random.Random(f"selfguide:{self.ctx.seed}:annotate:{key}").randrange(2**31)
        replies = await asyncio.gather(
            *(
                self._call("annotate", messages, sample_index=i, seed=seed_base + i, **params)
                for i in range(cfg.annotate_n)
            )
        )
        return [(r[0] if r else "").strip() for r in replies]

    def vote(
        self, samples: Sequence[str], requested: str | None = None
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Output filters, the vote over whole outputs, then (classification) the label
        mapping, in the reference's order.

        Returns:
            (result, filter, reason): result holds ``output``, ``votes`` {top, survivors,
            samples}, ``single_vote`` (and ``label``, ``label_changed``) when kept, else
            None with the dropping step and its reason.
        """
        survivors: list[str] = []
        for s in samples:
            if not s:
                self.samples_dropped["empty"] += 1
                continue
            if self._output_length is not None and self._output_length.check(s):
                self.samples_dropped["length"] += 1
                continue
            if self._noise is not None and self._noise.check(s):
                self.samples_dropped["noise"] += 1
                continue
            survivors.append(s)
        if not survivors:
            return None, "output_filters", f"none of {len(samples)} outputs passed the filters"
        v = reference_vote(survivors, min_frequency=self.cfg.min_frequency)
        if v.winner is None:
            return (
                None,
                "min_frequency",
                f"top output has {v.top}/{v.total} votes "
                f"({v.frequency:.2f} < min_frequency {self.cfg.min_frequency:g})",
            )
        if v.top < self.cfg.min_votes:
            return (
                None,
                "min_votes",
                f"top output has {v.top} vote(s) of {v.total} surviving "
                f"(< min_votes {self.cfg.min_votes})",
            )
        result: dict[str, Any] = {
            "output": v.winner,
            "votes": {"top": v.top, "survivors": v.total, "samples": len(samples)},
            "single_vote": v.top == 1,
            "label": None,
            "label_changed": None,
        }
        if self.classification:
            label = match_label(v.winner, self._task().labels)
            if label is None:
                return None, "label", f"the voted output {v.winner[:80]!r} names no label"
            result["output"] = result["label"] = label
            result["label_changed"] = requested is not None and label != requested
        return result, "", ""

    def check_input(self) -> InputCheck:
        """Read the task file as ``run`` will (one usable item: the task)."""
        try:
            task = self._task()
            self._setup_filters()
        except InputError as exc:
            return InputCheck.failed(exc)
        check = InputCheck(items_ok=1)
        for w in self.warnings:
            check.add_warning(str(self.ctx.input_path), None, w)
        check.details = {
            "task": task.name,
            "format": self.loaded.format if self.loaded else None,
            "type": task.type,
            "labels": list(task.labels),
            "examples": len(task.examples),
            "noise_phrases": len(self.noise_phrases()),
        }
        return check

    async def process(self, item: Item) -> list[RowOut]:
        """Annotate and vote one accepted input, or emit one dropped candidate."""
        base = self._base_row(item)
        schema = self.row_schema
        if item.data["kind"] == "dropped":
            self.annotation["input_dropped_rows"] += 1
            near = {k: item.data[k] for k in ("similarity", "duplicate_of") if item.data.get(k)}
            return [
                schema.row(
                    "rejected",
                    {
                        **base,
                        "stage": "input",
                        "filter": item.data["filter"],
                        "reason": item.data["reason"],
                        "samples": [str(item.data.get("raw") or item.data["text"])],
                        **near,
                    },
                )
            ]
        try:
            samples = await self._samples(str(item.data["text"]), item.key)
        except EndpointError as exc:
            self.annotation["failed"] += 1
            return [
                schema.failed(item.key, source=item.source, stage="annotate", error=exc, **base)
            ]
        result, step, reason = self.vote(samples, base["requested_label"])
        if result is None:
            self.annotation[f"dropped_{step}"] += 1
            return [
                schema.row(
                    "rejected",
                    {
                        **base,
                        "stage": "annotate",
                        "filter": step,
                        "reason": reason,
                        "samples": samples,
                    },
                )
            ]
        self.annotation["voted"] += 1
        if result["single_vote"]:
            self.annotation["single_vote"] += 1
        if result["label_changed"]:
            self.annotation["label_changed"] += 1
        return [schema.row("kept", {**base, **result, "samples": samples})]

    # ------------------------------------------------------------- finalize
    async def finalize(self, out_dir: Path) -> list[DerivedFile]:
        """Classification: ``balanced.jsonl`` (every label downsampled to the smallest
        class, seeded) and ``balanced_dropped.jsonl`` (what balancing left out).

        Idempotent: the same committed rows give the same files.
        """
        if not self.classification or not self.cfg.balance_classes:
            return []
        rows = sorted(iter_rows(out_dir, "kept"), key=lambda r: str(r["id"]))
        kept, dropped = balance_classes(rows, [str(r["label"]) for r in rows], seed=self.ctx.seed)
        per_label = Counter(str(r["label"]) for r in rows)
        self.balance = {
            "per_label_before": dict(sorted(per_label.items())),
            "per_class_after": min(per_label.values()) if per_label else 0,
            "kept": len(kept),
            "dropped": len(dropped),
        }
        return [
            write_jsonl_atomic(out_dir / "balanced.jsonl", kept),
            write_jsonl_atomic(
                out_dir / "balanced_dropped.jsonl",
                ({**r, "reason": "class balancing"} for r in dropped),
            ),
        ]

    # --------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        """Per round: generated / dropped by each filter / kept; then the annotation."""
        dropped_total = dict.fromkeys(self.input_filters, 0)
        for r in self.rounds:
            for k, v in r["dropped"].items():
                dropped_total[k] += v
        out: dict[str, Any] = {
            "task": self.task.name if self.task else None,
            "task_format": self.loaded.format if self.loaded else None,
            "warnings": list(self.warnings),
            "task_type": self.task.type if self.task else None,
            "settings": self.settings() if self.task else None,
            "sampling": self.sampling(),
            "rounds": self.rounds,
            "inputs": {
                "generated": sum(r["generated"] for r in self.rounds),
                "dropped": dropped_total,
                "kept": len(self.accepted),
            },
            "prompts_over_budget": self.prompts_over_budget,
            "prompts_without_low_quality": self.prompts_without_low_quality,
            "annotation": {
                "voted": self.annotation["voted"],
                "dropped_min_frequency": self.annotation["dropped_min_frequency"],
                "dropped_label": self.annotation["dropped_label"],
                "dropped_min_votes": self.annotation["dropped_min_votes"],
                "single_vote": self.annotation["single_vote"],
                "label_changed": self.annotation["label_changed"],
                "dropped_output_filters": self.annotation["dropped_output_filters"],
                "failed": self.annotation["failed"],
                "samples_dropped": dict(sorted(self.samples_dropped.items())),
            },
            "note": (
                "rounds and inputs cover the whole run (replayed on resume); annotation counts "
                "cover the items processed by this invocation"
            ),
        }
        if self.balance:
            out["balance"] = self.balance
        if self.semantic is not None:
            out["semantic_dedup"] = self.semantic.report()
        return out
