"""Run metrics (state), the live progress display and the run report."""

from __future__ import annotations

from .core import EndpointStats, Histogram, Metrics, StageStats
from .progress import Progress
from .report import (
    EndpointReport,
    ItemsReport,
    LatencyReport,
    Report,
    RowsReport,
    StageReport,
    build_report,
    render_summary,
    write_report,
)

__all__ = (
    "EndpointReport",
    "EndpointStats",
    "Histogram",
    "ItemsReport",
    "LatencyReport",
    "Metrics",
    "Progress",
    "Report",
    "RowsReport",
    "StageReport",
    "StageStats",
    "build_report",
    "render_summary",
    "write_report",
)
