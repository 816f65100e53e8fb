"""Plots of the benchmark results: PNGs drawn from ``benchmarks/results/*.json`` only.

``python -m benchmarks.render`` calls :func:`draw_all`, which writes one PNG per figure
into ``benchmarks/plots/`` and returns what it drew, so the README embeds exactly the
pictures that exist. Each figure reads only its JSON file; nothing is measured here.

* ``grid.png``: sustained rate against the physical limit C/L, every grid cell, both
  servers, plain and streamed (``grid.json``);
* ``cpu_peers.png``: client CPU per request, the engine against the peers (``cpu_peers.json``);
* ``memory.png``: peak RSS against input size, both memory benchmarks;
* ``limiter.png``: the rate admitted by a quota-enforcing sim over any 60 s window,
  against the quota, over time (``limiter_accuracy.json``, its ``series``);
* ``adaptive.png``: adaptive concurrency against a real model (llama.cpp + SmolLM2):
  the limit, what was in flight and the latency over time (``adaptive_real.json``).

Matplotlib (the ``plots`` extra) draws them with its Agg backend: no display needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ("PLOTS", "draw_all")

PLOTS_DIR = Path(__file__).resolve().parent / "plots"
_KEPT = "#2f855a"
_COLORS = ["#2b6cb0", "#dd6b20", "#805ad5", "#319795", "#c53030", "#718096"]


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig


def grid(d: dict[str, Any]) -> Figure:
    """Sustained req/s against the physical limit C/L for every cell, per server."""
    cells = [c for c in d["cells"] if not (c.get("rpm") or c.get("tpm"))]
    servers = d["settings"]["servers"]
    fig = _figure(9.0, 4.2)
    axes = fig.subplots(1, len(servers), sharey=True)
    lats = sorted({c["latency_ms"] for c in cells})
    for ax, server in zip(axes, servers, strict=True):
        lo, hi = 5.0, 1e5
        ax.plot([lo, hi], [lo, hi], color="#1d1f21", lw=1, label="physical limit C/L")
        ax.plot([lo, hi], [0.95 * lo, 0.95 * hi], color="#1d1f21", lw=0.8, ls=":", label="95%")
        for i, lat in enumerate(lats):
            for stream in (False, True):
                pts = [
                    (c["limit_req_s"], c["sustained_req_s"])
                    for c in cells
                    if c["server"] == server
                    and c["latency_ms"] == lat
                    and c["stream"] == stream
                    and c.get("sustained_req_s")
                ]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    xs,
                    ys,
                    s=36,
                    marker="o" if not stream else "s",
                    facecolors=_COLORS[i] if not stream else "none",
                    edgecolors=_COLORS[i],
                    label=f"L={lat / 1000:g} s" + (" streamed" if stream else ""),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo * 2, hi)
        ax.set_ylim(lo * 2, hi)
        ax.set_title(f"{server}: sustained rate vs C/L (C = 64…4096)")
        ax.set_xlabel("physical limit C/L, requests/s")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    axes[0].set_ylabel("sustained requests/s")
    axes[-1].legend(fontsize=7, loc="upper left")
    return fig


def cpu_peers(d: dict[str, Any]) -> Figure:
    """Client CPU µs per request, median and each round, per client (log scale)."""
    clients = list(d["clients"].items())
    fig = _figure(7.0, 3.6)
    ax = fig.subplots()
    names = [name for name, _ in clients]
    ys = [c["cpu_us_per_request"] for _, c in clients]
    colors = [_KEPT if name.startswith("synth-engine") else _COLORS[5] for name in names]
    bars = ax.barh(names, ys, color=colors)
    for i, (_, c) in enumerate(clients):
        rounds = [r["cpu_us_per_request"] for r in c.get("rounds", [])]
        ax.scatter(rounds, [i] * len(rounds), color="#1d1f21", s=10, zorder=3)
    ax.bar_label(bars, labels=[f"{y:,.0f} µs" for y in ys], padding=22, fontsize=8)
    ax.set_xscale("log")
    ax.invert_yaxis()
    s = d["settings"]
    ax.set_title(
        f"Client CPU per request ({s['server']}, {s['latency_ms']:g} ms, "
        f"{s['concurrency']} in flight; dots: rounds)",
        fontsize=10,
    )
    ax.set_xlabel("CPU µs per request (log scale; lower is better)")
    ax.set_xlim(100, max(ys) * 6)
    return fig


def memory(results: dict[str, dict[str, Any]]) -> Figure:
    """Peak RSS against input size for each memory benchmark, with the 1.2 x target band."""
    fig = _figure(7.0, 3.8)
    ax = fig.subplots()
    series = [
        ("memory_codeclm", "seeds", "CodecLM (seeds)"),
        ("memory_backtranslation", "segments", "backtranslation (corpus segments)"),
    ]
    for i, (name, key, label) in enumerate(series):
        d = results.get(name)
        if not d:
            continue
        runs = sorted(d["runs"], key=lambda r: r[key])
        xs = [r[key] for r in runs]
        ys = [r["peak_rss_mib"] for r in runs]
        ax.plot(xs, ys, marker="o", color=_COLORS[i], label=label)
        ax.fill_between(xs, ys[0], ys[0] * 1.2, color=_COLORS[i], alpha=0.08)
        ax.annotate(f"{ys[-1]:.1f} MiB", (xs[-1], ys[-1]), textcoords="offset points",
                    xytext=(-10, 8), ha="right", fontsize=8, color=_COLORS[i])  # fmt: skip
    ax.set_xscale("log")
    ax.set_ylim(0, None)
    ax.set_xlabel("input size (log scale)")
    ax.set_ylabel("peak RSS, MiB")
    ax.set_title("Memory vs input size (shaded: up to 1.2 x the smallest run)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, lw=0.3, alpha=0.5)
    return fig


def _window(values: list[float], width: int = 60) -> list[float]:
    """Sum of the last ``width`` values at each point (a sliding 60 s window)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total)
    return out


