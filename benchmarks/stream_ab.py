"""Streamed path, before and after: this tree against a base commit, in alternating rounds.

Issue 23 asked for the streamed grid cell (nginx, C=1024, L=1 s) at >= 97% of the limit
and the client CPU per streamed request before and after, with the plain cells and
``cpu_per_request`` unchanged within noise. On a shared machine one run per version says
little, so both versions of ``synth-engine bench`` (the base commit exported with ``git
archive``, and this tree) run against the same servers round after round, the order
alternating, each run recording its load average and the other processes' CPU:

* nginx cells (``benchmarks/_nginx.py``), plain and streamed, at each ``--cells`` CxL
  (default: 1024x1000, the acceptance cell, as many requests as the grid sends there, and
  256x50, where the client's CPU is the limit);
* the ``cpu_per_request`` setting: the sim at 50 ms, plain, 256 in flight, 20,000
  requests, each version against a bare aiohttp + uvloop client measured in the same
  round (the ratio per round).

Figures per version are the medians over the rounds; every run is in the JSON.

    python -m benchmarks.stream_ab --base a3a5e1e [--rounds 3] [--cells 1024x1000 256x50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    CpuWatch,
    bench_cmd,
    exit_on_sigterm,
    run_json,
    sim_server,
    write_result,
)
from benchmarks._nginx import nginx_echo
from benchmarks.grid import ACCEPTANCE_SECONDS, MAX_TOKENS, cell_requests, physical_limit
from benchmarks.render import stamp

BARE = "benchmarks/_bare_client.py"
CPU_REQUESTS = 20000
CPU_CONCURRENCY = 256


def export(commit: str, into: Path) -> str:
    """Write the tree of ``commit`` into ``into`` (``git archive``); its short hash."""
    data = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def run_in(tree: Path, cmd: list[str], timeout: float) -> dict[str, Any]:
    """``cmd`` (printing one JSON object) with ``tree``'s code: its cwd and import path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


def figures(r: dict[str, Any], limit: float | None = None) -> dict[str, Any]:
    """What is kept of one bench run."""
    out = {
        "cpu_us_per_request": r["cpu_us_per_request"],
        "req_s": r["requests_per_s"],
        "ok": r["ok"],
        "failed": r["failed"],
    }
    if limit:
        steady = r.get("steady_requests_per_s")
        out["sustained_req_s"] = steady
        out["sustained_pct"] = round(100.0 * steady / limit, 1) if steady else None
    return out


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    """Measure both versions in alternating rounds; write results/stream_ab.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", required=True, help="the commit to compare with (before)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cells", nargs="+", default=["1024x1000", "256x50"], help="CxL_ms")
    ap.add_argument("--no-cpu", action="store_true", help="skip the cpu_per_request setting")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    cells = [tuple(int(x) for x in c.split("x")) for c in args.cells]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stream-ab-") as tmp:
        base = Path(tmp)
        base_commit = export(args.base, base)
        trees = [("before", base), ("after", ROOT)]
        with nginx_echo(sorted({float(lat) for _, lat in cells})) as nginx:
            for rnd in range(args.rounds):
                order = trees if rnd % 2 == 0 else trees[::-1]
                for c, lat in cells:
                    limit = physical_limit(c, lat / 1000.0, None, None, 1.0)
                    secs = ACCEPTANCE_SECONDS if (c, lat) == (1024, 1000) else 10.0
                    for stream in (False, True):
                        n = cell_requests(c, limit, stream, secs, 30000)
                        url = nginx.base_url(lat, stream=stream)
                        cmd = bench_cmd(url, requests=n, concurrency=c, max_tokens=MAX_TOKENS)
                        cmd += ["--stream"] if stream else []
                        for version, tree in order:
                            with CpuWatch() as watch:
                                r = run_in(tree, cmd, timeout=900)
                            row = {
                                "part": "nginx", "version": version, "round": rnd,
                                "concurrency": c, "latency_ms": lat, "stream": stream,
                                "requests": n, "limit_req_s": limit,
                                **figures(r, limit), **watch.noise(),
                            }  # fmt: skip
                            runs.append(row)
                            print(json.dumps({k: row[k] for k in list(row)[:12]}), flush=True)
        if not args.no_cpu:
            with sim_server("--latency-ms", "50") as url:
                run_json([sys.executable, BARE, url, "sim-model", "2000", "64", str(MAX_TOKENS)])
                for rnd in range(args.rounds):
                    order = trees if rnd % 2 == 0 else trees[::-1]
                    bare_cmd = [
                        sys.executable, BARE, url, "sim-model", str(CPU_REQUESTS),
                        str(CPU_CONCURRENCY), str(MAX_TOKENS),
                    ]  # fmt: skip
                    with CpuWatch() as watch:
                        bare = run_json(bare_cmd)
                    runs.append(
                        {"part": "cpu_per_request", "version": "bare", "round": rnd,
                         **figures(bare), **watch.noise()}
                    )  # fmt: skip
                    cmd = bench_cmd(
                        url, requests=CPU_REQUESTS, concurrency=CPU_CONCURRENCY,
                        max_tokens=MAX_TOKENS,
                    )  # fmt: skip
                    for version, tree in order:
                        with CpuWatch() as watch:
                            r = run_in(tree, cmd, timeout=900)
                        ratio = round(r["cpu_us_per_request"] / bare["cpu_us_per_request"], 3)
                        row = {
                            "part": "cpu_per_request", "version": version, "round": rnd,
                            **figures(r), "ratio_to_bare": ratio, **watch.noise(),
                        }  # fmt: skip
                        runs.append(row)
                        print(json.dumps(row), flush=True)
    summary = summarize(runs)
    for line in summary_lines(summary):
        print(line)
    path = write_result(
        "stream_ab",
        {
            "settings": {
                "base": args.base,
                "base_commit": base_commit,
                "rounds": args.rounds,
                "cells": args.cells,
                "max_tokens": MAX_TOKENS,
                "cpu_per_request": {
                    "requests": CPU_REQUESTS,
                    "concurrency": CPU_CONCURRENCY,
                    "latency_ms": 50,
                },
            },
            "summary": summary,
            "runs": runs,
        },
    )
    print(f"wrote {path}")
    return 0


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per setting and version."""
    keys: list[tuple[Any, ...]] = []
    for r in runs:
        key = (r["part"], r.get("concurrency"), r.get("latency_ms"), r.get("stream"), r["version"])
        if key not in keys:
            keys.append(key)
    out = []
    for part, c, lat, stream, version in keys:
        group = [
            r
            for r in runs
            if (r["part"], r.get("concurrency"), r.get("latency_ms"), r.get("stream"), r["version"])
            == (part, c, lat, stream, version)
        ]
        out.append(
            {
                "part": part, "concurrency": c, "latency_ms": lat, "stream": stream,
                "version": version, "rounds": len(group),
                "cpu_us_per_request": median(group, "cpu_us_per_request"),
                "sustained_pct": median(group, "sustained_pct"),
                "ratio_to_bare": median(group, "ratio_to_bare"),
                "each_cpu_us": [r["cpu_us_per_request"] for r in group],
                "each_sustained_pct": [r.get("sustained_pct") for r in group],
                "each_ratio": [r.get("ratio_to_bare") for r in group],
                "load_1min": [r["loadavg_before"][0] for r in group if r.get("loadavg_before")],
                "foreign_cpu_pct": [r.get("foreign_cpu_pct") for r in group],
            }
        )  # fmt: skip
    return out


