"""Connection-level behaviour shared by the simulated APIs: timed writes and abrupt resets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

from aiohttp import web

__all__ = ("abort", "sleep_until")


async def sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until ``loop.time()`` reaches ``deadline`` (no-op when it has)."""
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def abort(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
    """Drop the connection abruptly (RST where the platform allows) without a response."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    if resp is None:
        resp = web.Response(status=500)
    resp.force_close()
    return resp
