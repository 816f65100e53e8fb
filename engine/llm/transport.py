"""The endpoint seam: what the engine needs from a provider's API, whatever the provider.

A :class:`Transport` takes a chat request in the OpenAI chat-completions shape (the lingua
franca the stages build: ``model``, ``messages``, sampling, ``n``, ``response_format``,
``stream``) and returns a :class:`~engine.llm.client.ChatResult`; it maps the provider's
failures into :mod:`engine.errors` and its rate-limit headers into
:class:`~engine.llm.wire.RateInfo`. Everything above it (the gate, the cache, retries,
budgets, the methods) is the same for every provider.

:class:`~engine.llm.client.Client` is the OpenAI-compatible transport (OpenAI, vLLM,
SGLang, LiteLLM, Ollama, llama.cpp, and the simulated endpoint, which speaks the same
protocol). A provider with another protocol is one module implementing this protocol,
registered in :data:`TRANSPORTS` under its endpoint ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .anthropic import AnthropicTransport
from .client import ChatResult, Client

__all__ = ("TRANSPORTS", "Transport", "TransportFactory")


@runtime_checkable
class Transport(Protocol):
    """One endpoint's API (see the module docstring).

    Attributes:
        name: the endpoint's name (errors and metrics; never its key).
        base_url: where it is served (for messages; printed with credentials masked).
        simulated: set once the endpoint is known to be synth-engine's simulated one.
    """

    name: str
    base_url: str
    simulated: bool

    async def chat(self, body: dict[str, object]) -> ChatResult:
        """Send one chat request (streamed when ``body["stream"]``) and return its result.

        Raises:
            RetryableError: worth another attempt (429, 5xx, timeouts, resets, bad bodies).
            FatalEndpointError: retrying cannot help (401/403, 4xx, an oversized body).
        """
        ...

    async def models(self, base_url: str | None = None) -> list[str]:
        """The model ids the endpoint serves (for preflight checks and ``validate --ping``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


TransportFactory = Callable[..., Transport]
"""``(name, base_url, *, api_key, timeout_s, connect_timeout_s, max_connections,
max_response_bytes, redactor, **kind_options) -> Transport``."""

TRANSPORTS: dict[str, TransportFactory] = {
    "openai": Client,
    "sim": Client,  # the simulated endpoint speaks the OpenAI protocol on loopback
    "anthropic": AnthropicTransport,
}
"""Endpoint ``kind`` -> the factory of its transport."""
