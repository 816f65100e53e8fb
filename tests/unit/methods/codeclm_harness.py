"""CodecLM as the engine runs it, for tests that look inside: the registry's
``Adapter(CodecLM(cfg), ctx)``, with the method's steps, state and counters in view."""

from __future__ import annotations

from typing import Any

from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext
from engine.methods.codeclm import CodecLM, CodecLMConfig

__all__ = ("CodecLMMethod",)


class CodecLMMethod(Adapter):
    """``Adapter(CodecLM(cfg), ctx)``: the engine's internal protocol (``prepare()``,
    ``work()``, ``process(item)`` -> ``(kind, row)`` pairs, ``report()``, ``total``).

    Any other attribute is looked up on the method's steps (``encode``, ``judge``...),
    then on the method (``metadata()``, ``kept_total()``...), then on its tally
    (``seeds_read``, ``passes``, ``kept_before``...).
    """

    def __init__(self, cfg: CodecLMConfig, ctx: MethodContext) -> None:
        self.codeclm = CodecLM(cfg)
        super().__init__(self.codeclm, ctx)

    def __getattr__(self, name: str) -> Any:
        if name == "codeclm" or name.startswith("__"):
            raise AttributeError(name)
        method = self.codeclm
        for owner in (method.steps(self.ctx), method, method.tally):
            if hasattr(owner, name):
                return getattr(owner, name)
        raise AttributeError(name)
