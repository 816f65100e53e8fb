"""The lifecycle of a small aiohttp server on the current event loop (sim, metrics exporter).

:class:`LoopbackServer` binds an application to a host and port (0: any free port, read
back from the socket), cleans up if binding fails, stops idempotently and serves as an
async context manager. Subclasses say what application to build and how to run it; the
simulated endpoint (:mod:`engine.sim.server`) and the Prometheus exporter
(:mod:`engine.metrics.prometheus`) are the two. It installs no signal handlers, so it
can live inside another asyncio program.
"""

from __future__ import annotations

import ipaddress
import logging
from abc import ABC, abstractmethod
from typing import Any, Self

from aiohttp import web

__all__ = ("LoopbackServer", "is_loopback")

log = logging.getLogger("engine")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoopbackServer(ABC):
    """An aiohttp application listening on ``host:port`` while started.

    Args:
        host: interface to listen on (loopback by default).
        port: TCP port (0: a free one, see :attr:`port`).
        runner_options: extra ``web.AppRunner`` keyword arguments.
        site_options: extra ``web.TCPSite`` keyword arguments (e.g. ``backlog``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        runner_options: dict[str, Any] | None = None,
        site_options: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._runner_options = runner_options or {}
        self._site_options = site_options or {}
        self._port: int | None = None
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None

    @abstractmethod
    def build_app(self) -> web.Application:
        """The application to serve (called once per start)."""

    async def start(self) -> None:
        """Start listening (idempotent).

        Raises:
            OSError: the address cannot be bound (nothing is left running).
        """
        if self._runner is not None:
            return
        if not is_loopback(self.host):
            log.warning(
                "%s listens on %s, which other machines can reach: it has no authentication "
                "of its own; use 127.0.0.1 unless you mean to expose it",
                type(self).__name__,
                self.host or "every interface",
            )
        app = self.build_app()
        runner = web.AppRunner(app, access_log=None, handle_signals=False, **self._runner_options)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port, **self._site_options).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1]) if runner.addresses else self._requested_port
        self._app = app
        self._runner = runner

    async def aclose(self) -> None:
        """Stop listening and close open connections (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The TCP port it listens on (the real one when started with port 0)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    def address(self, path: str) -> str:
        """``http://HOST:PORT`` + ``path``, with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"
