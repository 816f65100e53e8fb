"""``synth-engine bench``: a serving benchmark of an OpenAI-compatible endpoint.

It drives the endpoint through the engine's own path (the same gate, client and retries
as a run) with a load model (:mod:`.arrivals`: closed loop, constant, Poisson, gamma, a
trace), a workload (:mod:`.workload`: synthetic lengths, a prompt dataset, shared
prefixes, multi-turn), measures every request (:mod:`.timing`, :mod:`.metrics`: schedule
lag, latency from the intended and the actual send, TTFT, TPOT, ITL, inter-chunk gaps),
sweeps and searches rates against SLOs (:mod:`.sweep`) and writes JSONL, JSON, CSV and
an HTML report (:mod:`.report`, :mod:`.html`). docs/bench.md documents every option.
"""

from __future__ import annotations

from .report import render_bench
from .settings import BenchSettings, parse_slo
from .sweep import run_bench

__all__ = ("BenchSettings", "parse_slo", "render_bench", "run_bench")
