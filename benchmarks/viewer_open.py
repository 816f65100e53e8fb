"""Viewer on a 1,000,000-row output: time to the first page, in a real browser and over HTTP.

Writes a CodecLM-shaped output of N rows (the kept / rejected split of the 1M-seed
memory run, ~1 KB rows, 1,000 rows per shard) with the engine's own ``ShardSink``, or
reuses it when it is already there (it is not committed: ~1 GB). Then, several times,
each with a fresh ``synth-engine view`` process (cold: no index built yet):

* ``http_first_page_s``: from the process start to the first page of rejected rows
  over HTTP (``/api/run`` then ``/api/rows``), server start-up included;
* ``browser_first_page_s``: from ``page.goto(#rows?kind=rejected)`` in headless Chromium
  (Debian's, through Playwright) until the first row is on screen (skipped without it);
* the last page, ten random pages, and one budgeted text search that matches nothing
  (how many rows one search request reads in its 0.5 s budget).

    python -m benchmarks.viewer_open [--rows 1000000] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import ROOT, exit_on_sigterm, write_result

KEPT_SHARE = 268_500 / 1_000_000  # the 1M-seed CodecLM memory run's split
WORDS = "data model answer steady plan query result method useful precise table record".split()
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _text(rng: random.Random, words: int) -> str:
    return "[simulated] " + " ".join(rng.choice(WORDS) for _ in range(words))


def make_output(out: Path, rows: int, shard_records: int = 1000) -> dict[str, int]:
    """Write (or find) a CodecLM-shaped output of ``rows`` rows; its totals."""
    from engine.io.manifest import load_manifest
    from engine.io.shards import ShardSink

    manifest = load_manifest(out) if (out / "manifest.json").exists() else None
    if manifest is not None and manifest.complete and manifest.totals.get("items") == rows:
        return dict(manifest.totals)
    sink, _ = ShardSink.open(
        out,
        shard_records=shard_records,
        config_hash="viewer-bench",
        input_fingerprint=f"synthetic:{rows}",
        method="codeclm",
        engine_version="bench",
        simulated=True,
        force_new=True,
    )
    rng = random.Random(0)
    models = {"strong": "sim-strong", "target": "sim-target", "judge": "sim-strong"}
    for i in range(rows):
        strong, target = rng.randint(1, 10), rng.randint(1, 10)
        base = {
            "id": f"{i:016x}",
            "metadata": {"use_case": _text(rng, 6), "skills": [_text(rng, 5), _text(rng, 4)]},
            "seed_id": f"seed-{i}",
            "models": models,
            "simulated": True,
            "instruction": _text(rng, 12),
            "response": _text(rng, 90),
            "response_source": "strong",
            "iteration": 1,
            "scores": {"strong": strong, "target": target, "gap": strong - target},
        }
        if rng.random() < KEPT_SHARE:
            sink.write_item(i, [("kept", base)])
        else:
            gap = strong - target
            reason = f"gap {gap:+.2f} within theta 3 after 1 iterations"
            sink.write_item(i, [("rejected", {**base, "reason": reason, "history": []})])
    return dict(sink.close(complete=True).totals)


def _get(url: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        body = json.loads(resp.read())
    return time.perf_counter() - t0, body


class _Viewer:
    """``synth-engine view OUT --port 0`` in a subprocess."""

    def __init__(self, out: Path) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "view", str(out), "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.split()[1]
        self.ready_s = time.perf_counter() - self.started

    def rss_mib(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def http_round(out: Path, rejected: int, rng: random.Random) -> dict[str, Any]:
    """One cold viewer process: first page over HTTP, then last, random and search pages."""
    viewer = _Viewer(out)
    try:
        t_run, run = _get(viewer.url + "api/run")
        t_rows, page = _get(viewer.url + "api/rows?kind=rejected&start=0&limit=50")
        first = time.perf_counter() - viewer.started
        assert len(page["rows"]) == 50 and run["rows"]["rejected"]["total"] == rejected
        t_last, last = _get(viewer.url + f"api/rows?kind=rejected&start={rejected - 50}&limit=50")
        assert last["rows"][-1]["position"] == rejected - 1
        randoms = [
            _get(viewer.url + f"api/rows?kind=rejected&start={rng.randrange(rejected)}&limit=50")[0]
            for _ in range(10)
        ]
        t_row, _ = _get(viewer.url + f"api/row?kind=rejected&pos={rejected // 2}")
        t_search, search = _get(viewer.url + "api/rows?kind=rejected&q=no-such-text&limit=50")
        return {
            "server_ready_s": round(viewer.ready_s, 3),
            "api_run_s": round(t_run, 4),
            "api_first_page_s": round(t_rows, 4),
            "http_first_page_s": round(first, 3),
            "last_page_s": round(t_last, 4),
            "random_page_s_max": round(max(randoms), 4),
            "random_page_s_median": round(statistics.median(randoms), 4),
            "one_row_s": round(t_row, 4),
            "search_page_s": round(t_search, 3),
            "search_rows_scanned": search["scanned"],
            "viewer_rss_mib": round(viewer.rss_mib(), 1),
        }
    finally:
        viewer.close()


def browser_round(out: Path) -> dict[str, Any] | None:
    """One cold viewer process: headless Chromium opens the rows page; seconds to a row."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    exe = Path("/usr/bin/chromium")
    if not exe.exists():
        return None
    viewer = _Viewer(out)
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                tempfile.mkdtemp(prefix="viewer-bench-"),
                executable_path=str(exe),
                headless=True,
                args=CHROMIUM_ARGS,
            )
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(viewer.url + "#rows?kind=rejected")
            page.get_by_test_id("row").first.wait_for(timeout=30_000)
            shown = time.perf_counter() - t0
            info = page.get_by_test_id("page-info").inner_text()
            ctx.close()
        return {"browser_first_page_s": round(shown, 3), "page_info": info}
    finally:
        viewer.close()