def summary_lines(summary: list[dict[str, Any]]) -> list[str]:
    """One line per setting and version (also the rows of the README table)."""
    return [
        f"{s['part']:<15} C={s['concurrency']} L={s['latency_ms']} stream={s['stream']} "
        f"{s['version']:<6} cpu us {s['cpu_us_per_request']} sustained % {s['sustained_pct']} "
        f"ratio {s['ratio_to_bare']} (rounds {s['each_cpu_us']}, {s['each_sustained_pct']}, "
        f"load {s['load_1min']})"
        for s in summary
    ]


def render_section(data: dict[str, Any]) -> list[str]:
    """The README section (``benchmarks/render.py`` calls it)."""
    s = data["settings"]
    rows = []
    for x in data["summary"]:
        if x["part"] == "nginx":
            what = f"nginx C={x['concurrency']:,} L={x['latency_ms'] / 1000:g} s " + (
                "streamed" if x["stream"] else "plain"
            )
        elif x["version"] == "bare":
            what = "cpu_per_request: bare aiohttp"
        else:
            what = "cpu_per_request: synth-engine bench"
        each = ", ".join(f"{v:g}" for v in x["each_cpu_us"])
        pct = ", ".join(f"{v:g}" for v in x["each_sustained_pct"] if v is not None)
        rows.append(
            [
                what,
                x["version"],
                f"**{x['cpu_us_per_request']:g}** ({each})",
                f"**{x['sustained_pct']:g}** ({pct})" if x["sustained_pct"] is not None else "-",
                f"{x['ratio_to_bare']:g}" if x["ratio_to_bare"] is not None else "-",
                " / ".join(f"{v:g}" for v in x["load_1min"]),
            ]
        )
    header = (
        "| setting | version | client µs/request, median (each round) "
        "| sustained %, median (each) | CPU ratio to bare | load average, 1 min |"
    )
    return [
        "## Streamed path before and after (issue 23)",
        "",
        "`python -m benchmarks.stream_ab --base "
        f"{s['base']}`: `before` is commit `{s['base_commit']}` (aiohttp's per-chunk body "
        "stream), `after` this tree (`engine/llm/http11.py`, `engine/llm/chunked.py`); "
        f"{s['rounds']} rounds in alternating order against the same servers; {stamp(data)}.",
        "",
        header,
        "|---|---|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Sustained = the grid's measure (completions over whole waves, ramp and drain left",
        "out) against C/L. `cpu_per_request`: the sim at 50 ms, plain, 256 in flight; each",
        "version's CPU per request over a bare aiohttp client's in the same round.",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
