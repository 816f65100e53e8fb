"""The simulated endpoint's API key (docs/reliability.md, "no key on a command line").

``synth-engine sim --api-key-env VAR`` makes the sim require ``Authorization: Bearer
<the value of VAR>``: a request without it, or with another key, is answered 401; one with
it is served. The key itself is never taken on a command line (where every user of the
machine can read it in ``ps``): ``--api-key KEY`` is refused, by ``sim`` and ``bench``
alike, without the key being echoed back. Everything here talks to 127.0.0.1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from engine.sim.process import sim_process
from tests.conftest import ROOT, run_cli

KEY = "sk-simtest-4f1d9a7c2b8e6d0a5f3c"
VAR = "SYNTH_ENGINE_TEST_SIM_KEY"


def _call(url: str, key: str | None, path: str = "/chat/completions") -> tuple[int, bytes]:
    """POST a chat completion (GET for /models) with ``key`` as bearer; (status, body)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if path == "/chat/completions":
        data = json.dumps(
            {"model": "sim", "messages": [{"role": "user", "content": "Say hello."}]}
        ).encode()
    request = urllib.request.Request(url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_sim_started_with_a_key_refuses_requests_without_it() -> None:
    with sim_process("--api-key-env", VAR, cwd=ROOT, env={VAR: KEY}) as url:
        for path in ("/chat/completions", "/models"):
            status, body = _call(url, None, path)
            assert status == 401, (path, body)
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
            status, _ = _call(url, "sk-some-other-key", path)
            assert status == 401, path
            status, _ = _call(url, KEY[:-1], path)  # a prefix of the key is not the key
            assert status == 401, path
        status, body = _call(url, KEY)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["choices"][0]["message"]["content"]
        status, _ = _call(url, KEY, "/models")
        assert status == 200
        # Nothing that was answered 401 echoes the key.
        for given in (None, "sk-some-other-key"):
            assert KEY.encode() not in _call(url, given)[1]


def test_a_sim_without_a_key_serves_anyone() -> None:
    """The contrast that makes the test above mean something: no --api-key-env, no 401."""
    with sim_process(cwd=ROOT) as url:
        assert _call(url, None)[0] == 200


def test_a_missing_key_variable_is_an_error_not_an_open_sim() -> None:
    proc = run_cli("sim", "--api-key-env", "SYNTH_ENGINE_TEST_UNSET_VAR", "--port", "0", timeout=30)
    assert proc.returncode == 2
    assert "SYNTH_ENGINE_TEST_UNSET_VAR is not set" in proc.stderr


@pytest.mark.parametrize("command", ["sim", "bench"])
def test_a_key_on_the_command_line_is_refused_and_not_echoed(command: str) -> None:
    """argparse would take ``--api-key`` as an abbreviation of ``--api-key-env``; the key
    would then sit in ``ps`` and be printed back as "environment variable sk-... is not
    set". It must be refused, naming --api-key-env, with the key nowhere in the output."""
    extra = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"] if command == "bench" else []
    if command == "sim":
        extra += ["--port", "0"]
    cases = {
        "--api-key": (["--api-key", KEY], "a key on a command line is visible"),
        "--api-key=": ([f"--api-key={KEY}"], "a key on a command line is visible"),
        "--api-key-env KEY": (["--api-key-env", KEY], "the name of an environment variable"),
    }
    for case, (flags, said) in cases.items():
        proc = run_cli(command, *extra, *flags, timeout=30)
        assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
        assert KEY not in proc.stdout + proc.stderr, (case, proc.stderr)
        assert said in proc.stderr, (case, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_the_sim_key_never_appears_in_its_own_process_listing() -> None:
    """The key travels in the environment: the sim's command line (what ``ps`` shows)
    names only the variable."""
    with sim_process("--api-key-env", VAR, cwd=ROOT, env={VAR: KEY}) as url:
        port = url.split(":")[2].split("/")[0]
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if " sim " in text and f"--port {port}" in text:
                found.append(text)
        assert len(found) == 1, found
        assert VAR in found[0] and KEY not in found[0]
