"""Built-in prices (engine/prices.py) against the genai-prices package they come from, and
what a user sees when a model has no price: an error naming the endpoint and what to add
when a cost limit needs one. Nothing here talks to a network: prices are read from the
package's bundled table."""

from __future__ import annotations

from pathlib import Path

import genai_prices
import pytest

from engine.config import load_config
from engine.errors import ConfigError
from engine.prices import builtin_price, table_version

OPENAI = "https://api.openai.com/v1"


def test_table_version_is_the_installed_packages() -> None:
    assert table_version() == genai_prices.__version__


def test_a_known_hosted_model_is_priced_without_config() -> None:
    # gpt-4o-mini at OpenAI: $0.15 / $0.60 per 1M tokens in genai-prices' table.
    price = builtin_price("gpt-4o-mini", OPENAI)
    assert price is not None
    assert (price.provider, price.model) == ("openai", "gpt-4o-mini")
    assert (price.prompt, price.completion) == (0.15, 0.6)
    assert price.cost(1_000_000, 0) == pytest.approx(0.15)
    assert price.cost(2_000, 1_000) == pytest.approx((2_000 * 0.15 + 1_000 * 0.6) / 1e6)


@pytest.mark.parametrize(
    ("model", "base_url", "provider_id"),
    [
        ("gpt-4o-mini", OPENAI, "openai"),
        ("gpt-4o", OPENAI, "openai"),
        ("claude-3-5-haiku-latest", "https://api.anthropic.com/v1", "anthropic"),
        ("gpt-4o-mini", "https://litellm.example.com/v1", "openai"),  # a proxy, model known
    ],
)
@pytest.mark.parametrize(("prompt", "completion"), [(1_234, 567), (250_000, 40_000)])
def test_costs_equal_genai_prices_own_calculation(
    model: str, base_url: str, provider_id: str, prompt: int, completion: int
) -> None:
    price = builtin_price(model, base_url)
    assert price is not None and price.provider == provider_id
    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=prompt, output_tokens=completion),
        model,
        provider_id=provider_id,
    )
    assert price.cost(prompt, completion) == pytest.approx(float(theirs.total_price), rel=1e-9)


@pytest.mark.parametrize(
    ("model", "base_url"),
    [
        ("my-finetune-xyz-2026", OPENAI),  # not in the table
        ("gpt-4o-mini", "http://127.0.0.1:8000/v1"),  # your own server: never priced
        ("gpt-4o-mini", "http://localhost:8000/v1"),
        ("gpt-4o-mini", "http://[::1]:8000/v1"),
        ("gpt-4o-mini", "http://10.1.2.3/v1"),
        ("gpt-4o-mini", "http://192.168.0.7:8000/v1"),
        ("gpt-4o-mini", "http://gpu-box.internal/v1"),
        ("gpt-4o-mini", "sim"),
    ],
)
def test_unknown_models_and_own_servers_get_no_builtin_price(model: str, base_url: str) -> None:
    assert builtin_price(model, base_url) is None


def _config(tmp: Path, endpoint: str) -> Path:
    (tmp / "seeds.jsonl").write_text('{"instruction": "Say hi."}\n')
    path = tmp / "job.toml"
    path.write_text(
        f"""
[run]
method = "respond"
input = "seeds.jsonl"
output = "out"

[endpoints.api]
{endpoint}

[roles]
strong = "api"

[budget]
max_cost = 5.0
"""
    )
    return path


def test_max_cost_accepts_a_builtin_price(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f'base_url = "{OPENAI}"\nmodel = "gpt-4o-mini"'))
    assert config.endpoints["api"].price is None  # priced from the table at run time


@pytest.mark.parametrize(
    "endpoint",
    [
        f'base_url = "{OPENAI}"\nmodel = "my-finetune-xyz-2026"',
        'base_url = "http://127.0.0.1:8000/v1"\nmodel = "gpt-4o-mini"',
        f'base_url = "{OPENAI}"\nmodel = "gpt-4o-mini"\nbuiltin_price = false',
    ],
    ids=["unknown-model", "own-server", "builtin-off"],
)
def test_an_unpriced_endpoint_under_a_cost_limit_is_named_with_the_fix(
    tmp_path: Path, endpoint: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, endpoint))
    text = str(info.value)
    assert "budget.max_cost" in text
    assert "a cost limit needs prices, and endpoint(s) api have none" in text
    assert "add [endpoints.api.price] with prompt and completion in USD per 1M tokens" in text


def test_a_user_price_needs_no_table(tmp_path: Path) -> None:
    endpoint = (
        f'base_url = "{OPENAI}"\nmodel = "my-finetune-xyz-2026"\n'
        "price = { prompt = 1.0, completion = 2.0 }"
    )
    config = load_config(_config(tmp_path, endpoint))
    price = config.endpoints["api"].price
    assert price is not None and (price.prompt, price.completion) == (1.0, 2.0)


def test_a_run_prices_a_hosted_model_from_the_table_and_says_so(tmp_path: Path) -> None:
    """What a run's budget and report use: the table's price for the hosted endpoint (its
    source named in ``price_sources``), the user's own where configured; no request sent."""
    import asyncio
    import contextlib

    from engine.api.endpoints import Endpoints
    from engine.metrics import Metrics
    from engine.redaction import Redactor

    path = _config(tmp_path, f'base_url = "{OPENAI}"\nmodel = "gpt-4o-mini"')
    text = path.read_text().replace(
        "[roles]",
        f'[endpoints.own]\nbase_url = "{OPENAI}"\nmodel = "gpt-4o"\n'
        "price = { prompt = 1.0, completion = 2.0 }\n\n[roles]",
    )
    path.write_text(text)
    config = load_config(path)

    async def prices() -> tuple[dict[str, tuple[float, float]], dict[str, str]]:
        async with contextlib.AsyncExitStack() as stack:
            endpoints = Endpoints(config, Metrics(), Redactor(), stack)
            await endpoints.open()
            found = {n: (p.prompt, p.completion) for n, p in endpoints.prices().items()}
            return found, dict(endpoints.price_sources)

    found, sources = asyncio.run(prices())
    assert found == {"api": (0.15, 0.6), "own": (1.0, 2.0)}
    assert sources == {"api": f"genai-prices {genai_prices.__version__}: openai/gpt-4o-mini"}
