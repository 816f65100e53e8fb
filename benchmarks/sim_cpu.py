"""Simulated endpoint CPU per request: answers read from the prompt vs fixed-vocabulary text.

The simulated endpoint (``answers = "prompt"``, the default) reads each request's messages
to answer from them; ``answers = "random"`` answers with words of a fixed vocabulary, as
before. Two measurements, each for both settings:

* ``generate`` alone, in this process, reading each prompt afresh (its cache of recent
  readings cleared): microseconds per call (the best of 7 repeats) for
  six requests: the bare client's 28-word prompt, a ``bench`` synthetic prompt of 256
  random common words, CodecLM's pairwise judge with two ~1 KB answers, LAB's faithfulness
  judge over a 6 KB document, a SELF-GUIDE annotation chat (instruction, four examples)
  with n = 10, and respond's judge asking for JSON;
* the whole server: ``synth-engine sim --latency-ms 0`` in its own process, sent the same
  six requests in turn by an aiohttp client (32 in flight, a bounded count; each last
  message ends in a request number, so no prompt repeats), and the server process's own
  CPU time over the requests, per request.

    python -m benchmarks.sim_cpu [--requests 6000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import timeit
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec
import psutil

from benchmarks._common import CpuWatch, exit_on_sigterm, loadavg, sim_server, write_result
from engine.bench.tokens import WordTokens
from engine.methods import prompts_codeclm as PC
from engine.methods import prompts_selfguide as PS
from engine.methods.lab import prompts as PL
from engine.methods.respond import JUDGE_TEMPLATE
from engine.sim.ask import _read
from engine.sim.model import SimSettings, generate, prompt_tokens, request_digest
from engine.stages import render

MODES = ("random", "prompt")
_PARAGRAPH = (
    "The black-capped chickadee is a small, nonmigratory, North American songbird that "
    "lives in deciduous and mixed forests. It is a passerine bird in the tit family. "
)


def _answer(n: int) -> str:
    words = "leaves drift down in red and gold a story that the wind has told".split()
    return " ".join(words[i % len(words)] for i in range(n))


def requests() -> dict[str, dict[str, Any]]:
    """The six request bodies, by name."""
    judge = render(
        PC.JUDGE,
        {"instruction": "Write a poem about autumn.", "answer_1": _answer(180),
         "answer_2": _answer(170)},
    )  # fmt: skip
    document = (_PARAGRAPH * 40)[:6000]
    faithful = render(
        PL.EVAL_FAITHFULNESS,
        {"document": document, "question": "Where does it live?", "answer": "In forests."},
    )
    chat: list[dict[str, str]] = [
        {"role": "system", "content": PS.ANNOTATE_SYSTEM},
        {"role": "user", "content": "Say whether the review is good or fair."},
        {"role": "assistant", "content": "Okay."},
    ]
    for review, label in [("Great sound.", "good"), ("It works, barely.", "fair")] * 2:
        chat += [
            {"role": "user", "content": f"[input] = {review}"},
            {"role": "assistant", "content": label},
        ]
    chat.append({"role": "user", "content": "[input] = Lovely build, fast shipping."})
    score = {
        "type": "json_schema",
        "json_schema": {
            "name": "judge",
            "schema": {
                "type": "object",
                "properties": {
                    "explanation": {"type": "string"},
                    "score": {"type": "integer", "minimum": 1, "maximum": 10},
                },
                "required": ["explanation", "score"],
            },
        },
    }
    respond = render(JUDGE_TEMPLATE, {"instruction": "Name a colour.", "response": "Blue."})
    return {
        "bench_28_words": {
            "messages": [{"role": "user", "content": " ".join(["word"] * 28)}],
            "max_tokens": 32,
        },
        "bench_synthetic_256": {
            "messages": [{"role": "user", "content": WordTokens().text(random.Random(0), 256)}],
            "max_tokens": 128,
        },
        "codeclm_judge": {"messages": [{"role": "user", "content": judge}], "max_tokens": 32},
        "lab_faithfulness_6kb": {
            "messages": [
                {"role": "system", "content": PL.SYSTEM},
                {"role": "user", "content": faithful},
            ],
            "max_tokens": 128,
        },
        "selfguide_annotate_n10": {
            "messages": chat,
            "max_tokens": 24,
            "n": 10,
            "temperature": 0.2,
        },  # fmt: skip
        "respond_judge_json": {
            "messages": [{"role": "user", "content": respond}],
            "max_tokens": 256,
            "response_format": score,
        },
    }


def generate_us(body: dict[str, Any], mode: str) -> float:
    """Microseconds per ``generate`` call for ``body`` (best of 7 repeats)."""
    settings = msgspec.convert({"answers": mode}, SimSettings)
    digest = request_digest(0, body)
    msgs = body["messages"]
    prompt = prompt_tokens(msgs)

    def call() -> object:
        _read.cache_clear()  # a prompt read for the first time
        return generate(
            settings,
            digest,
            n=body.get("n", 1),
            max_tokens=body.get("max_tokens"),
            prompt=prompt,
            response_format=body.get("response_format"),
            temperature=body.get("temperature"),
            messages=msgs,
        )

    number = 300
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e6


def _unique(body: dict[str, Any], i: int) -> dict[str, Any]:
    """``body`` with its last message ending in `` #i``: every request is read afresh
    (the server keeps its last 256 readings, which a repeated prompt would hit)."""
    msgs = list(body["messages"])
    msgs[-1] = {**msgs[-1], "content": f"{msgs[-1]['content']} #{i}"}
    return {**body, "messages": msgs}


async def _drive(url: str, bodies: Sequence[dict[str, Any]], total: int, conc: int) -> int:
    sent = 0
    ok = 0
    deadline = time.monotonic() + 300.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent, ok
        while sent < total and time.monotonic() < deadline:
            body = _unique(bodies[sent % len(bodies)], sent)
            sent += 1
            async with session.post(url + "/chat/completions", json=body) as resp:
                await resp.read()
                ok += resp.status == 200

    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as session:
        async with asyncio.TaskGroup() as tg:
            for _ in range(conc):
                tg.create_task(worker(session))
    return ok


def _server_process(port: str) -> psutil.Process:
    for child in psutil.Process().children(recursive=True):
        if port in " ".join(child.cmdline()):
            return child
    raise RuntimeError("the simulated endpoint's process was not found")


def server_us(mode: str, bodies: Sequence[dict[str, Any]], total: int) -> dict[str, Any]:
    """The server process's CPU per request, over ``total`` requests of ``bodies``."""
    with sim_server("--latency-ms", "0", "--answers", mode) as url:
        proc = _server_process(url.rsplit(":", 1)[1].split("/", 1)[0])
        asyncio.run(_drive(url, bodies, min(500, total), 32))  # warm up
        with CpuWatch() as watch:
            before = proc.cpu_times()
            t0 = time.perf_counter()
            ok = asyncio.run(_drive(url, bodies, total, 32))
            wall = time.perf_counter() - t0
            after = proc.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "answers": mode,
        "requests": ok,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_request": round(cpu / max(ok, 1) * 1e6, 1),
        "wall_s": round(wall, 2),
        **watch.noise(),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure both settings; print the tables; write results/sim_cpu.json."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=None, help="per setting (6000)")
    ap.add_argument("--quick", action="store_true", help="1500 requests; writes results/quick/")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    total = args.requests or (1500 if args.quick else 6000)
    bodies = requests()
    calls: list[dict[str, Any]] = []
    for name, body in bodies.items():
        old, new = generate_us(body, "random"), generate_us(body, "prompt")
        calls.append(
            {"request": name, "random_us": round(old, 1), "prompt_us": round(new, 1),
             "extra_us": round(new - old, 1)}
        )  # fmt: skip
    servers = [server_us(m, list(bodies.values()), total) for m in MODES]
    print(f"{'generate() per call':<26} {'random us':>10} {'prompt us':>10} {'extra us':>9}")
    for row in calls:
        print(
            f"{row['request']:<26} {row['random_us']:>10} {row['prompt_us']:>10} "
            f"{row['extra_us']:>9}"
        )
    print(f"{'server process':<26} {'requests':>10} {'CPU us/req':>10}")
    for s in servers:
        print(
            f"{'answers=' + s['answers']:<26} {s['requests']:>10} {s['server_cpu_us_per_request']:>10}"
        )
    extra = servers[1]["server_cpu_us_per_request"] - servers[0]["server_cpu_us_per_request"]
    ratio = servers[1]["server_cpu_us_per_request"] / servers[0]["server_cpu_us_per_request"]
    path = write_result(
        "sim_cpu",
        {
            "generate": calls,
            "server": servers,
            "server_extra_us_per_request": round(extra, 1),
            "server_ratio": round(ratio, 3),
            "loadavg_after": loadavg(),
        },
        quick=args.quick,
    )
    print(f"prompt answers cost {extra:.1f} us more per request ({ratio:.2f}x); wrote {path}")
    return 0


