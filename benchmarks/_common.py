"""Helpers shared by the benchmark scripts: servers, commands, noise measurement, JSON results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
QUICK = RESULTS / "quick"  # smoke runs (--quick): gitignored, never the committed figures
if str(ROOT) not in sys.path:  # runnable from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from engine.sim.process import free_port, sim_process  # noqa: E402

__all__ = (
    "QUICK",
    "RESULTS",
    "ROOT",
    "CpuWatch",
    "bench_cmd",
    "exit_on_sigterm",
    "free_port",
    "loadavg",
    "machine",
    "results_dir",
    "run_json",
    "sim_server",
    "sim_stats",
    "wait_quiet",
    "write_result",
)


def sim_server(*args: str, timeout: float = 20.0) -> contextlib.AbstractContextManager[str]:
    """Run ``synth-engine sim`` in a subprocess on a free loopback port; yield its base URL.

    The benchmarks measure clients, so the sim answers with fixed-vocabulary text
    (``--answers random``, unless ``args`` say otherwise): reading each prompt would add
    about 0.1 ms of server CPU per request (``benchmarks/sim_cpu.py``) on the same cores,
    and the figures stay comparable with those measured before prompt answers.
    """
    return sim_process("--answers", "random", *args, timeout=timeout, cwd=ROOT)


def bench_cmd(
    url: str,
    *,
    requests: int,
    concurrency: int,
    max_tokens: int,
    extra: tuple[str, ...] = (),
    python: str | None = None,
) -> list[str]:
    """The ``synth-engine bench --json`` command line against ``url`` (model ``sim-model``)."""
    return [
        python or sys.executable, "-m", "engine", "bench", "--base-url", url,
        "--model", "sim-model", "--requests", str(requests), "--concurrency", str(concurrency),
        "--max-tokens", str(max_tokens), "--json", *extra,
    ]  # fmt: skip


def sim_stats(url: str) -> dict[str, Any]:
    """The sim's /sim/stats counters."""
    base = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(base + "/sim/stats", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def run_json(cmd: list[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run a command that prints one JSON object on stdout; return it.

    Raises:
        RuntimeError: it exited with a status other than 0 or 1 (1: a target missed).
    """
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        if proc.returncode not in (0, 1):
            raise ValueError(f"exit status {proc.returncode}")
        return dict(json.loads(proc.stdout))
    except ValueError as exc:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({exc}): {proc.stdout[-500:]} {proc.stderr[-2000:]}"
        ) from None


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so servers started in ``with`` blocks are stopped."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where and when the figures were measured (CPU, cores, memory, load, commit)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "engine"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": (commit or "uncommitted") + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "loadavg": loadavg(),
    }


def results_dir(quick: bool = False) -> Path:
    """``benchmarks/results`` or, for smoke runs, ``benchmarks/results/quick``."""
    return QUICK if quick else RESULTS


def write_result(name: str, data: dict[str, Any], *, quick: bool = False) -> Path:
    """Write ``NAME.json`` (with machine info) into :func:`results_dir`; return its path."""
    out = results_dir(quick)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), "quick": quick, **data}, indent=2) + "\n")
    tmp.replace(path)
    return path


def _system_busy_s() -> float:
    """CPU seconds spent busy by all cores since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s(background: list[psutil.Process]) -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    for proc in background:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


class CpuWatch:
    """How busy the machine was with *other* people's work over a block (noise meter).

    Foreign CPU = all cores' busy time (/proc/stat) minus this process, its reaped
    children (the measured client) and the children alive when the block starts (the
    servers). As a share of ``wall x cores``; a cell above a threshold is re-run.
    """

    def __init__(self) -> None:
        self.foreign_cpu_pct = 0.0
        self.loadavg_before: list[float] = []
        self.loadavg_after: list[float] = []
        self._background: list[psutil.Process] = []
        self._t0 = self._busy0 = self._own0 = 0.0

    def __enter__(self) -> CpuWatch:
        self._background = psutil.Process().children(recursive=True)
        self.loadavg_before = loadavg()
        self._own0 = _own_cpu_s(self._background)
        self._busy0 = _system_busy_s()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall = time.perf_counter() - self._t0
        busy = _system_busy_s() - self._busy0
        own = _own_cpu_s(self._background) - self._own0
        cores = os.cpu_count() or 1
        foreign = max(0.0, busy - own)
        self.foreign_cpu_pct = round(100.0 * foreign / (wall * cores), 1) if wall > 0 else 0.0
        self.loadavg_after = loadavg()

    def noise(self) -> dict[str, Any]:
        """The figures to store with a measurement."""
        return {
            "foreign_cpu_pct": self.foreign_cpu_pct,
            "loadavg_before": self.loadavg_before,
            "loadavg_after": self.loadavg_after,
        }


def wait_quiet(threshold_pct: float, max_wait_s: float = 15.0, window_s: float = 1.5) -> float:
    """Wait (at most ``max_wait_s``) for other processes to use <= ``threshold_pct`` of the CPU.

    Returns:
        The foreign CPU share of the last window, in percent.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        with CpuWatch() as watch:
            time.sleep(window_s)
        if watch.foreign_cpu_pct <= threshold_pct or time.monotonic() >= deadline:
            return watch.foreign_cpu_pct
