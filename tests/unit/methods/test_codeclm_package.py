"""CodecLM as a package on the public method API: registered as an ``engine.Method``,
typed rows per kind in the one row schema, unchanged wire schemas, errors with the place
of the key, and the engine's own failed rows and item total through the Adapter."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import msgspec
import pytest

from engine import Engine
from engine.config import load_config
from engine.errors import ConfigError, ServerError
from engine.io.shards import KINDS, iter_rows
from engine.methods import PUBLIC_METHODS, method_config, resolve_method
from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext, failed_row_for
from engine.methods.codeclm import COLUMNS, CodecLM, CodecLMConfig
from engine.methods.codeclm.rows import FailedRow, KeptRow, RejectedRow
from engine.methods.custom import Context, Failed, Kept, Rejected
from engine.records import Item
from tests.fakes import Observers
from tests.unit.methods.test_codeclm import FakeEndpoint, Script, write_config

_KIND_LETTER = {KeptRow: "k", RejectedRow: "r", FailedRow: "f"}


def _context(tmp_path: Path, script: Script, **method: object) -> tuple[CodecLM, Context]:
    config = write_config(tmp_path, "", **method)
    cfg = method_config(config)
    assert isinstance(cfg, CodecLMConfig)
    callers = {
        "strong": FakeEndpoint("strong", "m-strong", script),
        "target": FakeEndpoint("target", "m-target", script),
        "judge": FakeEndpoint("judge", "m-strong", script),
    }
    mctx = MethodContext(
        config=config,
        callers=dict(callers),
        input_path=config.resolve(config.run.input or ""),
        stage=Observers(),
    )
    return CodecLM(cfg), Context(mctx, "codeclm")


def test_registered_as_a_public_method(tmp_path: Path) -> None:
    assert PUBLIC_METHODS["codeclm"] is CodecLM
    entry = resolve_method(write_config(tmp_path))
    assert entry.name == "codeclm" and entry.config_type is CodecLMConfig
    assert entry.global_phase and entry.records_input and not entry.finalizes
    assert entry.required_fields == ("instruction",)
    assert CodecLM.provenance_columns is False


@pytest.mark.parametrize("struct", [KeptRow, RejectedRow, FailedRow])
def test_each_kind_has_every_column_in_order_and_null_where_it_does_not_fill(
    struct: type[msgspec.Struct],
) -> None:
    assert struct.__struct_fields__ == tuple(c.name for c in COLUMNS)
    hints = typing.get_type_hints(struct)
    letter = _KIND_LETTER[struct]
    for column in COLUMNS:
        # a column this kind does not fill is typed None: null on every row of the kind
        assert (hints[column.name] is type(None)) == (letter not in column.kinds), column.name


async def test_process_returns_typed_rows_of_each_kind(tmp_path: Path) -> None:
    def policy(instruction: str, iteration: int) -> tuple[int, int]:
        return (9, 3) if "Task 1 " in instruction else (5, 5)

    def fail(role: str, stage: str, content: str) -> Exception | None:
        if role == "target" and stage == "respond" and "Task 3 " in content:
            return ServerError("upstream down", endpoint="target", status=503)
        return None

    method, ctx = _context(tmp_path, Script(policy=policy, fail=fail), max_iterations=1)
    await method.prepare(ctx)
    item = next(iter(method.work(ctx)))
    assert isinstance(item, Item)
    kept, rejected, failed = await method.process(item, ctx)
    assert isinstance(kept, Kept) and isinstance(kept.data, KeptRow)
    assert kept.data.scores.gap > 3 and kept.data.history[-1].scores == kept.data.scores
    assert isinstance(rejected, Rejected) and isinstance(rejected.data, RejectedRow)
    assert rejected.reason == rejected.data.reason and rejected.data.filter == "contrastive"
    assert isinstance(failed, Failed) and isinstance(failed.data, FailedRow)
    assert (failed.stage, failed.data.error_kind) == ("respond", "server_error")
    assert failed.error == failed.data.error and "HTTP 503" in failed.error
    for row in (kept.data, rejected.data, failed.data):
        assert row.models == {"strong": "m-strong", "target": "m-target", "judge": "m-strong"}
        assert row.seed_id == "seed-01" and row.source == "metadata:0"


async def test_reply_shapes_ask_for_the_same_json_schema_as_before(tmp_path: Path) -> None:
    # A Struct's docstring would go into its JSON schema as "description", changing every
    # structured request (and so every cache key and every simulated reply).
    def policy(instruction: str, iteration: int) -> tuple[int, int]:
        return (9, 3) if iteration == 2 else (5, 5)  # kept after one improve

    script = Script(policy=policy, structured=True)
    method, ctx = _context(
        tmp_path, script, metadata_count=3, instructions_per_metadata=1, metadata_check=True
    )
    await method.prepare(ctx)
    for item in method.work(ctx):
        assert isinstance(item, Item)
        await method.process(item, ctx)
    formats = [
        f
        for caller in method.steps(ctx).roles
        if isinstance(caller, FakeEndpoint)
        for f in caller.response_formats
        if f is not None
    ]

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in keys(v)}
        if isinstance(node, list):
            return {k for v in node for k in keys(v)}
        return set()

    names = {f["json_schema"]["name"] for f in formats}
    assert names == {"encode", "rubrics", "decode", "improve", "judge", "check_metadata"}
    assert all("description" not in keys(f) for f in formats)
    rubrics = next(f for f in formats if f["json_schema"]["name"] == "rubrics")
    actions = rubrics["json_schema"]["schema"]["properties"]["actions"]
    assert actions["minItems"] == actions["maxItems"] == 4  # the rubric_count asked for


def test_a_bad_template_names_the_file_line_and_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[method.codeclm.templates]\njudge = "{{instruction}} {{answer}}"\n'
    )
    with pytest.raises(ConfigError) as info:
        method_config(config)
    err = info.value
    assert err.field == "method.codeclm.templates.judge"
    assert err.path == str(tmp_path / "codeclm.toml")
    lines = (tmp_path / "codeclm.toml").read_text().splitlines()
    assert err.line is not None and lines[err.line - 1].startswith("judge = ")
    assert err.hint is not None and "{{answer_1}}" in err.hint


def test_a_bad_template_set_on_the_command_line_names_set(tmp_path: Path) -> None:
    write_config(tmp_path)
    config = load_config(tmp_path / "codeclm.toml", ["method.codeclm.templates.decode={{nothing}}"])
    with pytest.raises(ConfigError) as info:
        method_config(config)
    assert info.value.path == "--set" and info.value.field == "method.codeclm.templates.decode"


async def test_engine_failed_rows_and_item_total_go_through_the_adapter(tmp_path: Path) -> None:
    method, ctx = _context(tmp_path, Script(), metadata_count=5)
    adapter = Adapter(method, ctx.method_context)
    assert adapter.total is None
    await adapter.prepare()
    assert adapter.total == 5 == method.total
    kind, row = failed_row_for(
        adapter, "meta-3", source="metadata:3", stage="item", error=ServerError("down")
    )
    assert kind == "failed" and list(row) == [c.name for c in COLUMNS]
    assert row["stage"] == "item" and row["error_kind"] == "server_error"
    assert row["models"] == {"strong": "m-strong", "target": "m-target", "judge": "m-strong"}
    assert row["simulated"] is False and row["metadata"] is None and row["instruction"] == ""


async def test_report_keys_in_order(tmp_path: Path) -> None:
    method, ctx = _context(tmp_path, Script(), metadata_count=2, instructions_per_metadata=1)
    await method.prepare(ctx)
    for item in method.work(ctx):
        assert isinstance(item, Item)
        await method.process(item, ctx)
    assert list(method.report()) == [
        "seeds_read",
        "seeds_failed",
        "metadata_items",
        "basic_instructions_budget",
        "instructions",
        "short_decodes",
        "kept",
        "kept_by_iteration",
        "kept_first_iteration_share",
        "rejected",
        "failed_by_stage",
        "judge_calls",
        "note",
    ]
    (tmp_path / "c").mkdir()
    checked, _ = _context(tmp_path / "c", Script(), target_pairs=1, metadata_check=True)
    report = checked.report()
    assert list(report)[5:10] == [
        "target_pairs",
        "kept_total",
        "kept_before_this_run",
        "passes",
        "metadata_check",
    ]
    assert report["metadata_check"] == {"checked": 0, "refused": 0, "unchecked": 0}


async def test_a_run_reports_its_item_total_and_writes_every_kind(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "instruction": "Explain how tides work."}),
        "{not json",
        json.dumps({"id": "b", "instruction": "Write a haiku about rain."}),
    ]
    (tmp_path / "seeds.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "job.toml").write_text(
        """[run]
method = "codeclm"
input = "seeds.jsonl"
output = "out"

[endpoints.sim]
base_url = "sim"
model = "sim-model"
sim = { latency_ms = 0 }

[roles]
strong = "sim"

[method.codeclm]
metadata_count = 4
instructions_per_metadata = 2
max_iterations = 1
"""
    )
    async with Engine(load_config(tmp_path / "job.toml")) as engine:
        result = await engine.run()
    assert result.complete and result.report is not None
    assert result.report.items.total == 4 + 1  # the metadata items, and the bad line
    rows = {kind: list(iter_rows(tmp_path / "out", kind)) for kind in KINDS}
    assert len(rows["kept"]) + len(rows["rejected"]) == 4 * 2
    (bad,) = rows["failed"]
    assert (bad["stage"], bad["error_kind"], bad["seed_id"]) == ("input", "input", "line-2")
    for kind_rows in rows.values():
        for row in kind_rows:
            assert list(row) == [c.name for c in COLUMNS] and row["simulated"] is True
