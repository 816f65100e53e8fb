"""Pools behind one role, through the whole engine, on simulated endpoints over loopback:
several keys of one endpoint, and several endpoints with different quotas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import ConfigError, Engine, load_config
from engine.sim import SimServer, SimSettings


def _seeds(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"instruction": f"Task number {i}."}) + "\n" for i in range(n))
    )
    return path


def _config(tmp_path: Path, endpoints: str, strong: str, n: int = 150) -> Path:
    _seeds(tmp_path / "seeds.jsonl", n)
    path = tmp_path / "pool.toml"
    path.write_text(
        f"""
[run]
method = "respond"
input = "seeds.jsonl"
output = "out"
progress = "off"

{endpoints}

[roles]
strong = {strong}
"""
    )
    return path


async def test_a_key_pool_spreads_calls_over_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ["key-one", "key-two", "key-three"]
    for i, key in enumerate(keys, 1):
        monkeypatch.setenv(f"POOL_KEY_{i}", key)
    async with SimServer(SimSettings(latency_ms=2.0, api_key=keys)) as sim:
        path = _config(
            tmp_path,
            f"""[endpoints.api]
base_url = "{sim.url}"
model = "sim-model"
api_key_env = ["POOL_KEY_1", "POOL_KEY_2", "POOL_KEY_3"]
max_concurrency = 8""",
            '"api"',
        )
        async with Engine(load_config(path)) as engine:
            result = await engine.run()
        stats = sim.stats()
    assert result.complete
    assert stats["unauthorized"] == 0
    by_key = stats["requests_by_key"]
    # 150 seeds x (respond + judge) = 300 calls (+1 preflight per key), spread evenly.
    assert sum(by_key) == 300 + 3
    assert min(by_key) >= 0.25 * sum(by_key)
    members = json.loads((tmp_path / "out" / "manifest.json").read_text())["extra"]["endpoints"]
    assert set(members) == {"api#1", "api#2", "api#3"}
    assert sum(m["requests"] for m in members.values()) == 300


async def test_an_endpoint_pool_is_balanced_by_remaining_quota(tmp_path: Path) -> None:
    # Two servers enforcing different limits; the gates know them (configured rpm).
    async with (
        SimServer(SimSettings(latency_ms=2.0, rpm=1200)) as small,
        SimServer(SimSettings(latency_ms=2.0, rpm=2400)) as large,
    ):
        path = _config(
            tmp_path,
            f"""[endpoints.small]
base_url = "{small.url}"
model = "sim-model"
rpm = 1200

[endpoints.large]
base_url = "{large.url}"
model = "sim-model"
rpm = 2400""",
            '["small", "large"]',
            n=150,
        )
        async with Engine(load_config(path)) as engine:
            result = await engine.run()
        s, big = small.stats(), large.stats()
    assert result.complete
    assert s["http_429"] == big["http_429"] == 0
    assert s["completed"] + big["completed"] == 300
    # The larger quota takes about twice the share.
    ratio = big["completed"] / s["completed"]
    assert 1.5 <= ratio <= 2.6, ratio


def test_pool_config_errors(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """[endpoints.a]
base_url = "http://127.0.0.1:1/v1"
model = "m1"

[endpoints.b]
base_url = "http://127.0.0.1:1/v1"
model = "m2\"""",
        '["a", "b"]',
    )
    with pytest.raises(ConfigError, match="different models") as info:
        load_config(path)
    assert info.value.field == "roles.strong"
    with pytest.raises(ConfigError, match="distinct"):
        load_config(path, ['roles.strong=["a", "a"]'])
    with pytest.raises(ConfigError, match="not defined"):
        load_config(path, ['roles.strong=["a", "zz"]'])
