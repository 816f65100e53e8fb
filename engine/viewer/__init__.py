"""The local web viewer of runs and outputs (``synth-engine view OUT``, ``run --view``).

A read-only aiohttp server over one output directory (:mod:`.server`), which reads
shards by page through a sparse line index (:mod:`.catalog`, :mod:`.lines`) and filters
rows of any method's schema (:mod:`.query`); the page is plain HTML, CSS and JavaScript
modules in ``static/``, served as they are (no build step; docs/viewer.md says why).
"""

from __future__ import annotations

from .catalog import Catalog
from .server import ViewerServer

__all__ = ("Catalog", "ViewerServer")
