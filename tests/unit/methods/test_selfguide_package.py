"""SELF-GUIDE as a package on the public method API: its registration and capabilities,
row Structs that agree with its row schema, the failed row of an annotation call that
fails for good, option errors with file and line, and no private back door."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.config import load_config
from engine.errors import ConfigError, ServerError
from engine.methods import PUBLIC_METHODS, create_method, resolve_method
from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext, failed_row_for
from engine.methods.custom import Context, Method
from engine.methods.selfguide import COLUMNS, SelfGuideMethod
from engine.methods.selfguide.rows import FailedRow, KeptRow, RejectedRow
from engine.records import Item, RowOut, row_id
from tests.fakes import Counts, Reply

PACKAGE = Path(__file__).resolve().parents[3] / "engine" / "methods" / "selfguide"

TASK = {
    "name": "t",
    "instruction": "Summarise the input.",
    "examples": [
        {"input": "gold one", "output": "out one"},
        {"input": "gold two", "output": "out two"},
    ],
}


class Student:
    """A ChatCaller: inputs ``input number N``; annotation from ``annotate`` (a real class)."""

    name = "student"
    model = "m-student"
    structured_output = False

    def __init__(self, annotate: list[str] | Exception) -> None:
        self.annotate = annotate

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> Reply:
        if params.get("stage") == "generate":
            return Reply(f"input number {params['sample_index']}")
        if isinstance(self.annotate, Exception):
            raise self.annotate
        return Reply(self.annotate)


def write_config(tmp_path: Path, table: str = "") -> Path:
    (tmp_path / "task.json").write_text(json.dumps(TASK), encoding="utf-8")
    path = tmp_path / "sg.toml"
    path.write_text(
        f"""[run]
method = "selfguide"
input = "task.json"

[endpoints.s]
base_url = "http://127.0.0.1:9/v1"
model = "m-student"

[roles]
strong = "s"

[method.selfguide]
generation_rounds = 1
per_round = 3
output_length_filter = false
{table}""",
        encoding="utf-8",
    )
    return path


def adapter_for(path: Path, student: Student, overrides: list[str] | None = None) -> Adapter:
    config = load_config(path, overrides)
    stages: dict[str, Counts] = {}
    ctx = MethodContext(
        config=config,
        callers={"strong": student, "target": student, "judge": student},
        input_path=config.resolve("task.json"),
        stage=lambda name: stages.setdefault(name, Counts()),
    )
    adapter = create_method(config, ctx)
    assert isinstance(adapter, Adapter)
    return adapter


async def run(adapter: Adapter) -> list[RowOut]:
    await adapter.prepare()
    rows: list[RowOut] = []
    for item in adapter.work():
        assert isinstance(item, Item)
        rows += await adapter.process(item)
    return rows


def sg(adapter: Adapter) -> SelfGuideMethod:
    assert isinstance(adapter.method, SelfGuideMethod)
    return adapter.method


# ------------------------------------------------------------ registration
def test_registered_on_the_public_api_with_its_capabilities(tmp_path: Path) -> None:
    assert PUBLIC_METHODS["selfguide"] is SelfGuideMethod
    assert issubclass(SelfGuideMethod, Method)
    entry = resolve_method(load_config(write_config(tmp_path)))
    assert (entry.records_input, entry.global_phase, entry.finalizes) == (False, True, True)
    assert SelfGuideMethod.provenance_columns is False


def test_no_private_back_door() -> None:
    """Only the public Context: never the engine's MethodContext behind it."""
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"MethodContext|method_context|_mctx", text), path.name
        assert len(text.splitlines()) <= 500, path.name


# -------------------------------------------------------------------- rows
@pytest.mark.parametrize(
    ("struct", "letter"), [(KeptRow, "k"), (RejectedRow, "r"), (FailedRow, "f")]
)
def test_each_row_struct_has_the_schema_columns_and_nulls(
    struct: type[msgspec.Struct], letter: str
) -> None:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    assert [f.name for f in info.fields] == [c.name for c in COLUMNS]
    for column, field in zip(COLUMNS, info.fields, strict=True):
        always_null = isinstance(field.type, msgspec.inspect.NoneType)
        assert always_null is (letter not in column.kinds), (struct.__name__, column.name)


