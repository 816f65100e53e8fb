"""Serving benchmarks side by side: synth-engine bench, guidellm, aiperf and inference-perf.

Each tool drives the same local endpoint (nginx + echo: a fixed streamed reply of 32
tokens after a fixed delay, almost no server CPU) in the same run, one after the other,
each in its own process and its own virtual environment (``benchmarks/.venv-TOOL``,
created here with ``pip install TOOL``; inference-perf needs Python >= 3.12, taken from
pyenv when the default Python is older), offline, with a tokenizer this script trains
from the repository's own docs (a byte-level BPE of 4,000 tokens, ``tokenizers``) and
saves as a Hugging Face tokenizer folder.

Two scenarios:

* **load**: 256 requests in flight against a 50 ms endpoint (limit 5,120 req/s). Each
  tool runs twice, with N1 and N2 requests; the marginal figures ``(N2 - N1) / (wall2 -
  wall1)`` (requests/s) and ``(cpu2 - cpu1) / (N2 - N1)`` (client CPU per request, the
  tool's whole process tree, from ``RUSAGE_CHILDREN``) leave out start-up (imports,
  tokenizer, worker processes), which costs the Python tools 5-20 s.
* **accuracy**: 64 in flight against a 1 s endpoint (limit 64 req/s, far from any
  client's CPU limit): the median latency and TTFT each tool reports, against the
  endpoint's 1 s.

The load average before and after each run is stored with it; ratios are taken within
this one run. ``python -m benchmarks.bench_peers [--quick]``; ``--tools`` picks a subset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    CpuWatch,
    exit_on_sigterm,
    free_port,
    loadavg,
    wait_quiet,
    write_result,
)
from benchmarks._nginx import ensure_nginx, render_config

HERE = Path(__file__).resolve().parent
WORK = HERE / ".peers-work"
TOOLS = ("synth-engine", "guidellm", "aiperf", "inference-perf")
PYTHON_312 = (
    shutil.which("python3.12"),
    "/root/.pyenv/versions/3.12.1/bin/python3",
)
OFFLINE = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
ROUNDS = 2  # each load run pair is repeated, order reversed; the quieter round is kept
QUIET_PCT = 25.0  # wait (at most 15 s) for other processes to use less CPU than this
TOKENS = 32  # output tokens of the nginx stream; prompts are asked for at 32 tokens too


# ------------------------------------------------------------------ environments
def venv(tool: str) -> Path:
    """The tool's virtual environment folder."""
    return HERE / f".venv-{tool}"


