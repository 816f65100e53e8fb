"""Client CPU per request against peers, same endpoint, same in-flight count, same run.

Four clients, each in its own process measuring its own CPU time over the request phase
(CPU seconds / requests), all with the interpreter and packages of one venv:

* ``synth-engine bench`` (gate + caller + client + retries, C worker coroutines);
* a bare aiohttp + uvloop client (``_bare_client.py``: C worker coroutines, nothing else);
* the openai SDK (``AsyncOpenAI``, its default httpx transport) behind an asyncio.Semaphore;
* ``httpx.AsyncClient`` (pool of C connections) behind an asyncio.Semaphore.

Endpoint: nginx + echo answering after 50 ms (almost no server CPU), or the sim process
if nginx cannot be had. The peers are not project dependencies: they live in
``benchmarks/.venv-peers`` (gitignored), created here with ``python -m venv`` and
``pip install openai httpx`` plus ``pip install -e .`` of this repo. The slow clients get
fewer requests and a time cap, so each run stays under about a minute. Clients run in
``--rounds`` rounds (order reversed every other round); the figure per client is the
median over rounds.

    python -m benchmarks.cpu_peers [--quick] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import venv
from collections.abc import Iterator
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
from benchmarks._nginx import ensure_nginx, nginx_echo

VENV = Path(__file__).resolve().parent / ".venv-peers"
PEERS = ("openai", "httpx")
CLIENTS = ("synth-engine bench", "bare aiohttp + uvloop", "openai SDK (httpx)", "httpx")


def venv_python(path: Path = VENV) -> Path:
    """The venv's interpreter."""
    return path / "bin" / "python"


def ensure_venv(path: Path = VENV) -> dict[str, str]:
    """Create the peers' venv if needed; return the versions of the packages measured.

    Raises:
        RuntimeError: pip failed (the message holds its output).
    """
    py = venv_python(path)
    probe = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({p: m.version(p) for p in "
        "('openai', 'httpx', 'aiohttp', 'uvloop', 'synth-engine')}))"
    )

    def versions() -> dict[str, str] | None:
        if not py.exists():
            return None
        proc = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, check=False)
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else None

    found = versions()
    if found is not None:
        return found
    if not py.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    for args in (["openai", "httpx"], ["-e", str(ROOT)]):
        proc = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *args],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {' '.join(args)} failed: {proc.stderr[-2000:]}")
    found = versions()
    if found is None:
        raise RuntimeError(f"the peers' venv at {path} does not import openai/httpx/engine")
    return found


@contextlib.contextmanager
def endpoint(latency_ms: float, prefer_nginx: bool) -> Iterator[tuple[str, str]]:
    """(kind, base URL) of a fixed-latency endpoint: nginx echo, else the sim process."""
    if prefer_nginx:
        try:
            ensure_nginx()
        except RuntimeError as exc:
            print(f"{exc}; using the sim process instead", file=sys.stderr)
            prefer_nginx = False
    if prefer_nginx:
        with nginx_echo([latency_ms]) as ng:
            yield "nginx echo", ng.base_url(latency_ms)
    else:
        with sim_server("--latency-ms", str(latency_ms)) as url:
            yield "synth-engine sim (process)", url