def render_section(d: dict[str, Any]) -> list[str]:
    """The README section (``benchmarks/render.py`` calls it)."""
    from benchmarks.render import met, num, stamp, table

    s = d["settings"]
    t = s["totals"]
    rows = [
        [
            i + 1,
            f"{r['server_ready_s']:.3f}",
            f"**{r['http_first_page_s']:.3f}**",
            f"**{b['browser_first_page_s']:.3f}**" if b else "-",
            f"{r['last_page_s']:.4f}",
            f"{r['random_page_s_max']:.4f}",
            f"{r['search_page_s']:.3f} s / {num(r['search_rows_scanned'])}",
            r["viewer_rss_mib"],
        ]
        for i, (r, b) in enumerate(
            zip(
                d["http"], d["browser"] + [None] * (len(d["http"]) - len(d["browser"])), strict=True
            )
        )
    ]
    acc = d["acceptance"]
    return [
        "## The viewer on a 1,000,000-row output (acceptance: first page in < 1 s)",
        "",
        f"A CodecLM-shaped output written by the engine's `ShardSink`: {num(s['rows'])} rows "
        f"({num(t['kept'])} kept, {num(t['rejected'])} rejected), {num(s['shard_records'])} rows "
        f"per shard, {s['bytes'] / 2**30:.2f} GiB; generated by the script, not committed. Each",
        "round starts a new `synth-engine view` process (nothing indexed yet). HTTP: from the",
        "process start to the first page of rejected rows (`/api/run`, then `/api/rows`). Browser:",
        "headless Chromium (Debian's, through Playwright) from `page.goto(#rows?kind=rejected)`",
        "to the first row on screen. Last and random pages: one `/api/rows` request each (the",
        "manifest's row counts find the shard; a sparse line index finds the line). Search: one",
        "text search that matches nothing, which reads rows for its 0.5 s budget and says where",
        "to go on. " + stamp(d) + ".",
        "",
        *table(
            [
                "round",
                "server ready s",
                "HTTP first page s",
                "browser first page s",
                "last page s",
                "random page s (max of 10)",
                "search: s / rows read",
                "viewer RSS MiB",
            ],
            rows,
        ),
        "",
        f"Worst first page: **{num(acc['worst_first_page_s'], 3)} s** (target < 1 s): "
        f"{met(acc.get('met'))}.",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    """Make or reuse the output, measure, print and write results/viewer_open.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help="rows in the output (1,000,000)")
    ap.add_argument("--out", type=Path, default=None, help="where the output is (re)used")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="20,000 rows; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    rows = args.rows or (20_000 if args.quick else 1_000_000)
    out = args.out or Path(tempfile.gettempdir()) / f"synth-engine-viewer-{rows}"
    t0 = time.perf_counter()
    totals = make_output(out, rows)
    made_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.glob("*.jsonl"))
    print(f"output {out}: {totals} ({size / 2**20:.0f} MiB, ready in {made_s:.0f} s)", flush=True)
    rng = random.Random(1)
    http = [http_round(out, totals["rejected"], rng) for _ in range(args.rounds)]
    browser = [b for b in (browser_round(out) for _ in range(args.rounds)) if b is not None]
    for r in http:
        print(
            f"http: first page {r['http_first_page_s']} s (server ready {r['server_ready_s']} s), "
            f"last page {r['last_page_s']} s, random max {r['random_page_s_max']} s, "
            f"search {r['search_page_s']} s / {r['search_rows_scanned']:,} rows, "
            f"RSS {r['viewer_rss_mib']} MiB"
        )
    for b in browser:
        print(f"browser: first page on screen {b['browser_first_page_s']} s ({b['page_info']})")
    worst = max(
        [r["http_first_page_s"] for r in http] + [b["browser_first_page_s"] for b in browser]
    )
    path = write_result(
        "viewer_open",
        {
            "settings": {
                "rows": rows,
                "totals": totals,
                "shard_records": 1000,
                "bytes": size,
                "rounds": args.rounds,
            },
            "http": http,
            "browser": browser,
            "acceptance": {
                "target": "first page in < 1 s on a 1,000,000-row output",
                "worst_first_page_s": worst,
                "met": worst < 1.0 if rows >= 1_000_000 else None,
            },
        },
        quick=args.quick,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
