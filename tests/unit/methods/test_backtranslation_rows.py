"""Backtranslation on the public method API: one Struct per row kind that is the schema,
the engine's failed rows in the same columns, the requests' schemas unchanged (resumed
runs keep hitting the cache), template errors with file and line, the dedup report."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine.config import load_config
from engine.errors import ConfigError, ParseError
from engine.methods import method_config
from engine.methods.backtranslation import COLUMNS, FailedRow, KeptRow, RejectedRow
from engine.methods.backtranslation.parsing import CurationWire, InstructionReply
from engine.methods.base import failed_row_for
from engine.stages import json_schema
from tests.unit.methods.test_backtranslation import BODY, make, run_all

KINDS: dict[str, tuple[type[msgspec.Struct], str]] = {
    "kept": (KeptRow, "k"),
    "rejected": (RejectedRow, "r"),
    "failed": (FailedRow, "f"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_struct_is_the_row_schema(kind: str) -> None:
    struct, letter = KINDS[kind]
    fields = msgspec.structs.fields(struct)
    assert [f.name for f in fields] == [c.name for c in COLUMNS]
    for field, column in zip(fields, COLUMNS, strict=True):
        # a column the kind does not fill can only be null on it; the others never are
        assert (field.type is type(None)) == (letter not in column.kinds), column.name


async def test_failed_rows_the_engine_writes_have_the_method_columns(tmp_path: Path) -> None:
    method, _ = make(tmp_path, [f"{BODY} [s5]", f"{BODY} [fail]"])
    rows = await run_all(method)
    own = next(row for kind, row in rows if kind == "failed")
    kind, engine_row = failed_row_for(
        method,
        "corpus.md@9",
        source="corpus.md:9",
        stage="item",
        error=ParseError("no reply", stage="curate"),
    )
    assert kind == "failed"
    assert list(engine_row) == list(own) == [c.name for c in COLUMNS]
    assert {k for k, v in engine_row.items() if v is None} == {
        k for k, v in own.items() if v is None
    }
    assert (
        engine_row["models"]
        == own["models"]
        == {
            "strong": "m-strong",
            "target": "m-target",
            "judge": "m-judge",
        }
    )
    assert engine_row["simulated"] is False and engine_row["error_kind"] == "ParseError"


def test_structured_output_schemas_are_the_ones_runs_were_cached_with() -> None:
    # The schema is part of each request, so of its cache key: a changed schema would
    # make every resumed run ask again.
    assert json_schema(InstructionReply) == {
        "type": "object",
        "properties": {"instruction": {"type": "string"}},
        "required": ["instruction"],
        "additionalProperties": False,
    }
    assert json_schema(CurationWire) == {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["reasoning", "score"],
        "additionalProperties": False,
    }


def test_unknown_placeholder_names_the_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bt.toml"
    path.write_text(
        """[run]
method = "backtranslation"
input = "corpus.md"

[endpoints.strong]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "strong"

[method.backtranslation.templates]
backtranslate = "{{segment}}"
curate = "{{instruction}} {{nope}}"
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        method_config(load_config(path))
    err = info.value
    assert (err.path, err.line, err.field) == (
        str(path),
        14,
        "method.backtranslation.templates.curate",
    )
    assert "nope" in err.reason and err.hint is not None and "{{answer}}" in err.hint


@pytest.mark.parametrize(
    ("on", "exact", "dedup", "rows"),
    [
        (True, False, {"mode": "bloom", "capacity": 10_000_000, "saturated": False}, 1),
        (True, True, {"mode": "exact"}, 1),
        (False, False, {"mode": "off"}, 2),
    ],
)
async def test_dedup_report_says_what_found_repeats(
    tmp_path: Path, on: bool, exact: bool, dedup: dict[str, object], rows: int
) -> None:
    method, _ = make(tmp_path, [f"{BODY} [s5]", f"{BODY} [s5]"], dedup=on, dedup_exact=exact)
    assert len(await run_all(method)) == rows
    report = method.report()
    assert report["dedup"] == dedup
    assert report["corpus"]["dropped"] == ({"duplicate": 1} if rows == 1 else {})
    json.dumps(report)  # plain data, as the report file holds it