def ensure_venv(tool: str) -> str:
    """Create the tool's venv and install it if needed; return its version."""
    if tool == "synth-engine":
        from engine import __version__

        return __version__
    path = venv(tool)
    py = path / "bin" / "python"
    if not py.exists():
        base = sys.executable
        if tool == "inference-perf" and sys.version_info < (3, 12):
            base = next((p for p in PYTHON_312 if p and Path(p).exists()), None) or ""
            if not base:
                raise RuntimeError("inference-perf needs Python >= 3.12 (pyenv install 3.12)")
        subprocess.run([base, "-m", "venv", str(path)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", tool], check=True)
    out = subprocess.run(
        [str(py), "-m", "pip", "show", tool], capture_output=True, text=True, check=True
    ).stdout
    return next(
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")
    )


def build_tokenizer(folder: Path) -> Path:
    """Train a byte-level BPE tokenizer on the repo's docs; save it as an HF tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder.mkdir(parents=True, exist_ok=True)
    texts = [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))] + [
        (ROOT / "README.md").read_text()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=4000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(folder / "tokenizer.json"))
    special = {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000, **special}
        )
    )
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    # transformers' AutoTokenizer also looks for a model config in a folder
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 4000}))
    return folder


@contextlib.contextmanager
def streamed_endpoint(latency_ms: float) -> Iterator[str]:
    """nginx + echo answering the streamed reply at the root ``/v1/chat/completions``.

    ``benchmarks._nginx`` serves each latency under its own path prefix; inference-perf
    joins its API path to the server's root (a prefix is dropped), so here the one
    latency's streamed location is moved to the root. Yields the base URL (no ``/v1``).
    """
    binary = ensure_nginx()
    with tempfile.TemporaryDirectory(prefix="bench-peers-nginx-") as tmp:
        prefix = Path(tmp)
        port = free_port()
        conf = render_config(prefix, port, [latency_ms], TOKENS).replace(
            f"location = /l{latency_ms:g}s/v1/chat/completions", "location = /v1/chat/completions"
        )
        (prefix / "nginx.conf").write_text(conf)
        proc = subprocess.Popen(
            [
                binary,
                "-p",
                str(prefix),
                "-c",
                str(prefix / "nginx.conf"),
                "-e",
                str(prefix / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("nginx did not start") from None
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# ------------------------------------------------------------------ tool commands
Runner = Callable[[str, int, int, Path, Path], list[str]]


def _synth(base: str, concurrency: int, requests: int, out: Path, tok: Path) -> list[str]:
    return [
        sys.executable, "-m", "engine", "bench", "--base-url", base + "/v1", "--model",
        "sim-model", "--concurrency", str(concurrency), "--requests", str(requests),
        "--stream", "--max-tokens", str(TOKENS), "--prompt-tokens", str(TOKENS),
        "--out", str(out),
    ]  # fmt: skip


def _guidellm(base: str, concurrency: int, requests: int, out: Path, tok: Path) -> list[str]:
    return [
        str(venv("guidellm") / "bin" / "guidellm"), "run",
        "--backend", f"kind=openai_http,target={base},model=sim-model,validate_backend=false",
        "--profile", f"kind=concurrent,streams={concurrency}",
        "--constraint", f"kind=max_requests,count={requests}",
        "--data", f"kind=synthetic_text,prompt_tokens={TOKENS},output_tokens={TOKENS}",
        "--tokenizer", f"kind=huggingface_auto,model={tok}",
        "--output", f"kind=json,path={out / 'out.json'}",
        "--disable-progress",
    ]  # fmt: skip


def _aiperf(base: str, concurrency: int, requests: int, out: Path, tok: Path) -> list[str]:
    return [
        str(venv("aiperf") / "bin" / "aiperf"), "profile", "--model", "sim-model",
        "--url", base, "--endpoint-type", "chat", "--streaming",
        "--concurrency", str(concurrency), "--request-count", str(requests),
        "--tokenizer", str(tok), "--isl", str(TOKENS), "--osl", str(TOKENS),
        "--artifact-dir", str(out), "--ui-type", "none",
    ]  # fmt: skip


def _inference_perf(base: str, concurrency: int, requests: int, out: Path, tok: Path) -> list[str]:
    config = {
        "api": {"type": "chat", "streaming": True},
        "server": {
            "type": "vllm",
            "model_name": "sim-model",
            "base_url": base,
            "ignore_eos": False,
        },
        "tokenizer": {"pretrained_model_name_or_path": str(tok)},
        # inference-perf's random, synthetic and shared-prefix generators send only to the
        # completions API; its mock generator ("mock prompt N") speaks chat, like the others
        "data": {"type": "mock"},
        "load": {
            "type": "concurrent",
            "stages": [{"num_requests": requests, "concurrency_level": concurrency}],
        },
        "report": {"request_lifecycle": {"summary": True, "per_stage": True, "per_request": False}},
        "storage": {"local_storage": {"path": str(out)}},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(json.dumps(config))
    return [str(venv("inference-perf") / "bin" / "inference-perf"), "--config_file", str(path)]


COMMANDS: dict[str, Runner] = {
    "synth-engine": _synth,
    "guidellm": _guidellm,
    "aiperf": _aiperf,
    "inference-perf": _inference_perf,
}


# ------------------------------------------------------------------ what each tool reports
def _reported_synth(out: Path) -> dict[str, Any]:
    d = json.loads((out / "summary.json").read_text())
    p = d["points"][0]
    return {
        "ok": p["ok"],
        "req_s": p["requests_per_s"],
        "latency_p50_ms": p["latency_ms"]["p50"],
        "ttft_p50_ms": p["ttft_ms"]["p50"],
    }


def _reported_guidellm(out: Path) -> dict[str, Any]:
    m = json.loads((out / "out.json").read_text())["benchmarks"][0]["metrics"]
    return {
        "ok": m["request_latency"]["successful"]["count"],
        "req_s": m["requests_per_second"]["successful"]["mean"],
        "latency_p50_ms": m["request_latency"]["successful"]["median"] * 1000.0,
        "ttft_p50_ms": m["time_to_first_token_ms"]["successful"]["median"],
    }


def _reported_aiperf(out: Path) -> dict[str, Any]:
    d = json.loads((out / "profile_export_aiperf.json").read_text())
    return {
        "ok": d["request_count"]["avg"],
        "req_s": d["request_throughput"]["avg"],
        "latency_p50_ms": d["request_latency"]["p50"],
        "ttft_p50_ms": d["time_to_first_token"]["p50"],
    }


def _reported_inference_perf(out: Path) -> dict[str, Any]:
    files = sorted(out.rglob("summary_lifecycle_metrics.json")) or sorted(
        out.rglob("*summary*.json")
    )
    d = json.loads(files[-1].read_text())
    succ = d.get("successes", d)
    lat = succ.get("latency", {})

    def med(block: dict[str, Any] | None) -> float | None:
        if not block:
            return None
        v = block.get("median", block.get("p50"))
        return None if v is None else float(v) * 1000.0

    return {
        "ok": succ.get("count"),
        "req_s": succ.get("throughput", {}).get("requests_per_sec"),
        "latency_p50_ms": med(lat.get("request_latency")),
        "ttft_p50_ms": med(lat.get("time_to_first_token")),
    }


REPORTED: dict[str, Callable[[Path], dict[str, Any]]] = {
    "synth-engine": _reported_synth,
    "guidellm": _reported_guidellm,
    "aiperf": _reported_aiperf,
    "inference-perf": _reported_inference_perf,
}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_tool(
    tool: str, base: str, concurrency: int, requests: int, tok: Path, tag: str
) -> dict[str, Any]:
    """Run one tool once; its wall time, its process tree's CPU time and what it reported."""
    out = WORK / f"{tool}-{tag}-{requests}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = COMMANDS[tool](base, concurrency, requests, out, tok)
    env = {**os.environ, **OFFLINE}
    if tool == "synth-engine":
        env["PYTHONPATH"] = str(ROOT)
    before = loadavg()
    with CpuWatch() as watch:
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=out, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        wall = time.perf_counter() - t0
        cpu = _children_cpu() - cpu0
    result: dict[str, Any] = {
        "requests": requests,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "exit": proc.returncode,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        # the share of the machine's CPU used by other processes (not the tool, not nginx)
        "foreign_cpu_pct": watch.foreign_cpu_pct,
    }
    try:
        result["reported"] = {
            k: (round(v, 3) if isinstance(v, float) else v) for k, v in REPORTED[tool](out).items()
        }
    except (OSError, KeyError, IndexError, ValueError, TypeError) as exc:
        result["reported"] = None
        result["error"] = f"{type(exc).__name__}: {exc}; stderr: {proc.stderr[-1500:]}"
    return result


def marginal(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Rate and CPU per request of the requests the longer run added (start-up cancels out)."""
    dn = b["requests"] - a["requests"]
    dw = b["wall_s"] - a["wall_s"]
    dc = b["cpu_s"] - a["cpu_s"]
    return {
        "req_s": round(dn / dw, 1) if dw > 0 else None,
        "cpu_us_per_request": round(dc / dn * 1e6, 1) if dn > 0 else None,
        "startup_s": round(a["wall_s"] - a["requests"] * dw / dn, 2) if dn > 0 and dw > 0 else None,
    }


def _foreign(rd: dict[str, Any]) -> float:
    return max(run.get("foreign_cpu_pct") or 0.0 for run in rd["runs"])


def aggregate(load: dict[str, Any]) -> None:
    """Each tool's figures from its quietest round (least CPU used by other processes).

    On a shared machine a round run while others were busy reads low for whichever tool
    it hit; as in the grid, the quieter attempt is kept and every round stays in the JSON.
    """
    for entry in load.values():
        best = min(entry["rounds"], key=_foreign)
        entry["chosen_round"] = entry["rounds"].index(best)
        for key in ("req_s", "cpu_us_per_request", "startup_s"):
            entry[key] = best[key]
        entry["foreign_cpu_pct"] = _foreign(best)


def ratios_of(load: dict[str, Any]) -> dict[str, Any]:
    """Each tool's CPU per request over the engine's, and its rate as a share of the limit."""
    engine = load.get("synth-engine", {})
    return {
        t: {
            "cpu_x_engine": round(v["cpu_us_per_request"] / engine["cpu_us_per_request"], 1)
            if engine.get("cpu_us_per_request") and v.get("cpu_us_per_request")
            else None,
            "rate_pct_of_limit": round(100.0 * v["req_s"] / 5120.0, 1) if v.get("req_s") else None,
        }
        for t, v in load.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write ``results/bench_peers.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts; results/quick/")
    ap.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    args = ap.parse_args(argv)
    exit_on_sigterm()
    n1, n2 = (500, 1500) if args.quick else (3000, 9000)
    acc_requests = 128 if args.quick else 640
    versions = {t: ensure_venv(t) for t in args.tools}
    tok = build_tokenizer(WORK / "tokenizer")
    load: dict[str, Any] = {}
    accuracy: dict[str, Any] = {}
    with streamed_endpoint(50.0) as base:
        for rnd in range(ROUNDS):
            # the order is reversed every other round, so no tool always runs first
            order = args.tools if rnd % 2 == 0 else list(reversed(args.tools))
            for tool in order:
                wait_quiet(QUIET_PCT)
                small = run_tool(tool, base, 256, n1, tok, "load")
                wait_quiet(QUIET_PCT)
                big = run_tool(tool, base, 256, n2, tok, "load")
                entry = load.setdefault(tool, {"rounds": []})
                entry["rounds"].append({"runs": [small, big], **marginal(small, big)})
                print(tool, "load", entry["rounds"][-1] | {"runs": None}, flush=True)
        aggregate(load)
    with streamed_endpoint(1000.0) as base:
        for tool in args.tools:
            wait_quiet(QUIET_PCT)
            accuracy[tool] = run_tool(tool, base, 64, acc_requests, tok, "accuracy")
            print(tool, "accuracy", accuracy[tool].get("reported"), flush=True)
    ratios = ratios_of(load)
    write_result(
        "bench_peers",
        {
            "settings": {
                "server": "nginx + echo, streamed, 32 output tokens as 32 SSE events",
                "load": {
                    "concurrency": 256,
                    "latency_ms": 50,
                    "limit_req_s": 5120,
                    "requests": [n1, n2],
                },
                "accuracy": {
                    "concurrency": 64,
                    "latency_ms": 1000,
                    "limit_req_s": 64,
                    "requests": acc_requests,
                },
                "rounds": ROUNDS,
                "prompt_tokens": TOKENS,
                "output_tokens": TOKENS,
                "versions": versions,
                "python": sys.version.split()[0],
            },
            "load": load,
            "accuracy": accuracy,
            "ratios": ratios,
        },
        quick=args.quick,
    )
    return 0


# ------------------------------------------------------------------ README section
def render_section(d: dict[str, Any]) -> list[str]:
    """The README section (called by ``benchmarks.render``)."""
    from benchmarks.render import stamp, table

    s = d["settings"]
    v = s["versions"]
    rows = []
    for tool, r in d["load"].items():
        chosen = r["rounds"][r.get("chosen_round", -1)] if "rounds" in r else r
        rep = chosen["runs"][1].get("reported") or {}
        ratio = d["ratios"].get(tool, {})
        rows.append([
            tool, v.get(tool, "?"), r.get("req_s"), ratio.get("rate_pct_of_limit"),
            r.get("cpu_us_per_request"), ratio.get("cpu_x_engine"), rep.get("req_s"),
            rep.get("latency_p50_ms"), r.get("startup_s"),
            " / ".join(
                f"{run.get('foreign_cpu_pct', '-')}"
                for rd in r.get("rounds", [r])
                for run in rd["runs"]
            ),
            " / ".join(f"{rd['cpu_us_per_request']}" for rd in r.get("rounds", [r])),
        ])  # fmt: skip
    acc_rows = []
    for tool, r in d["accuracy"].items():
        rep = r.get("reported") or {}
        acc_rows.append(
            [
                tool,
                rep.get("ok"),
                rep.get("req_s"),
                rep.get("latency_p50_ms"),
                rep.get("ttft_p50_ms"),
                r.get("foreign_cpu_pct"),
            ]
        )
    lines = [
        "## Serving benchmarks side by side: synth-engine bench, guidellm, aiperf, inference-perf",
        "",
        "`python -m benchmarks.bench_peers` runs the four tools one after the other on one nginx + echo",
        "endpoint (a fixed streamed reply of 32 tokens as 32 SSE events after a fixed delay; almost no",
        "server CPU), each in its own process and virtual environment (`benchmarks/.venv-TOOL`), offline,",
        "with a byte-level BPE tokenizer the script trains on the repository's docs. All tools stream and",
        f"ask for {s['prompt_tokens']}-token prompts and {s['output_tokens']} output tokens. "
        f"Versions: {', '.join(f'{k} {x}' for k, x in v.items())}; {stamp(d)}.",
        "",
        f"**Load**: {s['load']['concurrency']} in flight against a {s['load']['latency_ms']} ms endpoint "
        f"(limit {s['load']['limit_req_s']:,} req/s). Each tool runs {s['load']['requests'][0]:,} and "
        f"{s['load']['requests'][1]:,} requests, in {s.get('rounds', 1)} rounds (order reversed every other round;",
        "each tool's figures are from its quieter round, the one whose runs had the least foreign",
        'CPU, as in the grid; every round is in the JSON; "it reports" is from that round); rate and CPU are',
        "the marginal ones, (N2 - N1) / (wall2 - wall1)",
        "and (CPU2 - CPU1) / (N2 - N1) over the tool's whole process tree, so start-up (imports, tokenizer,",
        "worker processes) is left out; it is shown on its own.",
        "",
        *table(
            [
                "tool",
                "version",
                "req/s",
                "% of limit",
                "client CPU µs/request",
                "x engine",
                "req/s it reports",
                "p50 latency it reports, ms",
                "start-up s",
                "foreign CPU % per run (N1, N2; round 1, then 2)",
                "CPU µs/request per round",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"**Accuracy**: {s['accuracy']['concurrency']} in flight against a "
        f"{s['accuracy']['latency_ms']:,} ms endpoint (limit {s['accuracy']['limit_req_s']} req/s, far below any",
        f"tool's CPU limit), {s['accuracy']['requests']} requests: what each tool reports. The endpoint's own latency",
        "is 1,000 ms to the first token and about the same to the last (the 32 events follow at once).",
        "",
        *table(
            [
                "tool",
                "requests ok",
                "req/s it reports",
                "p50 latency ms",
                "p50 TTFT ms",
                "foreign CPU %",
            ],
            acc_rows,
        ),
        "",
        'Ratios are within this one run. The machine is shared: "foreign CPU" is the share of its',
        "2 cores used by other processes during each run (all cores' busy time minus the tool's",
        "process tree and nginx); each run's load average is in the JSON (it counts the tool's own",
        'processes too: aiperf runs a dozen). "req/s it reports" is each tool\'s own figure,',
        "over its own measuring window; the marginal rate is the same clock for all.",
        "All figures: `benchmarks/results/bench_peers.json`.",
        "",
    ]
    return lines


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
