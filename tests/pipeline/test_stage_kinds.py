"""The declarative pipeline's model-free stages and typed fields: ``sample`` (listed values,
weighted, keyed by another column, or a uniform range), ``explode`` (a row per element of
a list column), list and enum field types; and their mistakes, named with file, line and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import ConfigError, Engine, load_config
from engine.io.shards import KINDS, iter_rows
from engine.methods.pipeline import _field_problem

HEAD = """
[run]
method = "pipeline"
input = "items.jsonl"
output = "out"
seed = {seed}

[endpoints.sim]
base_url = "sim"
model = "sim-model"
sim = {{ latency_ms = 1 }}

[roles]
strong = "sim"

[method.pipeline]
inputs = []
"""

SAMPLES = """
[[method.pipeline.stages]]
kind = "sample"
name = "category"
output = "category"
values = ["x", "y", "never"]
weights = [1, 1, 0]

[[method.pipeline.stages]]
kind = "sample"
name = "sub"
output = "sub"
by = "category"
values = { x = ["x1", "x2"], y = ["y1"], never = ["n1"] }

[[method.pipeline.stages]]
kind = "sample"
name = "stars"
output = "stars"
low = 1
high = 3

[[method.pipeline.stages]]
kind = "sample"
name = "share"
output = "share"
low = 0.5
high = 0.75
"""

LISTS = """
[[method.pipeline.stages]]
kind = "generate"
name = "topics"
template = "List some topics."
fields = { topics = "list[string]", mood = ["calm", "stormy"] }

[[method.pipeline.stages]]
kind = "explode"
name = "topic"
column = "topics"
output = "topic"

