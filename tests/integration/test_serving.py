"""LoopbackServer: port 0 read back, idempotent start/stop, a failed bind leaves nothing."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from engine.serving import LoopbackServer


class _Hello(LoopbackServer):
    built = 0

    def build_app(self) -> web.Application:
        type(self).built += 1

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/hello", hello)
        return app


async def test_serves_on_a_free_port_and_stops() -> None:
    server = _Hello()
    with pytest.raises(RuntimeError, match="_Hello is not started"):
        _ = server.port
    async with server:
        await server.start()  # idempotent: no second application
        assert _Hello.built == 1 and server.port > 0
        url = server.address("/hello")
        assert url == f"http://127.0.0.1:{server.port}/hello"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert await resp.text() == "hello"
    await server.aclose()  # idempotent
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url)


async def test_failed_bind_raises_and_leaves_nothing_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _Hello(port=port)
        with pytest.raises(OSError):
            await server.start()
        with pytest.raises(RuntimeError):
            _ = server.port
    async with _Hello(port=port) as again:  # the port is free again once released
        assert again.port == port


def test_ipv6_host_in_brackets() -> None:
    server = _Hello(host="::1")
    server._port = 8080  # as after a start; binding ::1 is not needed to check the URL
    assert server.address("/v1") == "http://[::1]:8080/v1"
