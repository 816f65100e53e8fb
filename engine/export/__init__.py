"""Export for training: an output's rows as chat ``messages`` (JSONL), Parquet or a
``datasets`` directory, with a dataset card, optionally pushed to the Hugging Face Hub.

:func:`export_output` writes an export (:mod:`engine.export.job`); rows become
conversations in :mod:`engine.export.rows`, files in :mod:`engine.export.writers`, the
card in :mod:`engine.export.card`; :func:`push_export` uploads one
(:mod:`engine.export.hub`). See docs/export.md.
"""

from __future__ import annotations

from .hub import HubTarget as HubTarget
from .hub import PushResult as PushResult
from .hub import push_export as push_export
from .hub import resolve_hub as resolve_hub
from .job import ExportResult as ExportResult
from .job import default_export_dir as default_export_dir
from .job import export_output as export_output
from .rows import conversation_problem as conversation_problem
from .writers import FORMATS as FORMATS
from .writers import Format as Format

__all__ = (
    "FORMATS",
    "ExportResult",
    "Format",
    "HubTarget",
    "PushResult",
    "conversation_problem",
    "default_export_dir",
    "export_output",
    "push_export",
    "resolve_hub",
)
