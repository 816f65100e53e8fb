"""The HTML report: one self-contained file with inline SVG plots, readable offline.

No script, no stylesheet or font from elsewhere: the page is the summary tables and, per
load point, the latency of every request over the run (sampled down to at most
``MAX_DOTS`` dots), and for a sweep the rate-vs-latency and rate-vs-throughput curves.
Each plot is an ``<svg class="plot" data-plot=NAME>`` whose marks carry
``class="mark"``, so a test can check that it is there and drawn.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ("MAX_DOTS", "render_html", "svg_plot")

MAX_DOTS = 2000
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
_W, _H = 640, 300
_L, _R, _T, _B = 64, 16, 16, 44


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out = []
    t = first
    while t <= hi + step * 1e-9:
        out.append(round(t, 10))
        t += step
    return out


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def svg_plot(
    name: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    x_label: str,
    y_label: str,
    lines: bool = False,
) -> str:
    """An SVG scatter (or line) plot of named series of ``(x, y)`` points."""
    pts = [p for _, s in series for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    x0, x1 = (min(p[0] for p in pts), max(p[0] for p in pts)) if pts else (0.0, 1.0)
    y1 = max((p[1] for p in pts), default=1.0)
    y0 = 0.0
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0
    xt, yt = _ticks(x0, x1), _ticks(y0, y1 * 1.05)
    x1, y1 = max(x1, xt[-1]), max(y1, yt[-1])
    pw, ph = _W - _L - _R, _H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return _T + ph - (y - y0) / (y1 - y0) * ph

    parts = [
        f'<svg class="plot" data-plot="{html.escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(y_label)} vs {html.escape(x_label)}">',
        f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    parts.extend(
        f'<line x1="{sx(t):.1f}" y1="{_T + ph}" x2="{sx(t):.1f}" y2="{_T + ph + 4}" stroke="#333"/>'
        f'<text x="{sx(t):.1f}" y="{_T + ph + 16}" font-size="11" text-anchor="middle">{_fmt(t)}</text>'
        for t in xt
        if x0 <= t <= x1
    )
    parts.extend(
        f'<line x1="{_L}" y1="{sy(t):.1f}" x2="{_L + pw}" y2="{sy(t):.1f}" stroke="#eee"/>'
        f'<text x="{_L - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{_fmt(t)}</text>'
        for t in yt
        if y0 <= t <= y1
    )
    parts.append(
        f'<text x="{_L + pw / 2}" y="{_H - 8}" font-size="12" text-anchor="middle">{html.escape(x_label)}</text>'
        f'<text x="14" y="{_T + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {_T + ph / 2})">{html.escape(y_label)}</text>'
    )
    for i, (label, s) in enumerate(series):
        colour = _COLOURS[i % len(_COLOURS)]
        good = [p for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
        if lines and len(good) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        r = 3 if lines else 1.6
        parts.extend(
            f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{colour}" '
            f'fill-opacity="{0.9 if lines else 0.5}"/>'
            for x, y in good
        )
        parts.append(
            f'<rect x="{_L + 8}" y="{_T + 6 + 16 * i}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{_L + 22}" y="{_T + 15 + 16 * i}" font-size="11">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _sample(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_DOTS:
        return points
    step = len(points) / MAX_DOTS
    return [points[int(i * step)] for i in range(MAX_DOTS)]


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(
    report: dict[str, Any], timelines: Sequence[dict[str, list[tuple[float, float]]]]
) -> str:
    """The report page.

    Args:
        report: the summary (``meta`` and ``points``; see :mod:`engine.bench.report`).
        timelines: per point, named series of ``(seconds into the run, milliseconds)``.
    """
    meta = report["meta"]
    points = report["points"]
    title = f"synth-engine bench: {meta['model']} at {meta['base_url']}"
    sim = (
        '<p class="sim"><strong>SIMULATED ENDPOINT</strong>: these figures are of '
        "synth-engine's simulated server, not of a model.</p>"
        if meta.get("simulated")
        else ""
    )
    rows = [
        [
            p.get("rate") if p.get("rate") is not None else p.get("concurrency"),
            p.get("send_rate_per_s"),
            p.get("completed_per_s"),
            p.get("goodput_per_s"),
            p["ok"],
            p["failed"],
            p["latency_ms"].get("p50"),
            p["latency_ms"].get("p99"),
            p["latency_from_intended_ms"].get("p99"),
            p["ttft_ms"].get("p99"),
            p["itl_ms"].get("p99"),
            p["schedule_lag_ms"].get("p99"),
            ("met" if p["slo"]["met"] else "not met") if p.get("slo") else None,
        ]
        for p in points
    ]
    header = [
        "rate or concurrency", "sent/s", "completed/s", "goodput/s", "ok", "failed",
        "latency p50 ms", "latency p99 ms", "from intended p99 ms", "TTFT p99 ms",
        "ITL p99 ms", "lag p99 ms", "SLOs",
    ]  # fmt: skip
    sections = [f"<h2>Load points</h2>{_table(rows, header)}"]
    if len(points) > 1:
        xs = [p.get("send_rate_per_s") or p.get("requests_per_s") or 0.0 for p in points]
        curve = [
            ("latency p50 (from intended)", [(x, p["latency_from_intended_ms"].get("p50") or math.nan) for x, p in zip(xs, points, strict=True)]),
            ("latency p99 (from intended)", [(x, p["latency_from_intended_ms"].get("p99") or math.nan) for x, p in zip(xs, points, strict=True)]),
        ]  # fmt: skip
        if meta["settings"].get("stream"):
            curve.append(("TTFT p99 (from intended)", [(x, p["ttft_from_intended_ms"].get("p99") or math.nan) for x, p in zip(xs, points, strict=True)]))  # fmt: skip
        tput = [
            ("completed/s", [(x, p.get("completed_per_s") or math.nan) for x, p in zip(xs, points, strict=True)]),
        ]  # fmt: skip
        if any(p.get("goodput_per_s") is not None for p in points):
            tput.append(("goodput/s", [(x, p.get("goodput_per_s") or 0.0) for x, p in zip(xs, points, strict=True)]))  # fmt: skip
        sections.append(
            "<h2>Rate vs latency</h2>"
            + svg_plot("rate-latency", curve, x_label="sent requests/s", y_label="ms", lines=True)
            + svg_plot(
                "rate-throughput", tput, x_label="sent requests/s", y_label="requests/s", lines=True
            )
        )
    for p, tl in zip(points, timelines, strict=True):
        label = f"rate {p['rate']:g}/s" if p.get("rate") else f"concurrency {p.get('concurrency')}"
        series = [(name, _sample(pts)) for name, pts in tl.items() if pts]
        sections.append(
            f"<h2>Latency over time: {html.escape(label)}</h2>"
            + svg_plot(
                "latency-over-time",
                series,
                x_label="seconds into the run (intended send)",
                y_label="ms",
            )
        )
    settings_rows = [[k, v] for k, v in sorted(meta["settings"].items()) if v not in (None, [], {})]
    machine_rows = [[k, v] for k, v in meta["machine"].items()]
    search = report.get("search")
    search_html = ""
    if search:
        search_html = (
            "<h2>SLO search</h2><p>Highest rate meeting the SLOs: <strong>"
            f"{html.escape(str(search.get('best_rate')))}</strong> requests/s "
            f"(searched {html.escape(str(search.get('low')))} to {html.escape(str(search.get('high')))} "
            f"in steps of {html.escape(str(search.get('step')))}).</p>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
th {{ background: #f3f3f3; }}
.sim {{ background: #fff3cd; padding: 0.5em; border: 1px solid #e0c060; }}
svg.plot {{ display: block; margin: 0.5em 0 1.5em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{sim}
<p>synth-engine {html.escape(str(meta["version"]))}, started {html.escape(str(meta["started"]))};
load {html.escape(str(meta["settings"].get("load")))}; client CPU {html.escape(str(meta.get("client_cpu_s")))} s.</p>
{search_html}
{"".join(sections)}
<h2>Settings</h2>{_table(settings_rows, ["setting", "value"])}
<h2>Machine</h2>{_table(machine_rows, ["", ""])}
</body></html>
"""
