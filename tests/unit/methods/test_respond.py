"""``respond`` on the public method API: its rows per kind (columns, order, ids), a bad
input line answered as a failed row that says ``simulated``, template errors with file
and line. Runs on the in-process SIMULATED endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from engine import ConfigError, Engine, load_config
from engine.io.shards import KINDS, iter_rows
from engine.methods import PUBLIC_METHODS, method_config
from engine.methods.respond import Respond, RespondConfig, RespondFailed, RespondRow
from engine.records import row_id
from tests.conftest import CONFIGS

ROW = [f.name for f in msgspec.structs.fields(RespondRow)]
FAILED = [f.name for f in msgspec.structs.fields(RespondFailed)]


def _config(tmp: Path, *, threshold: int = 5, extra: str = "") -> Path:
    seeds = (CONFIGS / "data" / "seeds.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    (tmp / "seeds.jsonl").write_text(
        "\n".join([*seeds[:4], json.dumps({"id": "no-instruction"}), *seeds[4:]]) + "\n",
        encoding="utf-8",
    )
    path = tmp / "respond.toml"
    path.write_text(
        f"""[run]
method = "respond"
input = "seeds.jsonl"
output = "out"

[endpoints.strong]
base_url = "sim"
model = "sim-strong"
sim = {{ latency_ms = 1 }}

[roles]
strong = "strong"

[method.respond]
threshold = {threshold}
{extra}""",
        encoding="utf-8",
    )
    return path


def test_respond_is_registered_on_the_public_api() -> None:
    assert PUBLIC_METHODS["respond"] is Respond and Respond.Config is RespondConfig


async def test_rows_per_kind_keep_their_columns_and_ids(tmp_path: Path) -> None:
    async with Engine(load_config(_config(tmp_path))) as engine:
        result = await engine.run()
    assert result.complete
    rows = {kind: list(iter_rows(tmp_path / "out", kind)) for kind in KINDS}
    assert rows["kept"] and rows["rejected"] and len(rows["failed"]) == 1
    for row in rows["kept"]:
        assert list(row) == ROW and row["score"] >= 5
        assert row["id"] == row_id("respond", row["seed_id"])
        assert row["response"].startswith("[simulated]") and row["simulated"] is True
        assert row["models"] == {
            "strong": "sim-strong",
            "target": "sim-strong",
            "judge": "sim-strong",
        }
    for row in rows["rejected"]:
        assert list(row) == [*ROW, "reason"] and row["score"] < 5
        assert row["reason"] == f"judge score {row['score']} < threshold 5"
    (failed,) = rows["failed"]
    assert list(failed) == FAILED
    assert failed["source"].endswith("seeds.jsonl:5") and failed["simulated"] is True
    assert (failed["stage"], failed["error_kind"]) == ("input", "input")
    assert failed["id"] == row_id("respond", failed["seed_id"], "input", "failed")
    assert len(rows["kept"]) + len(rows["rejected"]) == 8
    assert result.report is not None and result.report.method_report["threshold"] == 5.0


@pytest.mark.parametrize("key", ["respond_template", "judge_template"])
def test_unknown_placeholder_names_the_file_line_and_key(tmp_path: Path, key: str) -> None:
    path = _config(tmp_path, extra=f'{key} = "{{{{instruction}}}} {{{{answer}}}}"\n')
    with pytest.raises(ConfigError) as info:
        method_config(load_config(path))
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 16, f"method.respond.{key}")
    assert "answer" in err.reason and err.hint is not None and "{{instruction}}" in err.hint
