"""The SLO search: the highest passing rate of the grid, within one step, in few runs."""

from __future__ import annotations

import math

import pytest

from engine.bench.sweep import rate_grid, search_rate


def test_grid() -> None:
    assert rate_grid(10, 50, 10) == [10, 20, 30, 40, 50]
    assert rate_grid(10, 45, 10) == [10, 20, 30, 40, 45]
    assert rate_grid(5, 5, 1) == [5]


@pytest.mark.parametrize("capacity", [5.0, 10.0, 33.0, 79.9, 80.0, 155.0, 160.0, 500.0])
async def test_finds_the_last_rate_under_capacity(capacity: float) -> None:
    calls: list[float] = []

    async def probe(rate: float) -> bool:
        calls.append(rate)
        return rate <= capacity

    best, tried = await search_rate(probe, 10.0, 160.0, 10.0)
    grid = rate_grid(10.0, 160.0, 10.0)
    passing = [r for r in grid if r <= capacity]
    assert best == (max(passing) if passing else None)
    if best is not None:
        assert capacity - best < 10.0 or best == 160.0
    assert [r for r, _ in tried] == calls
    assert len(calls) <= math.ceil(math.log2(len(grid))) + 2
