"""The argument parser of every command (docs/cli.md, docs/bench.md, docs/export.md explain the options)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..redaction import looks_like_secret
from ..version import __version__

__all__ = ("build_parser",)

T = TypeVar("T")


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (None, "")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", argparse.SUPPRESS) or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class _RefuseKeyOnCommandLine(argparse.Action):
    """``--api-key``: refused, without echoing the value.

    Without this option argparse would read ``--api-key KEY`` as an abbreviation of
    ``--api-key-env`` (the key then sits in ``ps`` and is printed back as a variable name).
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--api-key is not accepted: a key on a command line is visible to every user of "
            "the machine (ps, shell history); the value is not shown. Export it "
            "(export MY_API_KEY=...) and pass --api-key-env MY_API_KEY"
        )


def _env_name(text: str) -> str:
    """The ``--api-key-env`` value: a variable's name, never a key pasted in its place."""
    if looks_like_secret(text):
        raise argparse.ArgumentTypeError(
            "takes the name of an environment variable, not the key itself; this looks like "
            "a key (the value is not shown): export it (export MY_API_KEY=...) and pass "
            "--api-key-env MY_API_KEY; consider rotating the key"
        )
    return text


def _add_api_key_env(p: argparse.ArgumentParser | argparse._ArgumentGroup, help_text: str) -> None:
    """``--api-key-env VAR`` and the refused ``--api-key`` (hidden from --help)."""
    p.add_argument("--api-key-env", type=_env_name, default=None, metavar="VAR", help=help_text)
    p.add_argument("--api-key", nargs="?", action=_RefuseKeyOnCommandLine, help=argparse.SUPPRESS)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, typed as the schema says (repeatable), e.g. --set run.seed=3",
    )


def _numbers(kind: type[T], option: str) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]  # type: ignore[call-arg]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option}: expected a number or a comma-separated list, not {text!r}"
            ) from None

    return parse


def _search(text: str) -> tuple[float, float, float]:
    try:
        low, high, step = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--search: expected LOW:HIGH:STEP (requests/s), not {text!r}"
        ) from None
    return low, high, step


def _bench_options(b: argparse.ArgumentParser) -> None:
    """The ``bench`` options (docs/bench.md explains each)."""
    g = b.add_argument_group("endpoint")
    g.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--model", required=True)
    _add_api_key_env(g, "environment variable holding the API key (never the key itself)")
    g.add_argument("--stream", action="store_true", help="stream replies (TTFT, TPOT, ITL)")
    g.add_argument("--rpm", type=float, default=None, help="cap requests/min at the gate")
    g.add_argument("--tpm", type=float, default=None, help="cap tokens/min at the gate")
    g.add_argument("--timeout-s", type=float, default=120.0, help="per-request deadline")
    g.add_argument("--max-retries", type=int, default=3, help="retries of retryable errors")
    g = b.add_argument_group("load")
    g.add_argument(
        "--load",
        choices=("closed", "constant", "poisson", "gamma", "trace"),
        default=None,
        help="closed loop (default; trace with --trace), or open-loop arrivals at --rate",
    )
    g.add_argument(
        "--rate",
        type=_numbers(float, "--rate"),
        default=None,
        metavar="R[,R...]",
        help="open-loop requests/s; a list sweeps them",
    )
    g.add_argument(
        "--concurrency",
        type=_numbers(int, "--concurrency"),
        default=None,
        metavar="C[,C...]",
        help="closed-loop workers (default 64), or an open loop's in-flight cap; a list sweeps",
    )
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1: Poisson)")
    g.add_argument("--requests", type=int, default=None, help="requests to send (default 1000)")
    g.add_argument("--duration-s", type=float, default=None, help="stop sending after this long")
    g.add_argument("--warmup-s", type=float, default=0.0, help="leave out the first seconds")
    g.add_argument("--cooldown-s", type=float, default=0.0, help="leave out the last seconds")
    g.add_argument("--seed", type=int, default=0, help="seed of arrivals and prompts")
    g = b.add_argument_group("workload")
    g.add_argument(
        "--prompt-tokens",
        default="32",
        metavar="DIST",
        help="prompt length: N, uniform:A,B, normal:MEAN,SD or file:PATH",
    )
    g.add_argument(
        "--output-tokens", default=None, metavar="DIST", help="max_tokens per request, as a DIST"
    )
    g.add_argument("--max-tokens", type=int, default=None, help="a fixed --output-tokens")
    g.add_argument("--ignore-eos", action="store_true", help="send ignore_eos (vLLM, SGLang)")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--dataset", default=None, help="prompt file: JSONL or ShareGPT JSON")
    g.add_argument("--turns", type=int, default=1, help="turns per conversation (0: all)")
    g.add_argument("--turn-delay-s", type=float, default=0.0, help="pause between turns")
    g.add_argument("--prefix-tokens", type=int, default=0, help="shared prefix length")
    g.add_argument("--prefix-count", type=int, default=1, help="distinct shared prefixes")
    g.add_argument("--trace", default=None, help="trace to replay (Mooncake JSONL, Azure CSV)")
    g.add_argument("--trace-speed", type=float, default=1.0, help="replay this many times faster")
    g.add_argument("--trace-unit", choices=("auto", "s", "ms"), default="auto")
    g.add_argument("--block-tokens", type=int, default=512, help="tokens per trace hash block")
    g.add_argument("--tokenizer", default=None, help="tokenizer.json for exact token counts")
    g = b.add_argument_group("SLOs and reports")
    g.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="NAME=MS",
        help="ttft, tpot, itl or latency limit in ms (repeatable)",
    )
    g.add_argument("--slo-percentile", type=float, default=99.0)
    g.add_argument(
        "--search",
        type=_search,
        default=None,
        metavar="LOW:HIGH:STEP",
        help="find the highest rate meeting the SLOs",
    )
    g.add_argument(
        "--out", default=None, help="write requests.jsonl, summary.json/.csv, report.html"
    )
    g.add_argument("--json", action="store_true", help="print the JSON report only")


