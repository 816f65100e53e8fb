"""A hostile OpenAI-compatible server of the test suite's own, on 127.0.0.1.

It sits in front of synth-engine's simulated endpoint as a reverse proxy: every request is
numbered, and a *behaviour* decides, per request, whether to pass the simulated answer
through (possibly altered: headers, usage, an error object) or to answer with something
hostile of its own: an endless body, a gzip bomb, an SSE stream without newlines, absurd
rate-limit headers, a 401 after N calls, a header echoing the caller's key.

Run as ``python -m tests.hostile MODE --port P`` it serves one of the body attacks in its
own process (for memory measurements that must not count the server).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from engine.serving import LoopbackServer
from engine.sim import SimServer, SimSettings

__all__ = (
    "Hostile",
    "ServedInThread",
    "Upstream",
    "endless_body",
    "gzip_bomb",
    "proxied",
    "sse_without_newlines",
)

MiB = 1024 * 1024


class Upstream:
    """What the simulated endpoint answered to the request being handled."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> dict[str, Any]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data


# A behaviour: (request number from 1, the request, a coroutine fetching the simulated
# answer) -> the response to send.
Behaviour = Callable[
    [int, web.Request, Callable[[], Awaitable[Upstream]]], Awaitable[web.StreamResponse]
]


def proxied(
    status: int | None = None,
    headers: dict[str, str] | None = None,
    change: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Upstream], web.Response]:
    """A response built from the simulated answer, with ``headers`` added and ``change``
    applied to its JSON."""

    def build(up: Upstream) -> web.Response:
        body = up.body
        if change is not None:
            data = up.json()
            change(data)
            body = orjson.dumps(data)
        out = {k: v for k, v in up.headers.items() if k.lower().startswith("x-")}
        out.update(headers or {})
        return web.Response(
            status=status or up.status, body=body, headers=out, content_type="application/json"
        )

    return build


async def endless_body(
    request: web.Request, total: int, chunk: int = 64 * 1024
) -> web.StreamResponse:
    """A 200 whose chunked body of zeros goes on for ``total`` bytes (1 GiB, say)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    block = b"0" * chunk
    sent = 0
    try:
        while sent < total:
            await resp.write(block)
            sent += chunk
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    return resp


_BOMBS: dict[int, bytes] = {}


def gzip_bomb_bytes(decompressed: int) -> bytes:
    """A gzip stream of ``decompressed`` zero bytes (about a thousandth of that on the wire)."""
    if decompressed not in _BOMBS:
        comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(MiB)
        parts = [comp.compress(block) for _ in range(decompressed // MiB)]
        parts.append(comp.flush())
        _BOMBS[decompressed] = b"".join(parts)
    return _BOMBS[decompressed]


async def gzip_bomb(request: web.Request, decompressed: int) -> web.StreamResponse:
    """A 200 with ``Content-Encoding: gzip`` whose body inflates to ``decompressed`` bytes."""
    body = gzip_bomb_bytes(decompressed)
    return web.Response(
        body=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def sse_without_newlines(
    request: web.Request, total: int, chunk: int = 1024
) -> web.StreamResponse:
    """A 200 event stream that sends ``data: xxxx...`` and never a newline."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    try:
        await resp.write(b"data: ")
        block = b"x" * chunk
        sent = 0
        while sent < total:
            await resp.write(block)
            sent += chunk
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    return resp


class Hostile(LoopbackServer):
    """The hostile proxy; ``behaviour`` decides each answer (default: pass through).

    Attributes:
        requests: chat requests received so far.
        seen_keys: the bearer keys requests carried.
    """

    def __init__(self, behaviour: Behaviour | None = None, *, sim: SimSettings | None = None):
        super().__init__(host="127.0.0.1", port=0)
        self.behaviour = behaviour
        self.requests = 0
        self.seen_keys: set[str] = set()
        self._sim = SimServer(sim or SimSettings(latency_ms=1.0, seed=0))
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self.address("/v1")

    async def start(self) -> None:
        await self._sim.start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        await super().start()

    async def aclose(self) -> None:
        await super().aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._sim.aclose()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    async def _upstream(self, method: str, path: str, body: bytes | None) -> Upstream:
        assert self._session is not None
        async with self._session.request(
            method,
            self._sim.url.removesuffix("/v1") + path,
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            return Upstream(resp.status, await resp.read(), dict(resp.headers))

    async def _models(self, request: web.Request) -> web.StreamResponse:
        up = await self._upstream("GET", "/v1/models", None)
        return web.Response(status=up.status, body=up.body, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        n = self.requests
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            self.seen_keys.add(auth[7:])
        body = await request.read()

        async def fetch() -> Upstream:
            return await self._upstream("POST", "/v1/chat/completions", body)

        if self.behaviour is None:
            return proxied()(await fetch())
        return await self.behaviour(n, request, fetch)


def _main() -> None:
    parser = argparse.ArgumentParser(description="serve one hostile body attack on 127.0.0.1")
    parser.add_argument("mode", choices=["huge", "bomb", "sse"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bytes", type=int, default=1024 * MiB, help="size of the attack")
    args = parser.parse_args()
    if args.mode == "bomb":
        gzip_bomb_bytes(args.bytes)  # built before the port opens

    async def behave(
        n: int, request: web.Request, fetch: Callable[[], Awaitable[Upstream]]
    ) -> web.StreamResponse:
        if args.mode == "huge":
            return await endless_body(request, args.bytes)
        if args.mode == "bomb":
            return await gzip_bomb(request, args.bytes)
        return await sse_without_newlines(request, args.bytes)

    async def serve() -> None:
        server = Hostile(behave)
        server._requested_port = args.port
        async with server:
            sys.stdout.write(f"hostile {args.mode} on {server.url}\n")
            sys.stdout.flush()
            await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    _main()


class ServedInThread:
    """A :class:`Hostile` server on its own event loop in a thread, for tests that run the
    CLI in a subprocess meanwhile. Use as a context manager; ``behaviour`` may be swapped
    between runs (``served.server.behaviour = ...``)."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        import threading

        self.server = Hostile(behaviour)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ServedInThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
