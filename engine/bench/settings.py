"""The settings of ``synth-engine bench`` and their checks (each option is in docs/bench.md)."""

from __future__ import annotations

import msgspec

from ..errors import ConfigError
from .arrivals import ARRIVALS
from .metrics import SLO_METRICS

__all__ = ("BenchSettings", "parse_slo")


class BenchSettings(msgspec.Struct, kw_only=True):
    """What to measure and how (see ``synth-engine bench --help`` and docs/bench.md).

    Load: ``load`` is ``closed`` (``concurrency`` workers, each sending its next request
    when its reply is in), or an open loop at ``rate`` requests/s: ``constant``,
    ``poisson``, ``gamma`` (``burstiness``) or ``trace`` (``trace``'s timestamps).
    ``concurrency`` caps the requests in flight of an open loop (None: no cap).
    ``rates``/``concurrencies`` sweep several points; ``search`` looks for the highest
    rate meeting ``slos``.
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    load: str = "closed"
    rate: float | None = None
    rates: list[float] = msgspec.field(default_factory=list)
    concurrency: int | None = None
    concurrencies: list[int] = msgspec.field(default_factory=list)
    burstiness: float = 1.0
    requests: int | None = None
    duration_s: float | None = None
    warmup_s: float = 0.0
    cooldown_s: float = 0.0
    seed: int = 0
    prompt_tokens: str = "32"
    output_tokens: str | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float = 0.0
    dataset: str | None = None
    turns: int = 1
    turn_delay_s: float = 0.0
    prefix_tokens: int = 0
    prefix_count: int = 1
    trace: str | None = None
    trace_speed: float = 1.0
    trace_unit: str = "auto"
    block_tokens: int = 512
    tokenizer: str | None = None
    stream: bool = False
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 120.0
    max_retries: int = 3
    slos: dict[str, float] = msgspec.field(default_factory=dict)
    slo_percentile: float = 99.0
    search: tuple[float, float, float] | None = None
    out: str | None = None

    def check(self) -> None:
        """Reject inconsistent settings with a message naming the option.

        Raises:
            ConfigError: an option is out of range or needs another one.
        """

        def bad(field: str, reason: str, hint: str | None = None) -> ConfigError:
            return ConfigError(reason, path="bench", field=field, hint=hint)

        if self.load not in ARRIVALS:
            raise bad("--load", f"unknown load model {self.load!r}", "use " + ", ".join(ARRIVALS))
        if self.load == "trace" and not self.trace:
            raise bad("--load", "the trace load model needs --trace FILE")
        open_loop = self.load not in ("closed", "trace")
        if open_loop and self.rate is None and not self.rates and self.search is None:
            raise bad("--rate", f"--load {self.load} needs --rate (requests/s)", "e.g. --rate 50")
        if self.load == "closed" and (self.rate is not None or self.rates or self.search):
            raise bad(
                "--rate",
                "--rate is for open loops",
                "add --load constant, poisson or gamma (or use --rpm to cap a closed loop)",
            )
        for rate in ([self.rate] if self.rate is not None else []) + list(self.rates):
            if rate <= 0:
                raise bad("--rate", f"rates must be > 0, not {rate:g}")
        for c in ([self.concurrency] if self.concurrency is not None else []) + list(
            self.concurrencies
        ):
            if c < 1:
                raise bad("--concurrency", f"concurrency must be >= 1, not {c}")
        if self.requests is not None and self.requests < 1:
            raise bad("--requests", "must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise bad("--duration-s", "must be > 0")
        if open_loop and self.requests is None and self.duration_s is None:
            raise bad("--duration-s", "an open loop needs --requests or --duration-s")
        if self.warmup_s < 0 or self.cooldown_s < 0:
            raise bad("--warmup-s", "warm-up and cool-down must be >= 0")
        if self.turns < 0 or (self.turns == 0 and not self.dataset):
            raise bad("--turns", "must be >= 1 (0, all turns, only with --dataset)")
        if self.prefix_tokens < 0 or self.prefix_count < 1:
            raise bad("--prefix-tokens", "prefix tokens must be >= 0 and --prefix-count >= 1")
        if self.dataset and self.trace:
            raise bad("--trace", "give --dataset or --trace, not both")
        if self.trace_unit not in ("auto", "s", "ms"):
            raise bad("--trace-unit", "use auto, s or ms")
        if self.max_tokens is not None and self.output_tokens is not None:
            raise bad("--max-tokens", "give --max-tokens or --output-tokens, not both")
        for name in self.slos:
            if name not in SLO_METRICS:
                raise bad("--slo", f"unknown SLO {name!r}", "use " + ", ".join(SLO_METRICS))
            if name != "latency_ms" and not self.stream:
                raise bad("--slo", f"the {name} SLO needs --stream")
        if not 0 < self.slo_percentile <= 100:
            raise bad("--slo-percentile", "must be in (0, 100]")
        if self.search is not None:
            lo, hi, step = self.search
            if not self.slos:
                raise bad("--search", "a search needs at least one --slo")
            if not 0 < lo <= hi or step <= 0:
                raise bad("--search", "give LOW:HIGH:STEP with 0 < LOW <= HIGH and STEP > 0")
            if self.load in ("closed", "trace"):
                raise bad(
                    "--search", "a rate search needs an open loop (--load constant/poisson/gamma)"
                )
        if self.rates and self.concurrencies:
            raise bad("--rate", "sweep rates or concurrencies, not both")


def parse_slo(text: str) -> tuple[str, float]:
    """``"ttft_ms=500"`` (or ``ttft=500``) -> ``("ttft_ms", 500.0)``.

    Raises:
        ConfigError: not NAME=MILLISECONDS with a known name.
    """
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if name and not name.endswith("_ms"):
        name += "_ms"
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if not sep or name not in SLO_METRICS or limit <= 0:
        raise ConfigError(
            f"cannot read the SLO {text!r}",
            path="bench",
            field="--slo",
            hint="NAME=MILLISECONDS with NAME one of ttft, tpot, itl, latency; e.g. --slo ttft=500",
        )
    return name, limit