def test_rows_are_the_schema_s_rows(tmp_path: Path) -> None:
    adapter = adapter_for(write_config(tmp_path, "noise_phrases = ['number 2']"), Student(["o"]))
    rows = asyncio.run(run(adapter))
    assert sorted(k for k, _ in rows) == ["kept", "kept", "rejected"]
    schema = sg(adapter).row_schema
    for kind, row in rows:
        assert list(row) == [c.name for c in COLUMNS]
        assert schema.conform(kind, row) == row  # what the dict-built rows were
        assert row["models"] == {"strong": "m-student", "target": "m-student", "judge": "m-student"}
    rejected = next(r for k, r in rows if k == "rejected")
    assert (rejected["filter"], rejected["stage"]) == ("noise", "input")
    assert (rejected["similarity"], rejected["duplicate_of"]) == (0.0, "")


def test_a_failed_annotation_is_a_failed_row_in_the_schema(tmp_path: Path) -> None:
    adapter = adapter_for(write_config(tmp_path), Student(ServerError("boom", status=503)))
    rows = asyncio.run(run(adapter))
    assert [k for k, _ in rows] == ["failed"] * 3
    for (_, row), j in zip(rows, range(3), strict=True):
        assert list(row) == [c.name for c in COLUMNS]
        assert sg(adapter).row_schema.conform("failed", row) == row
        assert row["id"] == row_id("selfguide", f"r1-p{j}", "annotate", "failed")
        assert (row["stage"], row["error_kind"]) == ("annotate", "server_error")
        assert "boom" in row["error"] and row["input"] == f"input number {j}"
    assert sg(adapter).report()["annotation"]["failed"] == 3


def test_the_engine_s_failed_rows_share_the_columns(tmp_path: Path) -> None:
    adapter = adapter_for(write_config(tmp_path), Student(["o"]))
    kind, row = failed_row_for(adapter, "r1-p0", source="x", stage="item", error="broken")
    assert kind == "failed" and list(row) == [c.name for c in COLUMNS]
    assert row["models"] is None  # not bound to the run yet
    sg(adapter).bind(adapter.ctx)
    _, row = failed_row_for(adapter, "r1-p0", source="x", stage="item", error="broken")
    assert row["models"] == {"strong": "m-student", "target": "m-student", "judge": "m-student"}
    assert row["simulated"] is False


# ----------------------------------------------------------------- options
def test_option_errors_name_the_file_line_and_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, 'annotate_best_of = 5\n[method.selfguide.templates]\ngenerate = "{{nope}}"\n'
    )
    with pytest.raises(ConfigError) as info:
        adapter_for(path, Student(["o"]))
    err = info.value
    assert (err.path, err.line, err.field) == (
        str(path),
        18,
        "method.selfguide.templates.generate",
    )
    assert err.hint is not None and "{{instruction}}" in err.hint
    path = write_config(tmp_path, "annotate_best_of = 5\n")
    with pytest.raises(ConfigError) as info:
        adapter_for(path, Student(["o"]))
    assert (info.value.path, info.value.line) == (str(path), 16)
    assert info.value.field == "method.selfguide.annotate_best_of"
    with pytest.raises(ConfigError) as info:
        adapter_for(write_config(tmp_path), Student(["o"]), ["method.selfguide.annotate_best_of=3"])
    assert (info.value.path, info.value.line) == ("--set", None)


def test_a_method_serves_one_run(tmp_path: Path) -> None:
    adapter = adapter_for(write_config(tmp_path), Student(["o"]))
    other = adapter_for(write_config(tmp_path), Student(["o"]))
    method = sg(adapter)
    method.bind(adapter.ctx)
    method.bind(adapter.ctx)  # the same run: nothing more
    assert isinstance(other.ctx, Context)
    with pytest.raises(RuntimeError, match="one run"):
        method.bind(other.ctx)


# ------------------------------------------------------------------ report
def test_the_report_keeps_its_keys_before_and_after_a_run(tmp_path: Path) -> None:
    keys = [
        "task",
        "task_format",
        "warnings",
        "task_type",
        "settings",
        "sampling",
        "rounds",
        "inputs",
        "prompts_over_budget",
        "prompts_without_low_quality",
        "annotation",
        "note",
    ]
    adapter = adapter_for(write_config(tmp_path), Student(["o"]))
    before = sg(adapter).report()
    assert list(before) == keys and before["task"] is None and before["rounds"] == []
    asyncio.run(run(adapter))
    after = sg(adapter).report()
    assert list(after) == keys
    assert after["rounds"] == [
        {
            "round": 1,
            "generated": 3,
            "dropped": {"empty": 0, "length": 0, "noise": 0, "duplicate": 0},
            "kept": 3,
        }
    ]
    assert after["annotation"]["voted"] == 3 and after["annotation"]["samples_dropped"] == {}
    assert after["settings"] == {
        "generation_temperature": 0.9,
        "input_length_filter": False,
        "output_length_filter": False,
    }