def limiter(d: dict[str, Any]) -> Figure:
    """Admitted per sliding 60 s window against the quota, per scenario and mode."""
    scenarios = list(d["settings"]["scenarios"].items())
    fig = _figure(9.0, 3.8)
    axes = fig.subplots(1, len(scenarios))
    for ax, (scenario, quota) in zip(axes, scenarios, strict=True):
        col, unit, limit = (
            (1, "requests", quota["rpm"]) if scenario == "rpm" else (2, "tokens", quota["tpm"])
        )
        for i, run in enumerate(r for r in d["runs"] if r.get("scenario") == scenario):
            series = run.get("series") or []
            if not series:
                continue
            ts = [row[0] for row in series]
            ax.plot(ts, _window([float(row[col]) for row in series]), color=_COLORS[i],
                    label=f"{run['mode']} ({run['pct_quota_used']}% of quota)")  # fmt: skip
        ax.axhline(limit, color="#c53030", ls="--", lw=1, label=f"quota {limit:,.0f}/min")
        ax.set_title(f"{scenario} scenario: {unit} in the last 60 s", fontsize=10)
        ax.set_xlabel("seconds since start")
        peak = max(
            (max(_window([float(row[col]) for row in run.get("series") or []]), default=0.0)
             for run in d["runs"] if run.get("scenario") == scenario),
            default=0.0,
        )  # fmt: skip
        ax.set_ylim(0, max(limit * 1.15, peak * 1.05))
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, lw=0.3, alpha=0.5)
    axes[0].set_ylabel("admitted by the sim in any 60 s window")
    return fig


def adaptive(d: dict[str, Any]) -> Figure:
    """The adaptive run on the real model: concurrency limit, in flight and latency."""
    a = d["adaptive"]
    tl = a["timeline"]
    ts = [p["t_s"] for p in tl]
    fig = _figure(7.5, 3.8)
    ax = fig.subplots()
    ax.step(ts, [p["limit"] for p in tl], where="post", color=_COLORS[0], label="concurrency limit")
    ax.plot(ts, [p["in_flight"] for p in tl], color=_COLORS[3], lw=1, label="in flight")
    best = d.get("best_fixed_concurrency")
    if best:
        ax.axhline(best, color="#718096", ls=":", lw=1, label=f"best fixed setting ({best})")
    ax.set_yscale("log", base=2)
    ax.set_ylabel("requests (log2)")
    ax.set_xlabel("seconds since start")
    lat = ax.twinx()
    lat.plot(ts, [p["latency_p50_s"] for p in tl], color=_COLORS[1], lw=1, ls="--",
             label="p50 latency (right)")  # fmt: skip
    lat.set_ylabel("p50 latency, s")
    lat.set_yscale("log")
    handles = ax.get_legend_handles_labels()
    more = lat.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper right")
    ax.set_title(
        f"Adaptive concurrency on {d.get('server', '?')} + {d.get('model', '?')}: starts at "
        f"{a['start']}, settles at {a['settled_limit']}",
        fontsize=10,
    )
    ax.grid(True, lw=0.3, alpha=0.5)
    return fig


Drawer = Callable[[dict[str, dict[str, Any]]], "Figure | None"]

PLOTS: list[tuple[str, str, Drawer]] = [
    ("grid", "Sustained rate against the physical limit C/L, every grid cell",
     lambda r: grid(r["grid"]) if "grid" in r else None),
    ("cpu_peers", "Client CPU per request: the engine against bare aiohttp and the peers",
     lambda r: cpu_peers(r["cpu_peers"]) if "cpu_peers" in r else None),
    ("memory", "Peak memory against input size (1M seeds / segments)",
     lambda r: memory(r) if "memory_codeclm" in r or "memory_backtranslation" in r else None),
    ("limiter", "The limiter's admitted rate over any 60 s window against the quota",
     lambda r: limiter(r["limiter_accuracy"])
     if any(x.get("series") for x in r.get("limiter_accuracy", {}).get("runs", [])) else None),
    ("adaptive", "Adaptive concurrency against a real model (llama.cpp, SmolLM2-135M)",
     lambda r: adaptive(r["adaptive_real"]) if "adaptive_real" in r else None),
]  # fmt: skip
"""(file stem, caption, drawer) of each plot; a drawer returns None when its data is missing."""


def draw_all(results: dict[str, dict[str, Any]], folder: Path = PLOTS_DIR) -> list[tuple[str, str]]:
    """Draw every plot whose data is in ``results`` into ``folder``.

    Returns:
        ``(file name, caption)`` of each PNG written, in README order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for stem, caption, draw in PLOTS:
        fig = draw(results)
        if fig is None:
            continue
        name = f"{stem}.png"
        # No software/date metadata: the same JSON draws the same bytes.
        fig.savefig(folder / name, format="png", metadata={"Software": None})
        drawn.append((name, caption))
    return drawn
