"""Each method's doc opens with a table "paper element | paper's value | default here |
config key"; every "default here" must be the config Struct's default for that key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.methods.backtranslation import BacktranslationConfig
from engine.methods.codeclm import CodecLMConfig
from engine.methods.lab import LabConfig
from engine.methods.selfguide import SelfGuideConfig

DOCS = Path(__file__).resolve().parents[3] / "docs" / "methods"
HEADER = ["paper element", "paper's value", "default here", "config key"]
CONFIGS: dict[str, type[msgspec.Struct]] = {
    "codeclm.md": CodecLMConfig,
    "backtranslation.md": BacktranslationConfig,
    "selfguide.md": SelfGuideConfig,
    "lab.md": LabConfig,
}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def defaults_table(text: str) -> list[dict[str, str]]:
    """The rows of the first table of ``text``, which must be the defaults table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    assert _cells(lines[start]) == HEADER, "the doc's first table must be the defaults table"
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(HEADER, _cells(line), strict=True)))
    return rows


def parse_default(cell: str) -> Any:
    """A "default here" cell: a TOML literal in backticks, or `unset` (None)."""
    m = re.match(r"^`([^`]*)`", cell)
    assert m, f"default cell {cell!r} must start with a `literal`"
    literal = m.group(1)
    if literal == "unset":
        return None
    return tomllib.loads(f"v = {literal}")["v"]


def struct_default(config: type[msgspec.Struct], key: str) -> Any:
    value: Any = config()
    for part in key.split("."):
        value = getattr(value, part)
    return msgspec.to_builtins(value)


@pytest.mark.parametrize("doc", sorted(CONFIGS))
def test_every_default_in_the_table_is_the_configs(doc: str) -> None:
    rows = defaults_table((DOCS / doc).read_text(encoding="utf-8"))
    assert len(rows) >= 10
    for row in rows:
        key = row["config key"].strip("`")
        assert re.fullmatch(r"[a-z_][a-z0-9_.]*", key), row
        expected = parse_default(row["default here"])
        got = struct_default(CONFIGS[doc], key)
        if isinstance(expected, float) or isinstance(got, float):
            assert got is not None and expected is not None
            assert float(got) == float(expected), (doc, key)
        else:
            assert got == expected, (doc, key)


def test_each_doc_lists_the_defaults_that_differ() -> None:
    for doc in CONFIGS:
        text = (DOCS / doc).read_text(encoding="utf-8")
        assert "**Defaults that still differ from the paper, and why**" in text, doc


def test_the_table_parser_catches_a_wrong_default() -> None:
    table = "\n".join(
        [
            "| " + " | ".join(HEADER) + " |",
            "|---|---|---|---|",
            "| θ | 3 | `2.0` | `theta` |",
        ]
    )
    (row,) = defaults_table(table)
    assert parse_default(row["default here"]) != struct_default(CodecLMConfig, "theta")