def client_cmd(
    name: str, py: str, url: str, requests: int, concurrency: int, duration_s: float
) -> list[str]:
    """The command line of one client run."""
    if name == "synth-engine bench":
        return bench_cmd(url, requests=requests, concurrency=concurrency, max_tokens=32, python=py)
    if name == "bare aiohttp + uvloop":
        script = str(Path(__file__).with_name("_bare_client.py"))
        return [py, script, url, "sim-model", str(requests), str(concurrency), "32"]
    kind = "openai" if name.startswith("openai") else "httpx"
    script = str(Path(__file__).with_name("_peer_clients.py"))
    return [py, script, kind, url, "sim-model", str(requests), str(concurrency), "32"] + [
        str(duration_s)
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure every client, print the table, write results/cpu_peers.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests; writes results/quick/")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--fast-requests", type=int, default=None, help="engine and bare (20000)")
    ap.add_argument("--slow-requests", type=int, default=None, help="openai and httpx (3000)")
    ap.add_argument("--slow-seconds", type=float, default=50.0, help="time cap of slow clients")
    ap.add_argument("--no-nginx", action="store_true", help="use the sim process")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    fast_n = args.fast_requests or (5000 if args.quick else 20000)
    slow_n = args.slow_requests or (600 if args.quick else 3000)
    versions = ensure_venv()
    py = str(venv_python())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
    with endpoint(args.latency_ms, not args.no_nginx) as (server, url):
        # Warm the server and the OS (first connections, page cache) with a short bare run.
        run_json(client_cmd(CLIENTS[1], py, url, 2000, 64, 30.0))
        for rnd in range(args.rounds):
            order = CLIENTS if rnd % 2 == 0 else tuple(reversed(CLIENTS))
            for name in order:
                slow = name in CLIENTS[2:]
                n = slow_n if slow else fast_n
                cmd = client_cmd(name, py, url, n, args.concurrency, args.slow_seconds)
                with CpuWatch() as watch:
                    r = run_json(cmd, timeout=args.slow_seconds + 240)
                row = {
                    k: r[k]
                    for k in (
                        "requests", "ok", "failed", "wall_s", "requests_per_s", "cpu_s",
                        "cpu_us_per_request", "peak_rss_mb",
                    )
                }  # fmt: skip
                runs[name].append({"round": rnd, **row, **watch.noise()})
                print(
                    f"round {rnd} {name:<22} {row['ok']:>6} ok {row['requests_per_s']:>8} req/s "
                    f"{row['cpu_us_per_request']:>9} us/req  noise {watch.foreign_cpu_pct}%",
                    flush=True,
                )
    clients = {}
    for name, rows in runs.items():
        clients[name] = {
            "cpu_us_per_request": round(
                statistics.median(r["cpu_us_per_request"] for r in rows), 1
            ),
            "requests_per_s": round(statistics.median(r["requests_per_s"] for r in rows), 1),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "requests": rows[0]["requests"],
            "rounds": rows,
        }
    ours = clients["synth-engine bench"]["cpu_us_per_request"]
    bare = clients["bare aiohttp + uvloop"]["cpu_us_per_request"]
    sdk = clients["openai SDK (httpx)"]["cpu_us_per_request"]
    ratios = {
        "engine_over_bare": round(ours / bare, 3),
        "openai_over_engine": round(sdk / ours, 1),
        "httpx_over_engine": round(clients["httpx"]["cpu_us_per_request"] / ours, 1),
    }
    ok = ratios["engine_over_bare"] <= 1.3 and ratios["openai_over_engine"] >= 20.0
    print(f"\n{'client':<24} {'requests':>9} {'req/s':>9} {'CPU us/req':>11} {'peak RSS MB':>12}")
    for name, c in clients.items():
        print(
            f"{name:<24} {c['requests']:>9} {c['requests_per_s']:>9} "
            f"{c['cpu_us_per_request']:>11} {c['peak_rss_mb']:>12}"
        )
    print(
        f"engine/bare {ratios['engine_over_bare']} (target <= 1.3); openai SDK/engine "
        f"{ratios['openai_over_engine']} (target >= 20); httpx/engine {ratios['httpx_over_engine']}"
    )
    path = write_result(
        "cpu_peers",
        {
            "settings": {
                "server": server,
                "latency_ms": args.latency_ms,
                "concurrency": args.concurrency,
                "fast_requests": fast_n,
                "slow_requests": slow_n,
                "slow_seconds": args.slow_seconds,
                "rounds": args.rounds,
                "versions": versions,
            },
            "clients": clients,
            "ratios": ratios,
            "acceptance": {"met": ok},
        },
        quick=args.quick,
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
