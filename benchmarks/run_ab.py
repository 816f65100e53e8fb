"""The run path's client CPU, before and after: `synth-engine run` of one job per version.

``cpu_per_request`` measures ``synth-engine bench``, whose harness does work of its own per
request (intended and actual send times, per-request records). This measures what a user's
dataset job costs: ``run`` of the ``respond`` method (a response and a judge call per
item, so two calls an item) over the same seed file against one external simulated
endpoint at 50 ms, 256 calls in flight, for this tree and each ``--base`` commit (exported
with ``git archive``), in alternating rounds. The figure is the ``run`` process's CPU time
(user + system, its start-up included), so a version's import cost shows too; the start-up
alone is measured as ``synth-engine --version``.

    python -m benchmarks.run_ab --base d2aaee3 [--base a3a5e1e] [--items 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, CpuWatch, exit_on_sigterm, sim_server, write_result
from benchmarks.stream_ab import export

CONFIG = """[run]
method = "respond"
input = "{seeds}"
output = "{out}"
max_items_in_flight = 256

[endpoints.strong]
base_url = "{url}"
model = "sim-strong"
max_concurrency = 256

[roles]
strong = "strong"

[method.respond]
threshold = 5
"""


def child_cpu(tree: Path, cmd: list[str], timeout: float) -> tuple[float, int]:
    """CPU seconds (user + system) of ``cmd`` run with ``tree``'s code, and its exit code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(cpu, 3), proc.returncode


def main(argv: list[str] | None = None) -> int:
    """Measure every version in alternating rounds; write results/run_ab.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", action="append", required=True, help="a commit to compare with")
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="run-ab-") as tmp:
        work = Path(tmp)
        trees: list[tuple[str, Path]] = []
        for rev in args.base:
            tree = work / f"tree-{rev}"
            tree.mkdir()
            trees.append((export(rev, tree), tree))
        trees.append(("this tree", ROOT))
        seeds = work / "seeds.jsonl"
        seeds.write_text(
            "".join(
                json.dumps({"id": f"s{i}", "instruction": f"Explain topic {i} in two sentences."})
                + "\n"
                for i in range(args.items)
            )
        )
        py = sys.executable
        with sim_server("--latency-ms", "50") as url:
            for rnd in range(args.rounds):
                order = trees if rnd % 2 == 0 else trees[::-1]
                for version, tree in order:
                    config = work / f"run-{rnd}-{len(runs)}.toml"
                    out = work / f"out-{rnd}-{len(runs)}"
                    config.write_text(CONFIG.format(seeds=seeds, out=out, url=url))
                    with CpuWatch() as watch:
                        cpu, rc = child_cpu(
                            tree, [py, "-m", "engine", "run", str(config), "--quiet"], 900
                        )
                    start, _ = child_cpu(tree, [py, "-m", "engine", "--version"], 60)
                    row = {
                        "version": version,
                        "round": rnd,
                        "run_cpu_s": cpu,
                        "startup_cpu_s": start,
                        "exit": rc,
                        **watch.noise(),
                    }
                    runs.append(row)
                    print(json.dumps(row), flush=True)
    summary = []
    for version, _ in trees:
        mine = [r for r in runs if r["version"] == version]
        run_cpu = statistics.median(r["run_cpu_s"] for r in mine)
        start = statistics.median(r["startup_cpu_s"] for r in mine)
        summary.append(
            {
                "version": version,
                "run_cpu_s": round(run_cpu, 3),
                "startup_cpu_s": round(start, 3),
                "us_per_call_after_startup": round((run_cpu - start) / (2 * args.items) * 1e6, 1),
                "each_run_cpu_s": [r["run_cpu_s"] for r in mine],
                "foreign_cpu_pct": [r.get("foreign_cpu_pct") for r in mine],
            }
        )
    for s in summary:
        print(
            f"{s['version']:<10} run CPU {s['run_cpu_s']} s (rounds {s['each_run_cpu_s']}), "
            f"start-up {s['startup_cpu_s']} s, {s['us_per_call_after_startup']} us per call"
        )
    path = write_result(
        "run_ab",
        {
            "settings": {"items": args.items, "calls": 2 * args.items, "rounds": args.rounds,
                         "latency_ms": 50, "in_flight": 256, "base": args.base},
            "summary": summary,
            "runs": runs,
        },
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


def render_section(data: dict[str, Any]) -> list[str]:
    """The README section (``benchmarks/render.py`` calls it)."""
    s = data["settings"]
    m = data.get("machine", {})
    rows = [
        f"| {x['version']} | {x['run_cpu_s']} | {', '.join(str(v) for v in x['each_run_cpu_s'])} "
        f"| {x['startup_cpu_s']} | {x['us_per_call_after_startup']} | "
        f"{', '.join(str(v) for v in x['foreign_cpu_pct'])} |"
        for x in data["summary"]
    ]
    return [
        "## The run path's CPU, before and after",
        "",
        f"`python -m benchmarks.run_ab {' '.join('--base ' + b for b in s['base'])}`: "
        f"`synth-engine run` of `respond` over {s['items']:,} seeds ({s['calls']:,} calls) "
        f"against one external sim at {s['latency_ms']} ms, {s['in_flight']} in flight, "
        f"{s['rounds']} alternating rounds; the run process's CPU (user + system, start-up "
        f"included). Measured {m.get('date', '?')} on `{m.get('commit', '?')}`.",
        "",
        "| version | run CPU s (median) | each round | start-up s | µs per call after start-up "
        "| foreign CPU % |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
