"""A newcomer's first mistakes, through the CLI: what they see and the exit code they get.

Each test makes one mistake of the first hour with one's own config, seeds and endpoint
(an OpenAI-compatible server on 127.0.0.1: the project's hostile proxy in front of the
simulated endpoint), and asserts the message and exit code a user sees, then the fix.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import run_cli
from tests.hostile import ServedInThread, Upstream, proxied

Fetch = Callable[[], Awaitable[Upstream]]
SEEDS = [
    {"id": f"q{i}", "instruction": text}
    for i, text in enumerate(
        [
            "Explain what a hash table is to a new programmer.",
            "Write a haiku about debugging at night.",
            "List three ways to make a slow SQL query faster.",
            "Summarise the causes of the French Revolution in five sentences.",
            "Give a recipe for a vegetarian lasagne.",
            "What is the difference between TCP and UDP?",
        ]
    )
]


@pytest.fixture
def served() -> Iterator[ServedInThread]:
    with ServedInThread() as server:
        yield server


def _project(tmp: Path, base_url: str, *, threshold: int = 5, extra: str = "") -> Path:
    """A user's own job: their seeds, their endpoint, the respond method."""
    (tmp / "seeds.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    config = tmp / "job.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [run]
            method = "respond"
            input = "seeds.jsonl"
            output = "out"

            [endpoints.local]
            base_url = "{base_url}"
            model = "sim-model"
            max_retries = 1
            {extra}

            [roles]
            strong = "local"

            [method.respond]
            threshold = {threshold}
            """
        )
    )
    return config


def test_a_url_without_v1_is_caught_before_any_call(tmp_path: Path, served: ServedInThread) -> None:
    config = _project(tmp_path, served.url.removesuffix("/v1"))
    proc = run_cli("run", str(config), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "endpoints.local.base_url" in proc.stderr and f'{served.url}"' in proc.stderr
    assert served.server.requests == 0  # nothing paid
    fixed = _project(tmp_path, served.url)
    assert run_cli("run", str(fixed), "--quiet").returncode in (0, 5)


def test_every_call_failing_alike_stops_the_run_with_the_servers_reason(
    tmp_path: Path, served: ServedInThread
) -> None:
    async def no_such_model(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        return web.json_response(
            {
                "error": {
                    "message": "The model `sim-modle` does not exist",
                    "code": "model_not_found",
                }
            },
            status=404,
        )

    served.server.behaviour = no_such_model
    config = _project(tmp_path, served.url, extra="fail_fast_after = 3")
    proc = run_cli("run", str(config), "--quiet")
    assert proc.returncode == 4, proc.stderr
    assert "its first 3 calls all failed with" in proc.stderr
    assert "does not exist" in proc.stderr and "base_url" in proc.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # The calls that failed before the third told it apart are failed rows; no others.
    assert manifest["complete"] is False and manifest["totals"]["failed"] == 2
    assert "with --retry-failed to also redo the 2 items" in proc.stderr
    # The fix (here: the server serves the model again), then the advised command.
    served.server.behaviour = None
    again = run_cli("run", str(config), "--quiet", "--retry-failed")
    assert again.returncode in (0, 5), again.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["totals"]["failed"] == 0


def test_a_run_that_keeps_nothing_says_why_and_exits_5(
    tmp_path: Path, served: ServedInThread
) -> None:
    config = _project(tmp_path, served.url, threshold=10)  # no simulated judge gives 10 often
    proc = run_cli("run", str(config))
    if json.loads((tmp_path / "out" / "manifest.json").read_text())["totals"]["kept"]:
        pytest.skip("the simulated judge happened to give a 10")
    assert proc.returncode == 5, proc.stderr
    assert "NOTHING KEPT" in proc.stdout
    assert "rejected    6: judge score # < threshold #" in proc.stdout
    assert "the run finished but kept no row" in proc.stderr


def test_a_changed_config_names_what_changed(tmp_path: Path, served: ServedInThread) -> None:
    config = _project(tmp_path, served.url)
    assert run_cli("run", str(config), "--quiet").returncode in (0, 5)
    proc = run_cli("run", str(config), "--quiet", "--set", "method.respond.threshold=8")
    assert proc.returncode == 2, proc.stderr
    assert "different config: method.threshold: 5 -> 8" in proc.stderr
    assert (tmp_path / "out" / "config.json").exists()  # the config it was made with


def test_a_pasted_key_is_refused_and_never_echoed(tmp_path: Path, served: ServedInThread) -> None:
    key = "sk-proj-MyRealKey0123456789abcdefXYZ"
    config = _project(tmp_path, served.url, extra=f'api_key_env = "{key}"')
    for command in ("validate", "run"):
        proc = run_cli(command, str(config))
        assert proc.returncode == 2, proc.stderr
        assert "looks like an API key" in proc.stderr
        assert key[:8] not in proc.stdout + proc.stderr


def test_an_unknown_set_key_names_set(tmp_path: Path, served: ServedInThread) -> None:
    config = _project(tmp_path, served.url)
    proc = run_cli("run", str(config), "--set", "method.respond.treshold=6")
    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "synth-engine: error: --set: method.respond.treshold: unknown key"
    )


def test_retry_failed_after_the_endpoint_is_fixed(tmp_path: Path, served: ServedInThread) -> None:
    async def flaky(n: int, request: web.Request, fetch: Fetch) -> web.StreamResponse:
        body = await request.json()
        if "haiku" in json.dumps(body) or "lasagne" in json.dumps(body):
            return web.json_response({"error": {"message": "content filter"}}, status=400)
        return proxied()(await fetch())

    served.server.behaviour = flaky
    config = _project(tmp_path, served.url)
    first = run_cli("run", str(config), "--quiet")
    assert first.returncode in (0, 5), first.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["totals"]["failed"] == 2
    again = run_cli("run", str(config), "--quiet")
    assert "2 failed rows: --retry-failed redoes them" in again.stdout
    paid_before = served.server.requests
    served.server.behaviour = None
    retried = run_cli("run", str(config), "--quiet", "--retry-failed")
    assert retried.returncode in (0, 5), retried.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["totals"]["failed"] == 0
    # Only the two failed items' calls were made again (respond + judge each).
    assert served.server.requests - paid_before == 4
