"""SELF-GUIDE prompts (paraphrased from the reference code's templates; spec: shared
methods.md section 3 (d)) and the chats built from them.

``{{name}}`` placeholders are filled by ``engine.stages.render``. :class:`Prompter`
builds the input-generation prompt of one (round, prompt): the instruction, every gold
input shuffled ("high quality"), 1..min(``max_low_quality``, #accepted) inputs accepted
so far ("low quality"; "N/A" in round 1) and, in classification mode, a label drawn
uniformly; a prompt over ``context_tokens`` is rebuilt with another sample, then without
the low-quality section. It also builds the annotator's few-shot chat.

Determinism: every random choice of a prompt comes from ``random.Random`` seeded with
``selfguide:{seed}:round:{r}:prompt:{j}``, so a resume rebuilds the same prompts.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...io.tasks import Task
from ...stages import render

if TYPE_CHECKING:
    from .config import SelfGuideConfig

__all__ = (
    "ANNOTATE_SYSTEM",
    "GENERATE",
    "GENERATE_CONDITIONAL",
    "RULE",
    "TEMPLATE_VARS",
    "Chat",
    "Prompter",
    "estimate_tokens",
    "numbered",
    "sample_pool",
)

RULE = "-" * 40

# The two input-generation prompts differ only in the label sentence of the closing rule.
_GENERATE_BODY = f"""You are an InputGenerator. Your task is to write one new [input] for the \
task described by the [instruction] below. The new [input] must differ from the examples \
and be diverse, detailed, precise, comprehensive and of high quality.
{RULE}
[instruction]
{{{{instruction}}}}
{RULE}
High-quality [input] examples (they follow the strict format requirements):
{{{{high_quality}}}}
{RULE}
Low-quality [input] examples (their format may be inaccurate):
{{{{low_quality}}}}
{RULE}
Follow the [instruction] and the format of the high-quality examples. """
_GENERATE_END = """Reply with only the new [input], nothing else.
[input]="""

GENERATE = _GENERATE_BODY + _GENERATE_END

GENERATE_CONDITIONAL = (
    _GENERATE_BODY
    + "The expected [output] for the new [input] should be {{label}}. "
    + _GENERATE_END
)

ANNOTATE_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "The assistant gives concise answers."
)

TEMPLATE_VARS: dict[str, set[str]] = {
    "generate": {"instruction", "high_quality", "low_quality"},
    "generate_conditional": {"instruction", "high_quality", "low_quality", "label"},
    "annotate_system": set(),
}

Chat = list[dict[str, str]]
"""Chat messages (``role``, ``content``)."""


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` estimated at about 4 characters each."""
    return math.ceil(len(text) / 4)


def sample_pool(pool: Sequence[str], rng: random.Random, *, cap: int = 10) -> list[str]:
    """The rolling "low-quality" sample: 1..min(cap, len(pool)) items, none if empty."""
    if not pool or cap <= 0:
        return []
    k = rng.randint(1, min(cap, len(pool)))
    return rng.sample(list(pool), k)


def numbered(texts: Sequence[str]) -> str:
    """``1. [input]="…"`` lines, one per text (JSON-quoted, as the reference)."""
    return "\n".join(
        f"{i}. [input]={json.dumps(t, ensure_ascii=False)}" for i, t in enumerate(texts, 1)
    )


class Prompter:
    """The prompts of one task (see the module docstring).

    Attributes:
        over_budget: prompts that no sample of the pool brought under ``context_tokens``.
        without_low_quality: those that fit once the low-quality section was left out.
    """

    def __init__(self, cfg: SelfGuideConfig, task: Task, *, seed: int, log: logging.Logger) -> None:
        self.cfg = cfg
        self.task = task
        self.seed = seed
        self.log = log
        self.over_budget = 0
        self.without_low_quality = 0

    def generation(
        self, round_no: int, prompt: int, pool: Sequence[str]
    ) -> tuple[Chat, str | None]:
        """The input-generation chat of one prompt and the label it asks for.

        Rebuilt with another low-quality sample while over ``context_tokens`` (up to
        ``prompt_rebuilds`` times), then without the low-quality section.
        """
        cfg, task = self.cfg, self.task
        rng = random.Random(f"selfguide:{self.seed}:round:{round_no}:prompt:{prompt}")
        gold = [e.input for e in task.examples]
        rng.shuffle(gold)
        label = rng.choice(task.labels) if task.type == "classification" else None
        template = cfg.templates.generate_conditional if label else cfg.templates.generate
        values: dict[str, object] = {
            "instruction": task.instruction,
            "high_quality": numbered(gold),
            "label": label or "",
        }
        text = ""
        for _ in range(cfg.prompt_rebuilds + 1):
            sample = sample_pool(pool, rng, cap=cfg.max_low_quality)
            values["low_quality"] = numbered(sample) if sample else "N/A"
            text = render(template, values)
            if estimate_tokens(text) <= cfg.context_tokens:
                return [{"role": "user", "content": text}], label
            if not sample:
                break
        self.over_budget += 1
        values["low_quality"] = "N/A"
        text = render(template, values)
        if estimate_tokens(text) > cfg.context_tokens:
            self.log.warning(
                "selfguide: prompt is over context_tokens=%d even without low-quality "
                "examples (~%d tokens); sent anyway",
                cfg.context_tokens,
                estimate_tokens(text),
            )
        else:
            self.without_low_quality += 1
        return [{"role": "user", "content": text}], label

    def annotation(self, text: str) -> Chat:
        """The annotator's chat: instruction, few-shot pairs, then the new input."""
        task = self.task
        msgs: Chat = [
            {"role": "system", "content": render(self.cfg.templates.annotate_system, {})},
            {"role": "user", "content": task.instruction},
            {"role": "assistant", "content": "Okay."},
        ]
        for ex in task.examples:
            msgs.append({"role": "user", "content": f"[input] = {ex.input}"})
            msgs.append({"role": "assistant", "content": ex.output})
        msgs.append({"role": "user", "content": f"[input] = {text}"})
        return msgs
