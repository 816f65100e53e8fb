"""The simulated OpenAI-compatible endpoint (``base_url = "sim"`` and ``synth-engine sim``).

Its content is deterministic from (seed, request body) and always labelled: free text
starts with ``[simulated]`` and every response carries ``x-synth-engine-simulated: true``.
By default it answers from the prompt (``answers = "prompt"``): the prompt's words, one
of the answers it lists, a score where a judge asks for one, the format and length it
asks for (:mod:`engine.sim.ask`), so a task can be dry-run offline.
It can enforce rpm/tpm limits (429 + ``Retry-After`` + ``x-ratelimit-*`` headers) and
inject faults (5xx, 429, timeouts, resets, malformed or truncated bodies, slow bodies).
"""

from __future__ import annotations

from .faults import FaultPlan
from .model import FAULT_KINDS, LABEL, WINDOW_KINDS, FaultWindow, SimSettings, format_duration
from .server import SimServer, make_app, serve_forever

__all__ = (
    "FAULT_KINDS",
    "LABEL",
    "WINDOW_KINDS",
    "FaultPlan",
    "FaultWindow",
    "SimServer",
    "SimSettings",
    "format_duration",
    "make_app",
    "serve_forever",
)