[[method.pipeline.stages]]
kind = "generate"
name = "line"
template = "One line about {{topic}}."
output = "line"
"""

EXPLODE_LINE = """
[[method.pipeline.stages]]
kind = "explode"
name = "words"
column = "line"
output = "word"
"""

ITEMS = 30


def _project(tmp: Path, stages: str, *, seed: int = 0, items: int = ITEMS) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "items.jsonl").write_text("".join(f'{{"id": "r{i:02d}"}}\n' for i in range(items)))
    config = tmp / "pipeline.toml"
    config.write_text(HEAD.format(seed=seed) + stages)
    return config


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: {"kind": kind, **row} for kind in KINDS for row in iter_rows(out, kind)}


async def _run(config: Path) -> dict[str, dict[str, Any]]:
    async with Engine(load_config(config)) as engine:
        result = await engine.run()
    assert result.complete
    return _rows(config.parent / "out")


async def test_sample_draws_from_values_weights_keys_and_ranges(tmp_path: Path) -> None:
    rows = await _run(_project(tmp_path / "a", SAMPLES))
    assert len(rows) == ITEMS and {r["kind"] for r in rows.values()} == {"kept"}
    for row in rows.values():
        assert row["category"] in {"x", "y"}  # "never" has weight 0
        assert row["sub"] in ({"x1", "x2"} if row["category"] == "x" else {"y1"})
        assert isinstance(row["stars"], int) and 1 <= row["stars"] <= 3
        assert isinstance(row["share"], float) and 0.5 <= row["share"] <= 0.75
    assert {r["stars"] for r in rows.values()} == {1, 2, 3}
    assert {r["category"] for r in rows.values()} == {"x", "y"}


async def test_sample_draws_the_same_on_a_rerun_and_otherwise_with_another_seed(
    tmp_path: Path,
) -> None:
    first = await _run(_project(tmp_path / "a", SAMPLES))
    again = await _run(_project(tmp_path / "b", SAMPLES))
    other = await _run(_project(tmp_path / "c", SAMPLES, seed=1))
    assert first == again
    drawn = [(r["category"], r["sub"], r["stars"], r["share"]) for r in first.values()]
    assert drawn != [(r["category"], r["sub"], r["stars"], r["share"]) for r in other.values()]


async def test_explode_makes_a_row_per_element_of_a_list_field(tmp_path: Path) -> None:
    config = _project(tmp_path / "a", LISTS, items=4)
    rows = await _run(config)
    by_item: dict[str, list[dict[str, Any]]] = {}
    for row in rows.values():
        by_item.setdefault(row["item"], []).append(row)
    assert set(by_item) == {f"r{i:02d}" for i in range(4)}
    for group in by_item.values():
        topics = group[0]["topics"]
        assert isinstance(topics, list) and all(isinstance(t, str) for t in topics)
        # One kept row per element, each with its element; ids differ.
        assert sorted(r["topic"] for r in group) == sorted(topics)
        assert all(r["kind"] == "kept" and r["mood"] in {"calm", "stormy"} for r in group)
        assert all(isinstance(r["line"], str) and r["line"] for r in group)
    report = json.loads((config.parent / "out" / "report.json").read_text())
    assert report["stages"]["line"]["calls"] == len(rows)  # one call per exploded row
    assert await _run(_project(tmp_path / "b", LISTS, items=4)) == rows


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        (["calm", "stormy"], "calm", None),
        (["calm", "stormy"], "windy", "mood 'windy' is not one of calm, stormy"),
        ("list[string]", ["a", "b"], None),
        ("list[string]", "a, b", "mood is not a list of string values"),
        ("list[integer]", [1, True], "mood is not a list of integer values"),
        ("integer", 3, None),
        ("integer", 2.5, "mood 2.5 is not a integer"),
        ("number", False, "mood False is not a number"),
        ("boolean", True, None),
        ("string", None, "field 'mood' is missing"),
    ],
)
def test_a_reply_is_checked_against_its_declared_fields(
    kind: str | list[str], value: Any, problem: str | None
) -> None:
    assert _field_problem("mood", kind, value) == problem


def _line_of(text: str, stage: int, key: str) -> int:
    """The line of ``key`` in the ``stage``-th [[method.pipeline.stages]] of ``text``."""
    seen = -1
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() == "[[method.pipeline.stages]]":
            seen += 1
        elif seen == stage and line.split("=")[0].strip() == key:
            return number
    raise AssertionError(f"no {key} in stage {stage}")


@pytest.mark.parametrize(
    ("change", "stage", "key", "message"),
    [
        (("weights = [1, 1, 0]", "weights = [1, 1]"), 0, "weights", "2 weights for 3 values"),
        (("weights = [1, 1, 0]", "weights = [0, 0, 0]"), 0, "weights", "weights are all zero"),
        (("low = 1\n", "low = 4\n"), 2, "low", "low 4 above high 3"),
        (("high = 0.75", "values = [1]"), 3, "values", "gives both values and a range"),
        (('by = "category"', 'by = "categry"'), 1, "by", "reads categry, which no input"),
        (('by = "category"\n', ""), 1, "values", "names no column to key them by"),
        (("never = [", "nevr = ["), 1, "values", "no values for category = never"),
        (('values = ["x", "y", "never"]', 'by = "sub"'), 0, "by", "reads sub"),
    ],
)
def test_a_sample_mistake_names_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], stage: int, key: str, message: str
) -> None:
    text = (HEAD.format(seed=0) + SAMPLES).replace(*change)
    config = _project(tmp_path, "")
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        Engine(load_config(config))
    err = info.value
    assert message in str(err)
    assert err.field == f"method.pipeline.stages.{stage}.{key}"
    assert err.path == str(config) and err.line == _line_of(text, stage, key)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            ('output = "line"', 'output = "line"\n' + EXPLODE_LINE),
            "method.pipeline.stages.3.column",
            "explodes 'line', which holds text values, not lists",
        ),
        (
            (
                'fields = { topics = "list[string]", mood = ["calm", "stormy"] }',
                'output = "topics"',
            ),
            "method.pipeline.stages.1.column",
            "explodes 'topics', which holds text values, not lists",
        ),
        (
            ('"list[string]"', '"list[str]"'),
            "method.pipeline.stages.0.fields",
            "invalid enum value 'list[str]'",
        ),
        (('["calm", "stormy"]', "[]"), "method.pipeline.stages.0.fields", "length >= 1"),
    ],
)
def test_a_list_or_enum_mistake_names_the_key(
    tmp_path: Path, change: tuple[str, str], field: str, message: str
) -> None:
    text = (HEAD.format(seed=0) + LISTS).replace(*change)
    config = _project(tmp_path, "")
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        Engine(load_config(config))
    assert message in str(info.value) and info.value.field is not None
    assert info.value.field.startswith(field) and info.value.path == str(config)


async def test_a_key_without_listed_values_rejects_the_row_and_says_why(tmp_path: Path) -> None:
    stages = """
[[method.pipeline.stages]]
kind = "sample"
name = "player"
output = "player"
by = "team"
values = { red = ["ana", "bo"] }
"""
    config = _project(tmp_path, stages, items=0)
    config.write_text(config.read_text().replace("inputs = []", 'inputs = ["team"]'))
    (tmp_path / "items.jsonl").write_text(
        '{"id": "a", "team": "red"}\n{"id": "b", "team": "blue"}\n'
    )
    rows = {row["item"]: row for row in (await _run(config)).values()}
    assert rows["a"]["kind"] == "kept" and rows["a"]["player"] in {"ana", "bo"}
    assert rows["b"]["kind"] == "rejected" and rows["b"]["player"] is None
    assert rows["b"]["reason"] == "player: no values listed for team = 'blue'"
