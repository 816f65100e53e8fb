"""The backtranslation method bound to a MethodContext, as the engine runs it.

The registry runs a method written on the public API as ``Adapter(cls(options), ctx)``
(``engine.methods._user_entry``): the engine's internal protocol (``prepare()``,
``work()``, ``process(item) -> [(kind, row)]``, ``finalize(out_dir)``, ``report()``). The
unit tests of the method drive it exactly so, with scripted callers, and read the
method's own figures through it.
"""

from __future__ import annotations

from engine.methods.adapter import Adapter
from engine.methods.backtranslation import Backtranslation, BacktranslationConfig
from engine.methods.base import InputCheck, MethodContext

__all__ = ("BacktranslationMethod",)


class BacktranslationMethod(Adapter):
    """:class:`Backtranslation` with ``cfg`` under the engine's internal protocol."""

    method: Backtranslation

    def __init__(self, cfg: BacktranslationConfig, ctx: MethodContext) -> None:
        super().__init__(Backtranslation(cfg), ctx)

    def check_input(self) -> InputCheck:
        """What ``validate`` reads (the method's ``check_input`` with the run's context)."""
        return self.method.check_input(self.ctx)

    @property
    def threshold(self) -> float:
        """The keep threshold."""
        return self.method.threshold

    @property
    def seed_check(self) -> InputCheck | None:
        """The seed file as ``prepare`` read it (None: no seed file)."""
        return self.method.seed_check
