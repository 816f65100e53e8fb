"""CodecLM (Wang et al., NAACL 2024): encode seeds to metadata, decode to instructions,
Self-Rubrics complexification, dual-model responses, Contrastive Filtering.

Pipeline (spec: shared methods.md section 1; paper section 4 and App. A.3):

1. ``prepare``: encode every seed (strong) into a use case + up to 3 skills, then mix and
   match to ``metadata_count`` metadata items (one use case + 1..3 skills sampled without
   replacement, seeded). Seeds' own metadata come first.
2. One work item per metadata item: rubrics + actions (strong, once per item: the
   result is the item's, and replays from the cache on resume), and decode into
   ``instructions_per_metadata`` basic instructions (strong, zero-shot numbered list).
3. Each instruction then loops: iteration 1 is the basic instruction; later iterations
   apply one random action (improve, strong). Strong and target answer concurrently; the
   judge scores the pair twice with the answers swapped and the scores are averaged;
   gap = strong - target. ``|gap| > theta`` keeps (instruction, better answer), else the
   instruction goes back to improve, up to ``max_iterations``; still unresolved -> rejected.

Determinism: every random choice comes from a ``random.Random`` seeded by the run seed
and the item's identity, and every call replays from the cache, so a rerun (or a resume
after a crash) produces the same rows with the same ids.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from ..config import Base
from ..errors import EndpointError, EngineError, InputError, ParseError
from ..io.readers import read_jsonl
from ..records import BadInput, Item, RowOut, row_id
from ..stages import (
    Generate,
    check_templates,
    concurrently,
    json_schema,
    parse_labelled,
    parse_numbered_list,
    parse_score_pair,
)
from . import prompts_codeclm as P
from .base import MethodContext, failed_row

__all__ = (
    "CodecLMConfig",
    "CodecLMMethod",
    "CodecLMTemplates",
    "Metadata",
    "augment_metadata",
    "parse_encoding",
    "parse_rubrics",
    "route",
    "swap_average",
)


class CodecLMTemplates(Base, frozen=True):
    """``[method.codeclm.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    encode: str = P.ENCODE
    decode: str = P.DECODE
    rubrics: str = P.RUBRICS
    improve: str = P.IMPROVE
    respond: str = P.RESPOND
    judge: str = P.JUDGE


class CodecLMConfig(Base, frozen=True):
    """``[method.codeclm]`` — defaults are the paper's (App. A.3, section 5.3).

    Attributes:
        metadata_count: metadata items after augmentation (paper: 200).
        instructions_per_metadata: basic instructions decoded per metadata item
            (the data budget is metadata_count x this; paper: 2000 pairs -> 10).
        max_skills: skills per metadata item (paper: at most 3).
        rubric_count: rubrics and actions per metadata item (paper: 4).
        theta: keep a pair when |gap| > theta (paper: 3, on a 1-10 scale).
        max_iterations: iterations per instruction, basic generation counting as 1 (paper: 4).
        temperature: sampling temperature of encode, decode, rubrics, improve (paper: 0.7).
        max_tokens: max tokens of generation stages (paper: 1024 with PaLM).
        response_temperature: sampling temperature of the strong and target answers.
        response_max_tokens: max tokens of an answer.
        judge_temperature: judge sampling temperature (paper's evaluation judge: 0).
        judge_max_tokens: max tokens of a judge reply.
        encode_concurrency: seeds encoded at once during prepare.
        templates: prompt overrides.
    """

    metadata_count: Annotated[int, msgspec.Meta(ge=1)] = 200
    instructions_per_metadata: Annotated[int, msgspec.Meta(ge=1)] = 10
    max_skills: Annotated[int, msgspec.Meta(ge=1)] = 3
    rubric_count: Annotated[int, msgspec.Meta(ge=1)] = 4
    theta: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    max_iterations: Annotated[int, msgspec.Meta(ge=1)] = 4
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    response_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    response_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 32
    encode_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    templates: CodecLMTemplates = msgspec.field(default_factory=CodecLMTemplates)


# ------------------------------------------------------------ structured shapes
class _Encoding(msgspec.Struct):
    use_case: str
    skills: Annotated[list[str], msgspec.Meta(min_length=1, max_length=3)]


class _Instructions(msgspec.Struct):
    instructions: Annotated[list[str], msgspec.Meta(min_length=1)]


class _Rubrics(msgspec.Struct):
    rubrics: list[str]
    actions: Annotated[list[str], msgspec.Meta(min_length=1)]


def _exact_lists(tp: type[Any], sizes: dict[str, int]) -> dict[str, Any]:
    """The wire schema of ``tp`` asking for exactly ``sizes[field]`` items per list field.

    What is accepted back stays lenient (a shorter list still decodes and is used).
    """
    schema = json_schema(tp)
    for field, n in sizes.items():
        prop = schema["properties"][field]
        prop["minItems"] = n
        prop["maxItems"] = n
    return schema


class _Improved(msgspec.Struct):
    improved_instruction: str


class _Pair(msgspec.Struct):
    assistant_1: Annotated[int, msgspec.Meta(ge=1, le=10)]
    assistant_2: Annotated[int, msgspec.Meta(ge=1, le=10)]


class Metadata(msgspec.Struct, frozen=True):
    """One metadata item: a use case, its skills, and the seed the use case came from."""

    use_case: str
    skills: tuple[str, ...]
    seed_id: str


# ----------------------------------------------------------------- text parsers
def _split_skills(text: str) -> list[str]:
    parts = re.split(r"[,;\n]|\s\d+[.)]\s", text)
    parts = [re.sub(r"^\s*\d+[.)]\s+", "", p) for p in parts]  # "1. Creative writing"
    return [p.strip(" .-*\t") for p in parts if p.strip(" .-*\t")]


def parse_encoding(text: str, max_skills: int = 3) -> _Encoding:
    """Parse ``Use case:`` (or ``Task:``) and ``Skills:`` lines.

    Raises:
        ParseError: a line is missing or no skill is named.
    """
    fields = parse_labelled(
        text,
        {"use_case": ("Use case", "Usecase", "Task"), "skills": ("Skills", "Skill")},
        stage="encode",
    )
    skills = _split_skills(fields["skills"])[:max_skills]
    if not skills:
        raise ParseError("no skill named on the Skills line", stage="encode")
    return _Encoding(use_case=fields["use_case"].strip(" ."), skills=skills)


def parse_rubrics(text: str, k: int) -> _Rubrics:
    """Split a reply into numbered rubrics and numbered actions.

    Splits on an ``Actions`` header when there is one; otherwise takes the first ``k``
    list items as rubrics and the next ``k`` as actions.

    Raises:
        ParseError: no action can be found.
    """
    m = re.search(r"^[ \t*#]*actions?[ \t*]*:?[ \t*]*$", text, re.I | re.M)
    if m:
        head, tail = text[: m.start()], text[m.end() :]
        try:
            rubrics = parse_numbered_list(head, stage="rubrics")
        except ParseError:
            rubrics = []
        actions = parse_numbered_list(tail, stage="rubrics")
    else:
        items = parse_numbered_list(text, stage="rubrics")
        if len(items) < 2:
            raise ParseError(
                "expected numbered rubrics followed by numbered actions", stage="rubrics"
            )
        half = min(k, len(items) // 2)
        rubrics, actions = items[:half], items[half : half + k]
    if not actions:
        raise ParseError("no actions found", stage="rubrics")
    return _Rubrics(rubrics=rubrics[:k], actions=actions[:k])


def _parse_improved(text: str) -> _Improved:
    out = re.sub(r"^\s*\**improved instruction\**\s*:\s*", "", text.strip(), flags=re.I).strip()
    if not out:
        raise ParseError("empty improved instruction", stage="improve")
    return _Improved(improved_instruction=out)


def _parse_pair(text: str) -> _Pair:
    a, b = parse_score_pair(text, low=1, high=10, stage="judge")
    return _Pair(assistant_1=round(a), assistant_2=round(b))


# --------------------------------------------------------------- pure functions
def augment_metadata(
    encodings: list[Metadata], count: int, *, max_skills: int, seed: int
) -> list[Metadata]:
    """Mix and match seed metadata up to ``count`` items (CodecLM App. A.3).

    The seeds' own metadata come first (deduplicated); the rest pair one use case,
    sampled from all extracted use cases, with 1..max_skills skills sampled without
    replacement from the union of all skills. Combinations already present are
    re-drawn (a bounded number of times). Deterministic in ``seed``.
    """
    out: list[Metadata] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for md in encodings:
        sig = (md.use_case.lower(), frozenset(s.lower() for s in md.skills))
        if sig not in seen and len(out) < count:
            seen.add(sig)
            out.append(md)
    use_cases: list[Metadata] = []
    uc_seen: set[str] = set()
    for md in encodings:
        if md.use_case.lower() not in uc_seen:
            uc_seen.add(md.use_case.lower())
            use_cases.append(md)
    skills: list[str] = []
    sk_seen: set[str] = set()
    for md in encodings:
        for s in md.skills:
            if s.lower() not in sk_seen:
                sk_seen.add(s.lower())
                skills.append(s)
    if not use_cases or not skills:
        return out
    rng = random.Random(f"codeclm:augment:{seed}")
    tries = 0
    while len(out) < count:
        base = rng.choice(use_cases)
        k = rng.randint(1, min(max_skills, len(skills)))
        picked = tuple(rng.sample(skills, k))
        sig = (base.use_case.lower(), frozenset(s.lower() for s in picked))
        tries += 1
        if sig in seen and tries < 50 * count:
            continue
        seen.add(sig)
        out.append(Metadata(use_case=base.use_case, skills=picked, seed_id=base.seed_id))
    return out


def swap_average(first: tuple[float, float], swapped: tuple[float, float]) -> tuple[float, float]:
    """Scores of (strong, target) from two judge calls with the answers swapped.

    ``first`` shows the strong answer as Assistant 1; ``swapped`` shows it as Assistant 2.
    """
    strong = (first[0] + swapped[1]) / 2.0
    target = (first[1] + swapped[0]) / 2.0
    return strong, target


def route(gap: float, iteration: int, *, theta: float, max_iterations: int) -> str:
    """Contrastive Filtering's decision: ``keep``, ``improve`` (requeue) or ``reject``."""
    if abs(gap) > theta:
        return "keep"
    if iteration >= max_iterations:
        return "reject"
    return "improve"


# ---------------------------------------------------------------------- method
class CodecLMMethod:
    """The CodecLM pipeline."""

    name = "codeclm"

    def __init__(self, cfg: CodecLMConfig, ctx: MethodContext) -> None:
        t = cfg.templates
        check_templates(t, P.TEMPLATE_VARS, prefix="method.codeclm.templates")
        self.cfg = cfg
        self.ctx = ctx
        gen = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        obs = ctx.stage
        self.encode = Generate(
            "encode",
            depth=0,
            template=t.encode,
            schema=_Encoding,
            parse_text=lambda s: parse_encoding(s, cfg.max_skills),
            params=gen,
            observer_for=obs,
        )
        k = cfg.rubric_count
        self.rubrics = Generate(
            "rubrics",
            depth=1,
            template=t.rubrics,
            schema=_Rubrics,
            parse_text=lambda s: parse_rubrics(s, k),
            params=gen,
            observer_for=obs,
            wire_schema=_exact_lists(_Rubrics, {"rubrics": k, "actions": k}),
        )
        self.decode = Generate(
            "decode",
            depth=1,
            template=t.decode,
            schema=_Instructions,
            parse_text=lambda s: _Instructions(parse_numbered_list(s, stage="decode")),
            params=gen,
            observer_for=obs,
            wire_schema=_exact_lists(
                _Instructions, {"instructions": cfg.instructions_per_metadata}
            ),
        )
        self.improve = Generate(
            "improve",
            depth=2,
            template=t.improve,
            schema=_Improved,
            parse_text=_parse_improved,
            params=gen,
            observer_for=obs,
        )
        self.respond = Generate(
            "respond",
            depth=3,
            template=t.respond,
            schema=None,
            parse_text=lambda s: s.strip(),
            params={"temperature": cfg.response_temperature, "max_tokens": cfg.response_max_tokens},
            observer_for=obs,
            parse_retries=0,
        )
        self.judge = Generate(
            "judge",
            depth=4,
            template=t.judge,
            schema=_Pair,
            parse_text=_parse_pair,
            params={"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens},
            observer_for=obs,
        )
        self.metadata: list[Metadata] = []
        self.seed_failures: list[RowOut] = []
        self.total: int | None = None
        self.kept_by_iteration: Counter[int] = Counter()
        self.rejected = 0
        self.failed_by_stage: Counter[str] = Counter()
        self.instructions = 0
        self.short_decodes = 0
        self.seeds_read = 0
        self.judge_pairs = 0

    # ---------------------------------------------------------------- prepare
    async def prepare(self) -> None:
        """Encode all seeds (concurrently), then augment to ``metadata_count`` items.

        Raises:
            EndpointError: a seed could not be encoded because the endpoint failed; the
                run stops (resumable) rather than build a metadata pool that a rerun
                would build differently.
        """
        strong = self.ctx.callers["strong"]
        limit = asyncio.Semaphore(self.cfg.encode_concurrency)
        results: dict[int, Metadata | RowOut] = {}

        async def encode(item: Item) -> None:
            async with limit:
                try:
                    enc = await self.encode(strong, {"instruction": item.data["instruction"]})
                except ParseError as exc:
                    results[item.index] = failed_row(
                        self.name, item.key, source=item.source, stage="encode", error=exc
                    )
                    return
            skills = tuple(s.strip() for s in enc.skills if s.strip())[: self.cfg.max_skills]
            if not enc.use_case.strip() or not skills:
                results[item.index] = failed_row(
                    self.name,
                    item.key,
                    source=item.source,
                    stage="encode",
                    error=ParseError("empty use case or skills", stage="encode"),
                )
                return
            results[item.index] = Metadata(
                use_case=enc.use_case.strip(), skills=skills, seed_id=item.key
            )

        async with asyncio.TaskGroup() as tg:
            for rec in read_jsonl(self.ctx.input_path, required=("instruction",)):
                self.seeds_read += 1
                if isinstance(rec, BadInput):
                    results[rec.index] = failed_row(
                        self.name, rec.key, source=rec.source, stage="input", error=rec.reason
                    )
                    continue
                tg.create_task(encode(rec))
        if self.seeds_read == 0:
            raise InputError(
                "input holds no seed records (each line must be a JSON object with an instruction)",
                path=str(self.ctx.input_path),
            )
        encodings: list[Metadata] = []
        for index in sorted(results):
            value = results[index]
            if isinstance(value, Metadata):
                encodings.append(value)
            else:
                self.seed_failures.append(value)
        if not encodings:
            raise EngineError(
                "no seed could be encoded into metadata; check the input and the strong endpoint"
            )
        self.metadata = augment_metadata(
            encodings, self.cfg.metadata_count, max_skills=self.cfg.max_skills, seed=self.ctx.seed
        )
        self.total = len(self.metadata) + len(self.seed_failures)

    def work(self) -> Iterator[Item | BadInput]:
        """Metadata items, then one item per seed that failed to encode (as failed rows)."""
        for i, md in enumerate(self.metadata):
            yield Item(
                index=i,
                key=f"meta-{i}",
                data={"use_case": md.use_case, "skills": list(md.skills), "seed_id": md.seed_id},
                source=f"metadata:{i}",
            )
        base = len(self.metadata)
        for j, (_, row) in enumerate(self.seed_failures):
            yield Item(
                index=base + j,
                key=str(row["seed_id"]),
                data={"failed": row},
                source=str(row["source"]),
            )

    # ---------------------------------------------------------------- process
    async def process(self, item: Item) -> list[RowOut]:
        """Rubrics + decode for one metadata item, then every instruction's loop."""
        if "failed" in item.data:
            self.failed_by_stage[str(item.data["failed"]["stage"])] += 1
            return [("failed", dict(item.data["failed"]))]
        strong = self.ctx.callers["strong"]
        md = Metadata(
            use_case=str(item.data["use_case"]),
            skills=tuple(item.data["skills"]),
            seed_id=str(item.data["seed_id"]),
        )
        values = {"use_case": md.use_case, "skills": ", ".join(md.skills)}
        n = self.cfg.instructions_per_metadata
        try:
            rubrics, decoded = await concurrently(
                self.rubrics(strong, {**values, "k": self.cfg.rubric_count}),
                self.decode(strong, {**values, "n": n}),
            )
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or "decode"
            self.failed_by_stage[stage] += 1
            return [
                failed_row(
                    self.name,
                    item.key,
                    source=item.source,
                    stage=stage,
                    error=exc,
                    metadata={"use_case": md.use_case, "skills": list(md.skills)},
                )
            ]
        instructions = [s.strip() for s in decoded.instructions if s.strip()][:n]
        if len(instructions) < n:
            self.short_decodes += 1
        actions = [a.strip() for a in rubrics.actions if a.strip()] or ["Add one more constraint."]
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._instruction(item, md, j, text, actions))
                for j, text in enumerate(instructions)
            ]
        self.instructions += len(instructions)
        return [task.result() for task in tasks]

    async def _instruction(
        self, item: Item, md: Metadata, j: int, basic: str, actions: list[str]
    ) -> RowOut:
        cfg = self.cfg
        rng = random.Random(f"codeclm:{self.ctx.seed}:{item.key}:{j}")
        instruction = basic
        base_row: dict[str, Any] = {
            "id": row_id(self.name, item.key, j),
            "metadata": {"use_case": md.use_case, "skills": list(md.skills)},
            "seed_id": md.seed_id,
            "models": self.ctx.models(),
            "simulated": self.ctx.simulated,
        }
        history: list[dict[str, Any]] = []
        stage = "respond"
        try:
            for iteration in range(1, cfg.max_iterations + 1):
                depth = 4 * (iteration - 1)
                if iteration > 1:
                    stage = "improve"
                    action = rng.choice(actions)
                    improved = await self._call(
                        self.improve,
                        "strong",
                        {"action": action, "instruction": instruction},
                        depth,
                    )
                    instruction = improved.improved_instruction
                stage = "respond"
                strong_ans, target_ans = await concurrently(
                    self._call(self.respond, "strong", {"instruction": instruction}, depth),
                    self._call(self.respond, "target", {"instruction": instruction}, depth),
                )
                stage = "judge"
                first, swapped = await concurrently(
                    self._call(
                        self.judge,
                        "judge",
                        {
                            "instruction": instruction,
                            "answer_1": strong_ans,
                            "answer_2": target_ans,
                        },
                        depth,
                    ),
                    self._call(
                        self.judge,
                        "judge",
                        {
                            "instruction": instruction,
                            "answer_1": target_ans,
                            "answer_2": strong_ans,
                        },
                        depth,
                    ),
                )
                self.judge_pairs += 1
                s_strong, s_target = swap_average(
                    (first.assistant_1, first.assistant_2),
                    (swapped.assistant_1, swapped.assistant_2),
                )
                gap = s_strong - s_target
                scores = {"strong": s_strong, "target": s_target, "gap": gap}
                decision = route(gap, iteration, theta=cfg.theta, max_iterations=cfg.max_iterations)
                if decision == "keep":
                    self.kept_by_iteration[iteration] += 1
                    better = "strong" if gap > 0 else "target"
                    return (
                        "kept",
                        {
                            **base_row,
                            "instruction": instruction,
                            "response": strong_ans if gap > 0 else target_ans,
                            "response_source": better,
                            "iteration": iteration,
                            "scores": scores,
                        },
                    )
                history.append(
                    {"iteration": iteration, "instruction": instruction, "scores": scores}
                )
                if decision == "reject":
                    self.rejected += 1
                    return (
                        "rejected",
                        {
                            **base_row,
                            "instruction": instruction,
                            "response": strong_ans,
                            "response_source": "strong",
                            "iteration": iteration,
                            "scores": scores,
                            "reason": (
                                f"gap {gap:+.2f} within theta {cfg.theta:g} after "
                                f"{cfg.max_iterations} iterations"
                            ),
                            "history": history,
                        },
                    )
        except (EndpointError, ParseError) as exc:
            stage = exc.stage or stage
            self.failed_by_stage[stage] += 1
            _, row = failed_row(self.name, item.key, source=item.source, stage=stage, error=exc)
            return ("failed", {**row, **base_row, "instruction": instruction, "history": history})
        raise AssertionError("unreachable: route() rejects at max_iterations")

    async def _call(self, gen: Generate[Any], role: str, values: dict[str, Any], depth: int) -> Any:
        # Later iterations outrank earlier ones at the gate: finish started work first.
        return await gen(self.ctx.callers[role], values, priority=gen.depth + depth)

    def report(self) -> dict[str, Any]:
        """Kept per iteration, rejected, failed per stage, judge calls, seeds."""
        kept = sum(self.kept_by_iteration.values())
        return {
            "seeds_read": self.seeds_read,
            "seeds_failed": len(self.seed_failures),
            "metadata_items": len(self.metadata),
            "instructions": self.instructions,
            "short_decodes": self.short_decodes,
            "kept": kept,
            "kept_by_iteration": {str(k): v for k, v in sorted(self.kept_by_iteration.items())},
            "kept_first_iteration_share": (
                round(self.kept_by_iteration.get(1, 0) / kept, 3) if kept else None
            ),
            "rejected": self.rejected,
            "failed_by_stage": dict(self.failed_by_stage),
            "judge_calls": 2 * self.judge_pairs,
            "note": "counts cover the items processed by this invocation (resumed items are skipped)",
        }
