"""The provider APIs beside chat completions: OpenAI's Files and Batch APIs, Anthropic's.

:func:`add_provider_apis` builds their stores on the server's shared state (settings,
auth, limiter, fault plan, counters), registers their routes and adds their counters to
``/sim/stats``: ``batches`` (OpenAI files and batches) and ``anthropic`` (Messages and
Message Batches). See docs/simulated-endpoint.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from engine.clock import Clock

from .anthropic import MessagesAPI
from .batches import BatchStore
from .files import FileStore
from .lifecycle import SimTime
from .message_batches import MessageBatchStore
from .prompt_cache import PromptCache

if TYPE_CHECKING:
    from .server import _SimState

__all__ = ("add_provider_apis",)


def add_provider_apis(app: web.Application, state: _SimState, clock: Clock) -> None:
    """Register the Files, Batch, Messages and Message Batches routes on ``app``.

    Args:
        app: the simulated endpoint's application.
        state: its shared state.
        clock: time source of the batch lifecycles.
    """
    sim_time = SimTime(clock, state.settings.batches.speed)
    files = FileStore(state, state.settings.batches, sim_time)
    batches = BatchStore(state, files, sim_time)
    files.register(app)
    batches.register(app)
    state.sections["batches"] = batches.stats
    messages = MessagesAPI(state, PromptCache(clock))
    message_batches = MessageBatchStore(state, messages, sim_time)
    messages.register(app)
    message_batches.register(app)
    state.sections["anthropic"] = lambda: {
        **messages.stats(),
        "message_batches": message_batches.stats(),
    }
