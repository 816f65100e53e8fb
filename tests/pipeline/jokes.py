"""A user's own method, defined outside engine/: it writes a joke per topic and keeps the
good ones. The tests run it from Python, from the CLI (``run.method =
"tests.pipeline.jokes:Jokes"``), after SIGKILL, on Ray and as a stream."""

from __future__ import annotations

import msgspec

from engine import Context, Item, Kept, Method, MethodConfig, Rejected, TypedRow


class JokesConfig(MethodConfig, frozen=True):
    """``[method.jokes]``."""

    threshold: float = 5.0
    variants: int = 2


class Joke(msgspec.Struct):
    """What the strong model is asked for (structured output)."""

    setup: str
    punchline: str


class Row(msgspec.Struct):
    """One output row."""

    topic: str
    setup: str
    punchline: str
    variant: int
    score: float


class Jokes(Method):
    """Two jokes per topic; the judge scores each; the good ones are kept."""

    name = "jokes"
    Config = JokesConfig
    required_fields = ("topic",)

    def __init__(self, options: JokesConfig | None = None) -> None:
        super().__init__(options)
        self.cfg = options or JokesConfig()
        self.judged = 0

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        topic = str(item.data["topic"])
        jokes: list[Joke] = await ctx.samples(
            "strong",
            "Write a short joke about {{topic}}.",
            {"topic": topic},
            n=self.cfg.variants,
            schema=Joke,
            stage="joke",
            temperature=0.9,
        )
        rows: list[TypedRow] = []
        for variant, joke in enumerate(jokes):
            score = await ctx.judge(
                "judge",
                "Rate this joke from 1 to 10.\n{{setup}} {{punchline}}\nEnd with 'Score: <n>'.",
                {"setup": joke.setup, "punchline": joke.punchline},
                stage="judge",
                depth=1,
                sample=variant,
            )
            self.judged += 1
            row = Row(topic, joke.setup, joke.punchline, variant, score)
            if score >= self.cfg.threshold:
                rows.append(Kept(row))
            else:
                rows.append(Rejected(row, reason=f"score {score:g} below {self.cfg.threshold:g}"))
        return rows

    def report(self) -> dict[str, object]:
        return {"judged": self.judged}
