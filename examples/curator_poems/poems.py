"""Curator's README example "Using curator.LLM for data generation", as a synth-engine method.

Curator chains two ``curator.LLM`` classes: a ``TopicGenerator`` asks for topics related
to a subject (structured output: a list), and a ``Poet`` writes a poem per topic. Here one
:class:`engine.Method` does both for each input record, and returns one row per topic.
Run it from the repository's root, where ``examples.curator_poems.poems`` is importable::

    python -m engine run examples/curator_poems/config.toml
"""

from __future__ import annotations

import asyncio

import msgspec

from engine import Context, EndpointError, Failed, Item, Kept, Method, ParseError, TypedRow

TOPICS = "Return 3 topics related to {{subject}}"
POEM = "Write two poems about {{topic}}."


class Topics(msgspec.Struct):
    """The topic generator's reply."""

    topics_list: list[str]


class Poem(msgspec.Struct):
    """The poet's reply."""

    title: str
    poem: str


class Poet(Method):
    """A subject's topics, then a poem about each topic (one row per topic)."""

    name = "poems"
    required_fields = ("subject",)

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        topics = await ctx.generate("strong", TOPICS, item.data, schema=Topics, stage="topics")
        async with asyncio.TaskGroup() as tg:  # the poems are written at once
            poems = [tg.create_task(self.poem(ctx, item, t)) for t in topics.topics_list]
        return [task.result() for task in poems]

    async def poem(self, ctx: Context, item: Item, topic: str) -> TypedRow:
        """One topic's row: its poem, or why it failed (the other topics still count)."""
        row = {"subject": item.data["subject"], "topic": topic}
        try:
            poem = await ctx.generate(
                "strong", POEM, {"topic": topic}, schema=Poem, stage="poem", depth=1
            )
        except (EndpointError, ParseError) as exc:
            return Failed("poem", str(exc), data=row)
        return Kept({**row, "title": poem.title, "poem": poem.poem})
