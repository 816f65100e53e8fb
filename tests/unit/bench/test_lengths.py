"""Length distribution specs."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from engine.bench.lengths import parse_length
from engine.errors import ConfigError, InputError


def test_fixed_and_plain_number() -> None:
    rng = random.Random(0)
    assert parse_length("128").sample(rng) == 128
    assert parse_length("fixed:7").sample(rng) == 7
    assert parse_length(5).expected == 5.0


def test_uniform_covers_both_ends() -> None:
    d = parse_length("uniform:3,6")
    rng = random.Random(1)
    seen = {d.sample(rng) for _ in range(500)}
    assert seen == {3, 4, 5, 6}


def test_normal_mean_sd_and_clip() -> None:
    d = parse_length("normal:100,20")
    rng = random.Random(2)
    xs = [d.sample(rng) for _ in range(20_000)]
    assert statistics.fmean(xs) == pytest.approx(100, rel=0.01)
    assert statistics.pstdev(xs) == pytest.approx(20, rel=0.03)
    clipped = parse_length("normal:100,50,90,110")
    assert {clipped.sample(rng) for _ in range(2000)} <= set(range(90, 111))


def test_file_replays_its_values(tmp_path: Path) -> None:
    f = tmp_path / "lens.txt"
    f.write_text("# measured\n10\n\n20\n30\n")
    d = parse_length(f"file:{f}")
    rng = random.Random(3)
    assert {d.sample(rng) for _ in range(300)} == {10, 20, 30}
    assert d.expected == 20.0


def test_errors_name_the_option_or_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--output-tokens"):
        parse_length("uniform:9,3", "--output-tokens")
    with pytest.raises(ConfigError, match="unknown length distribution"):
        parse_length("zipf:1")
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_length("normal:abc")
    with pytest.raises(ConfigError):
        parse_length("0")
    bad = tmp_path / "bad.txt"
    bad.write_text("5\nfive\n")
    with pytest.raises(InputError, match=r"bad.txt:2"):
        parse_length(f"file:{bad}")
    with pytest.raises(InputError, match="cannot read"):
        parse_length(f"file:{tmp_path / 'missing.txt'}")
