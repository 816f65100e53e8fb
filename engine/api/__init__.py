"""The importable API: :class:`Engine` runs one configured job; :class:`RunResult` says
what it did; :meth:`Engine.stream` yields :class:`Row` objects as items finish.

The package composes everything below it (config, endpoints, cache, method, scheduler,
sink, metrics): :mod:`.engine` the run itself, :mod:`.endpoints` the live endpoints and
the callers each role gets, :mod:`.watchdog` the monitor, :mod:`.files` the config and
counters written beside the shards, :mod:`.results` what a run gives back.
"""

from __future__ import annotations

from .engine import Engine
from .results import Records, Row, RunResult

__all__ = ("Engine", "Records", "Row", "RunResult")
