"""Run ``synth-engine sim`` as a separate process on a free loopback port.

For benchmarks and tests that need the endpoint outside the measured (or killed)
process: it survives the client being SIGKILLed, counts what was paid across restarts,
and costs the client no CPU.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

__all__ = ("free_port", "sim_process")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def sim_process(
    *args: str,
    port: int | None = None,
    timeout: float = 20.0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``python -m engine sim ARGS`` on 127.0.0.1; yield its base URL; stop it on exit.

    Args:
        *args: extra ``synth-engine sim`` options (``--latency-ms 50``...).
        port: the port (default: a free one).
        timeout: seconds to wait for it to answer.
        cwd: working directory of the process.
        env: extra environment variables (e.g. the one ``--api-key-env`` names).

    Raises:
        RuntimeError: it exited or did not answer in time.
    """
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "sim", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/models", timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers (e.g. 401 when it requires a key): it is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the simulated endpoint did not start on port {port}"
                    ) from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
