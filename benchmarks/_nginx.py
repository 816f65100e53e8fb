"""A fixed-latency OpenAI-compatible endpoint that costs almost no CPU: nginx + the echo module.

Each location sleeps (``echo_sleep``, a timer: no CPU while waiting) and then answers a
fixed ``chat.completion`` JSON or a fixed SSE stream of ``chat.completion.chunk`` events.
The server runs from a generated config in a temp dir, on 127.0.0.1 only, one worker
process, and is stopped by its PID when the block ends.

Base URLs: ``http://127.0.0.1:PORT/l{ms}/v1`` (plain) and ``.../l{ms}s/v1`` (streamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks._common import free_port

__all__ = ("ECHO_MODULE", "NginxEcho", "ensure_nginx", "nginx_echo")

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
INSTALL_HINT = "apt-get update && apt-get install -y nginx libnginx-mod-http-echo"
PROMPT_TOKENS = 39  # what the sim reports for the bench prompt


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def ensure_nginx(install: bool = True) -> str:
    """The nginx binary, installing nginx + the echo module with apt-get if missing.

    Args:
        install: try ``apt-get`` (as root) when nginx or the echo module is missing.

    Raises:
        RuntimeError: missing and not installable here (the message says how).
    """
    binary = _nginx_binary()
    if binary and ECHO_MODULE.exists():
        return binary
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "nginx", "libnginx-mod-http-echo"],
        ):
            subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        binary = _nginx_binary()
        if binary and ECHO_MODULE.exists():
            return binary
    raise RuntimeError(f"nginx with the echo module is needed; install it with: {INSTALL_HINT}")


def _words(n: int) -> list[str]:
    vocab = "useful large ranks check gives small across supports many each extra rule".split()
    return [vocab[i % len(vocab)] for i in range(n)]


def completion_body(completion_tokens: int) -> str:
    """The fixed ``chat.completion`` JSON answered to every plain request."""
    return json.dumps(
        {
            "id": "chatcmpl-echo",
            "object": "chat.completion",
            "created": 0,
            "model": "sim-model",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(_words(completion_tokens)),
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": completion_tokens,
                "total_tokens": PROMPT_TOKENS + completion_tokens,
            },
        },
        separators=(",", ":"),
    )


def stream_events(completion_tokens: int) -> list[str]:
    """The fixed SSE events (one content delta per token, finish, usage, ``[DONE]``)."""

    def chunk(choices: list[object], **extra: object) -> str:
        body = {
            "id": "chatcmpl-echo",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "sim-model",
            "choices": choices,
            **extra,
        }
        return json.dumps(body, separators=(",", ":"))

    events = []
    for i, word in enumerate(_words(completion_tokens)):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        events.append(chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
    events.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }
    events.append(chunk([], usage=usage))
    events.append("[DONE]")
    return events


def _quote(text: str) -> str:
    """An nginx config string literal (single-quoted)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_config(
    prefix: Path,
    port: int,
    latencies_ms: Sequence[float],
    completion_tokens: int,
    extra_locations: str = "",
) -> str:
    """The nginx.conf text: one plain and one streamed location per latency (+ ``extra``)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    plain = _quote(completion_body(completion_tokens))
    sse = "\n".join(
        f"            echo -n {_quote('data: ' + e)}; echo; echo;"
        for e in stream_events(completion_tokens)
    )
    locations = []
    for ms in latencies_ms:
        tag = f"l{ms:g}"
        sleep = f"{ms / 1000.0:.3f}"
        locations.append(
            f"""
        location = /{tag}/v1/chat/completions {{
            default_type application/json;
            echo_sleep {sleep};
            echo -n {plain};
        }}
        location = /{tag}s/v1/chat/completions {{
            default_type text/event-stream;
            echo_sleep {sleep};
{sse}
        }}"""
        )
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}load_module {ECHO_MODULE};
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 16384;
    multi_accept on;
}}
http {{
    access_log off;
{temp}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{
            default_type text/plain;
            echo ok;
        }}
{"".join(locations)}
{extra_locations}
    }}
}}
"""


class NginxEcho:
    """A running nginx echo server: its PID and the base URL of each (latency, stream)."""

    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid

    def base_url(self, latency_ms: float, stream: bool = False) -> str:
        """``http://127.0.0.1:PORT/l{ms}[s]/v1``."""
        return f"http://127.0.0.1:{self.port}/l{latency_ms:g}{'s' if stream else ''}/v1"


@contextlib.contextmanager
def nginx_echo(
    latencies_ms: Sequence[float],
    *,
    completion_tokens: int = 32,
    install: bool = True,
    timeout: float = 20.0,
    extra_locations: str = "",
) -> Iterator[NginxEcho]:
    """Start nginx on a free loopback port with one location pair per latency; stop it after.

    ``extra_locations``: more ``location`` blocks for the server (the tests' own answers).

    Raises:
        RuntimeError: nginx is missing (see :func:`ensure_nginx`) or did not start.
    """
    binary = ensure_nginx(install)
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        prefix = Path(tmp)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_config(prefix, port, latencies_ms, completion_tokens, extra_locations)
        )
        log = prefix / "error.log"
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except (OSError, urllib.error.URLError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text()[-1000:] if log.exists() else ""
                        raise RuntimeError(f"nginx did not start on port {port}: {tail}") from None
                    time.sleep(0.05)
            yield NginxEcho(port, proc.pid)
        finally:
            proc.terminate()  # SIGTERM to the master (by PID): fast shutdown of the worker too
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
