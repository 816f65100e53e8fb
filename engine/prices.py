"""Built-in model prices: pydantic's ``genai-prices`` table, for endpoints without a ``price``.

A user who names a hosted model (``gpt-4o`` at api.openai.com) sees cost and projected
cost without typing a price. The table is the ``genai-prices`` package's bundled snapshot
(maintained by Pydantic, used by Logfire and pydantic-ai; it is read offline, never
updated over the network by this engine). A configured ``[endpoints.NAME.price]`` always
wins. Endpoints on loopback or private addresses (a vLLM, llama.cpp or Ollama server of
your own) get no built-in price: a self-hosted model costs what your machine costs, and a
model of the same name at some provider is not what you pay.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from urllib.parse import urlsplit

__all__ = ("BuiltinPrice", "builtin_price", "table_version")

log = logging.getLogger("engine")


class BuiltinPrice:
    """USD per 1M tokens of a model, as the table gives it.

    Attributes:
        prompt: USD per 1M prompt (input) tokens.
        completion: USD per 1M completion (output) tokens.
        provider: the provider the table matched (e.g. ``openai``).
        model: the table's model id (e.g. ``gpt-4o``).
    """

    __slots__ = ("completion", "model", "prompt", "provider")

    def __init__(self, prompt: float, completion: float, provider: str, model: str) -> None:
        self.prompt = prompt
        self.completion = completion
        self.provider = provider
        self.model = model

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for the given token counts."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


def _local(base_url: str) -> bool:
    """Whether ``base_url`` points at this machine or a private network."""
    host = (urlsplit(base_url).hostname or "").strip("[]").lower()
    if host in ("", "localhost") or host.endswith((".local", ".internal", ".lan")):
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_link_local


@functools.lru_cache(maxsize=256)
def builtin_price(model: str, base_url: str) -> BuiltinPrice | None:
    """The table's price of ``model`` served at ``base_url``, or None.

    None for the simulated endpoint, for local or private addresses, when
    ``genai-prices`` is not installed, and when the table does not know the model.
    """
    if base_url == "sim" or _local(base_url):
        return None
    try:
        from genai_prices import Usage, calc_price
    except ImportError:  # pragma: no cover - a core dependency; kept optional at run time
        return None
    million = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    try:
        try:
            found = calc_price(million, model, provider_api_url=base_url)
        except LookupError:
            found = calc_price(million, model)  # a proxy (LiteLLM...) serving a known model
    except (LookupError, ValueError) as exc:
        log.debug("no built-in price for %s at %s (%s)", model, base_url, exc)
        return None
    return BuiltinPrice(
        float(found.input_price), float(found.output_price), found.provider.id, found.model.id
    )


def table_version() -> str | None:
    """The ``genai-prices`` version whose table is used (None when not installed)."""
    try:
        from genai_prices import __version__
    except ImportError:  # pragma: no cover
        return None
    return str(__version__)