def render_section(data: dict[str, Any]) -> list[str]:
    """This benchmark's section of benchmarks/README.md."""
    from benchmarks.render import num, stamp, table

    lines = [
        "## Simulated endpoint CPU per request: answers from the prompt vs fixed text",
        "",
        "The simulated endpoint reads each request's messages to answer from them",
        '(`answers = "prompt"`, the default; docs/config.md). `generate` alone, in process',
        "(best of 7 repeats, each prompt read afresh), and the whole `synth-engine sim",
        "--latency-ms 0` process's own CPU over the six requests sent in turn, none twice",
        "(32 in flight), for both settings. A prompt seen again (the same request resent,",
        "a vote's parallel samples) is not read again: the last 256 readings are kept.",
        "",
        f"`python -m benchmarks.sim_cpu`; {stamp(data)}.",
        "",
    ]
    lines += table(
        ["request", "random us/call", "prompt us/call", "extra us"],
        [[r["request"], num(r["random_us"]), num(r["prompt_us"]), num(r["extra_us"])]
         for r in data["generate"]],
    )  # fmt: skip
    lines += [""]
    lines += table(
        ["server process", "requests", "CPU us/request", "foreign CPU %"],
        [[f"answers = {s['answers']}", s["requests"], num(s["server_cpu_us_per_request"]),
          num(s.get("foreign_cpu_pct"))] for s in data["server"]],
    )  # fmt: skip
    lines += [
        "",
        f"Reading the prompt costs the server {num(data['server_extra_us_per_request'])} us "
        f"more per request ({num(data['server_ratio'], 2)} x). The other benchmarks measure",
        "clients, so `benchmarks/_common.py` starts their sim with `--answers random`: the",
        "server's CPU stays what it was when their figures were measured.",
        "",
        "All figures: `benchmarks/results/sim_cpu.json`.",
        "",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