def _export_options(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``export`` subcommand (docs/export.md explains each option)."""
    exp = sub.add_parser(
        "export",
        help="write an output's kept rows for training: chat messages (JSONL), Parquet or a "
        "datasets directory, with a dataset card; optionally push to the Hugging Face Hub",
        description="Export a complete output's kept rows (or a derived dataset) as chat "
        "`messages` that TRL and InstructLab training read, with a dataset card (README.md) "
        "and export.json. docs/export.md lists the columns per method.",
        formatter_class=_DefaultsHelp,
    )
    exp.add_argument("output", help="the output directory (run.output)")
    exp.add_argument(
        "--format",
        choices=("messages", "parquet", "hf"),
        default="messages",
        help="messages: data/train.jsonl; parquet: data/train-*.parquet (pyarrow); hf: a "
        "datasets.save_to_disk directory (datasets)",
    )
    exp.add_argument(
        "--output",
        dest="export_dir",
        default=None,
        metavar="DIR",
        help="the export directory (default OUT/export-FORMAT); an earlier export there is "
        "replaced, anything else is refused",
    )
    exp.add_argument(
        "--from",
        dest="dataset",
        default="kept",
        metavar="NAME",
        help="kept, or a derived dataset of the output (training_mix, balanced, knowledge, "
        "skills, mixed)",
    )
    exp.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="export an output that is not complete (the rows committed so far)",
    )
    exp.add_argument("--rows-per-file", type=int, default=100_000, help="rows per Parquet file")
    exp.add_argument(
        "--push-to-hub",
        default=None,
        metavar="REPO",
        help="then upload the export to this Hugging Face dataset repository "
        "(NAMESPACE/NAME; created if missing)",
    )
    exp.add_argument(
        "--hub-token-env",
        default="HF_TOKEN",
        metavar="VAR",
        help="environment variable holding the Hub token (else huggingface_hub's stored login)",
    )
    exp.add_argument(
        "--hub-endpoint",
        default=None,
        metavar="URL",
        help="the Hub's URL (default: HF_ENDPOINT, else https://huggingface.co)",
    )
    exp.add_argument("--private", action="store_true", help="create the Hub repository private")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synth-engine",
        description="Generate synthetic instruction data from OpenAI-compatible endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"synth-engine {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a generation job (resumes an unfinished output)")
    run.add_argument("config", help="TOML config file")
    _add_set(run)
    run.add_argument(
        "--force-new", action="store_true", help="overwrite an output written by a different config"
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="rebuild an output of this same config: every response already paid for replays "
        "from OUT/cache.sqlite, only the calls that failed are made again (after fixing an "
        "endpoint's URL or key, say)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress display and no summary")
    run.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (ADDRESS, or RAY_ADDRESS, or a new local one); "
        "needs pip install 'synth-engine[ray]' (docs/scale-out.md)",
    )
    run.add_argument(
        "--workers", type=int, default=None, metavar="N", help="with --ray: partitions/workers"
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics during the run (0: a free "
        "port); needs pip install 'synth-engine[metrics]'",
    )
    run.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="interface for --metrics-port (default 127.0.0.1)",
    )
    run.add_argument(
        "--view",
        nargs="?",
        type=int,
        const=8765,
        default=None,
        metavar="PORT",
        help="serve the viewer at http://127.0.0.1:PORT/ while the run goes (default port "
        "8765; 0: a free one); see synth-engine view",
    )

    val = sub.add_parser(
        "validate",
        help="check a config and read its input as run will, without calling any endpoint "
        "(exit 2 when nothing in the input is usable)",
    )
    val.add_argument("config")
    _add_set(val)
    val.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on stdout"
    )
    val.add_argument(
        "--ping",
        action="store_true",
        help="also call each real endpoint's GET /models: reachable, key accepted, model served",
    )
    val.add_argument(
        "--estimate",
        nargs="?",
        const=50,
        type=int,
        default=None,
        metavar="N",
        help="also estimate calls, tokens and cost: a dry run of the method on simulated "
        "endpoints (the first N JSONL records, scaled to the whole input; default 50)",
    )

    sim = sub.add_parser(
        "sim",
        help="serve the simulated OpenAI-compatible endpoint",
        description="Serve synth-engine's SIMULATED OpenAI-compatible endpoint on HOST:PORT "
        "(chat completions, plain and streamed, /v1/models, usage, rate-limit headers). Its "
        "replies are fake text labelled [simulated], deterministic from the seed and request: "
        "by default they answer from the prompt (its words, one of the answers it lists, a "
        "score where a judge asks for one, the format and length it asks for), so a task "
        "can be dry-run offline.",
        formatter_class=_DefaultsHelp,
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (loopback unless you mean it)"
    )
    sim.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one)")
    sim.add_argument("--model", default="sim-model", help="model id it reports in /v1/models")
    sim.add_argument("--seed", type=int, default=0, help="content seed")
    sim.add_argument(
        "--answers",
        choices=("prompt", "random"),
        default="prompt",
        help="prompt: answer from the prompt (its words, listed answers, scores, formats, "
        "lengths); random: words of a fixed vocabulary whatever the prompt",
    )
    sim.add_argument("--latency-ms", type=float, default=50.0, help="time to the first byte")
    sim.add_argument("--jitter-ms", type=float, default=0.0, help="+- uniform latency jitter")
    sim.add_argument(
        "--tokens-per-s", type=float, default=0.0, help="output token rate (0: whole body at once)"
    )
    sim.add_argument(
        "--rpm",
        type=float,
        default=None,
        help="enforce requests/min with 429 + Retry-After (default: no limit)",
    )
    sim.add_argument(
        "--tpm",
        type=float,
        default=None,
        help="enforce tokens/min with 429 + Retry-After (default: no limit)",
    )
    sim.add_argument(
        "--fault-rate", type=float, default=0.0, help="probability of a fault per request"
    )
    sim.add_argument(
        "--faults",
        default="",
        help="comma list of fault kinds drawn from: "
        "500,502,503,429,timeout,reset,malformed,truncated,slow (default: none)",
    )
    _add_api_key_env(
        sim,
        "require the bearer key held in this environment variable (a key on the "
        "command line would be visible to every user of the machine; default: no key)",
    )
    sim.add_argument(
        "--batches",
        default=None,
        metavar="JSON",
        help="settings of the simulated OpenAI Batch API and Anthropic Message Batches, as "
        "JSON with the keys of the config's sim.batches table, e.g. '{\"speed\": 3600, "
        '"processing_s": 3600, "fail_fraction": 0.05}\' (docs/config.md; default: defaults)',
    )

    bench = sub.add_parser(
        "bench",
        help="benchmark an OpenAI-compatible endpoint (load models, streaming metrics, "
        "sweeps, SLO search, reports; docs/bench.md)",
    )
    _bench_options(bench)

    ins = sub.add_parser(
        "inspect",
        help="summarise an output directory: verified state, counts by kind and reason, "
        "spend, the config it was made with, sample rows",
    )
    ins.add_argument("output", help="the output directory (run.output)")
    ins.add_argument("--samples", type=int, default=2, help="sample rows per kind (default 2)")
    ins.add_argument("--json", action="store_true", help="print everything as one JSON object")

    _export_options(sub)

    view = sub.add_parser(
        "view", help="serve a local page showing a run live and its rows (read-only)"
    )
    view.add_argument("output", help="output directory (finished, or being written)")
    view.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0: a free one)"
    )
    view.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface (default 127.0.0.1; another one shows the output to the network)",
    )
    return parser
