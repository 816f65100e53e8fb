"""distilabel's preference-dataset tutorial as a synth-engine method.

distilabel wires ``LoadDataFromHub >> [TextGeneration(llm_a), TextGeneration(llm_b)] >>
GroupColumns >> UltraFeedback(aspect="overall-rating") >> FormatTextGenerationDPO``. Here
one :class:`engine.Method` does the same for each instruction: two models answer, a judge
rates each answer for overall quality, and the better one is ``chosen`` (a tie is
rejected, with its reason, instead of becoming a pair with no preference). Run it from the
repository's root, where ``examples.distilabel_preference.preference`` is importable::

    python -m engine run examples/distilabel_preference/config.toml
"""

from __future__ import annotations

import asyncio

from engine import Context, Item, Kept, Method, Rejected, TypedRow

# UltraFeedback's "overall-rating" aspect, paraphrased; its scale is 1 to 5.
RATE = """Rate the AI assistant's answer to the user's instruction for its overall quality:
helpfulness, honesty, truthfulness and instruction following.
Instruction: {{instruction}}
Answer: {{answer}}
Rate from 1 (low) to 5 (high), ending with 'Score: <n>'."""


class Preference(Method):
    """Two models answer; a judge rates both; the pair becomes chosen and rejected."""

    name = "preference"
    required_fields = ("instruction",)

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        instruction = item.data["instruction"]
        roles = ("strong", "target")
        async with asyncio.TaskGroup() as tg:  # both models answer at once
            answers = [tg.create_task(self.answer(ctx, role, instruction)) for role in roles]
        generations = [a.result() for a in answers]
        async with asyncio.TaskGroup() as tg:  # the judge rates both answers at once
            votes = [tg.create_task(self.rate(ctx, instruction, a)) for a in generations]
        ratings = [v.result() for v in votes]
        models = [ctx.models()[role] for role in roles]
        row = {
            "instruction": instruction,
            "generations": generations,
            "generation_models": models,
            "ratings": ratings,
        }
        if ratings[0] == ratings[1]:
            return [Rejected(row, reason=f"tie: both rated {ratings[0]:g}")]
        best, worst = (0, 1) if ratings[0] > ratings[1] else (1, 0)
        pair = {
            "chosen": generations[best],
            "chosen_model": models[best],
            "chosen_rating": ratings[best],
            "rejected": generations[worst],
            "rejected_model": models[worst],
            "rejected_rating": ratings[worst],
        }
        return [Kept({**row, **pair})]

    async def answer(self, ctx: Context, role: str, instruction: str) -> str:
        """TextGeneration: ``role``'s answer (distilabel's default template: the instruction)."""
        text = await ctx.generate(
            role,
            "{{instruction}}",
            {"instruction": instruction},
            stage=f"{role}_answer",
            temperature=0.7,
            max_tokens=512,
        )
        return str(text)

    async def rate(self, ctx: Context, instruction: str, answer: str) -> float:
        """UltraFeedback's overall rating of one answer, 1 to 5."""
        values = {"instruction": instruction, "answer": answer}
        return await ctx.judge("judge", RATE, values, scale=(1, 5), stage="ultrafeedback", depth=1)
