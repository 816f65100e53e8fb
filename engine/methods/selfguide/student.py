"""The student model's calls: one input per generation prompt, ``annotate_n`` samples
per input, each counted in its stage's metrics (``generate``, ``annotate``).

The student is the run's ``role`` (``target`` by default), reached through the public
:class:`~engine.methods.custom.Context`: its caller (cached, gated, budgeted) and its
stage observers. Annotation asks for ``n`` choices in one request (with ``best_of``), or
sends ``annotate_n`` parallel requests with distinct ``sample_index`` and ``seed`` for
servers without ``n``. ``top_k`` and ``best_of`` go out only when the sampling
extensions are on (:func:`~engine.methods.selfguide.config.sends_extensions`).
"""

from __future__ import annotations

import asyncio
import random

from ...errors import BudgetExceeded
from ..custom import Context
from .config import Sampling, SelfGuideConfig
from .prompts import Chat

__all__ = ("Student",)

Param = float | None
"""A sampling parameter's value (None: not sent)."""


class Student:
    """Calls the student for one run (see the module docstring)."""

    def __init__(self, cfg: SelfGuideConfig, ctx: Context, sampling: Sampling) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.sampling = sampling

    async def _call(
        self, stage: str, messages: Chat, *, sample_index: int, **params: Param
    ) -> list[str]:
        # The role is looked up when a call is made: ``validate`` builds the method
        # without any endpoint.
        caller = self.ctx.caller(self.cfg.role)
        obs = self.ctx.observer(stage)
        obs.calls += 1
        try:
            reply = await caller.chat(
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

    async def generate(self, messages: Chat, *, sample_index: int, temperature: float) -> str:
        """The raw reply to one input-generation prompt ("" when there is none).

        Raises:
            EndpointError: the call failed for good.
        """
        texts = await self._call(
            "generate",
            messages,
            sample_index=sample_index,
            temperature=temperature,
            max_tokens=self.cfg.generation_max_tokens,
            top_k=self.sampling["generation_top_k"],
        )
        return texts[0] if texts else ""

    async def annotate(self, messages: Chat, key: str) -> list[str]:
        """``annotate_n`` samples of the output for one input (stripped).

        Raises:
            EndpointError: a call failed for good.
        """
        cfg = self.cfg
        temperature = cfg.annotate_temperature
        max_tokens = cfg.annotate_max_tokens
        top_k = self.sampling["annotate_top_k"]
        if cfg.annotate_n_in_one_request:
            texts = await self._call(
                "annotate",
                messages,
                sample_index=0,
                n=cfg.annotate_n,
                best_of=self.sampling["annotate_best_of"],
                temperature=temperature,
                max_tokens=max_tokens,
                top_k=top_k,
            )
            return [t.strip() for t in texts]
        seed_base = random.Random(f"selfguide:{self.ctx.seed}:annotate:{key}").randrange(2**31)
        replies = await asyncio.gather(
            *(
                self._call(
                    "annotate",
                    messages,
                    sample_index=i,
                    seed=seed_base + i,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    top_k=top_k,
                )
                for i in range(cfg.annotate_n)
            )
        )
        return [(r[0] if r else "").strip() for r in replies]
