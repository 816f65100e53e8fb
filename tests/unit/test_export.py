"""engine.export: rows as conversations, the card, the directory swap (no endpoint, no subprocess)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.errors import ConfigError, InputError, OutputLocked
from engine.export import conversation_problem, export_output
from engine.export.card import CardFacts, render_card
from engine.export.job import _ReadLock
from engine.export.rows import RowConverter, columns_for
from engine.io.lock import OutputLock
from engine.io.shards import ShardSink
from engine.methods.lab.mix import SDG_SYSTEM_PROMPT
from tests.fakehub import metadata_errors

S, U, A = "system", "user", "assistant"


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (turns((U, "q"), (A, "a")), None),
        (turns((S, "s"), (U, "q"), (A, "a"), (U, "q2"), (A, "a2")), None),
        (turns((U, "q"), (A, "  ")), "empty assistant turn"),
        (turns((S, ""), (U, "q"), (A, "a")), "empty system turn"),
        (turns((U, "q"), (S, "s"), (A, "a")), "a system turn at position 1"),
        (turns((U, "q"), (U, "q2"), (A, "a")), "turn 1 is user, expected assistant"),
        (
            turns(
                (A, "a"),
            ),
            "turn 0 is assistant, expected user",
        ),
        (
            turns(
                (U, "q"),
            ),
            "it does not end with an assistant turn",
        ),
        (turns(("tool", "t"), (A, "a")), "turn 0 has role 'tool'"),
        ([], "no messages"),
        ("text", "no messages"),
        ([{"role": U, "content": 3}, {"role": A, "content": "a"}], "empty user turn"),
    ],
)
def test_conversation_rules(messages: Any, problem: str | None) -> None:
    assert conversation_problem(messages) == problem


def test_codeclm_and_respond_rows() -> None:
    codec = RowConverter("codeclm", None, simulated=False)
    row, why = codec.convert(
        {
            "id": "r1",
            "source": "metadata:1",
            "instruction": "Q",
            "response": "A",
            "origin": "seed",
            "response_source": "target",
            "iteration": 2,
            "scores": {"strong": 1.0, "target": 6.0, "gap": -5.0},
            "simulated": True,
        }
    )
    assert why is None and row is not None
    assert row == {
        "id": "r1",
        "messages": turns((U, "Q"), (A, "A")),
        "source": "metadata:1",
        "simulated": True,
        "origin": "seed",
        "response_source": "target",
        "iteration": 2,
        "gap": -5.0,
    }
    respond = RowConverter("respond", None, simulated=True)
    row, _ = respond.convert({"id": "r2", "instruction": "Q", "response": "A", "score": 9})
    assert row is not None
    assert row["score"] == 9.0 and isinstance(row["score"], float)
    assert row["simulated"] is True and row["source"] is None  # from the manifest; none given
    assert respond.convert({"id": "r3", "instruction": "Q", "response": ""}) == (
        None,
        "empty assistant turn",
    )
    assert respond.convert({"instruction": "Q", "response": "A"}) == (None, "no id")


def test_backtranslation_system_turn_from_the_row_then_the_config() -> None:
    default = RowConverter("backtranslation", None, simulated=False)
    row, _ = default.convert({"id": "a", "instruction": "Q", "response": "A", "tag": "S_w"})
    assert row is not None
    assert row["messages"][0] == {"role": S, "content": "Answer with knowledge from web search."}
    assert row["origin"] == "augmented"
    config = {"method": {"backtranslation": {"tag": "Use the web."}}}
    tagged = RowConverter("backtranslation", config, simulated=False)
    row, _ = tagged.convert({"id": "a", "instruction": "Q", "response": "A"})
    assert row is not None and row["messages"][0]["content"] == "Use the web."
    row, _ = tagged.convert({"id": "a", "instruction": "Q", "response": "A", "system": "Own."})
    assert row is not None and row["messages"][0]["content"] == "Own."
    # the training mix's rows carry messages already: kept as they are
    mix: dict[str, Any] = {"id": "s", "origin": "seed", "tag": "S_a", "source": "seeds.jsonl:1"}
    mix["messages"] = turns((S, "Answer in the style of an AI Assistant."), (U, "Q"), (A, "A"))
    row, _ = default.convert(mix)
    assert row is not None and row["messages"] == mix["messages"] and row["tag"] == "S_a"
    assert row["score"] is None


def test_selfguide_user_turn_is_instruction_then_input() -> None:
    guide = RowConverter("selfguide", None, simulated=False)
    base = {"id": "g", "task": "t", "instruction": "Classify.", "label": "good"}
    row, _ = guide.convert({**base, "input": "Nice phone.", "output": "good"})
    assert row is not None
    assert row["messages"] == turns((U, "Classify.\n\nNice phone."), (A, "good"))
    assert row["label"] == "good" and row["task"] == "t"
    assert guide.convert({**base, "input": " ", "output": "good"}) == (None, "empty user turn")


def test_lab_sample_is_sdgs_with_the_configs_system_prompt() -> None:
    row = {
        "id": "l",
        "source": "leaf/qna.yaml",
        "leaf": "knowledge/x",
        "kind": "knowledge",
        "phase": "knowledge",
        "question": "Q?",
        "answer": "A.",
        "context": "Chunk.",
    }
    out, _ = RowConverter("lab", None, simulated=False).convert(row)
    assert out is not None
    assert out["messages"] == turns((S, SDG_SYSTEM_PROMPT), (U, "Chunk.\n\nQ?"), (A, "A."))
    assert out["unmask"] is True and out["dataset"] == "knowledge_qa"
    config = {"method": {"lab": {"mix": {"system_prompt": "You are Granite."}}}}
    out, _ = RowConverter("lab", config, simulated=False).convert(
        {**row, "kind": "freeform_skill", "phase": "skills", "context": ""}
    )
    assert out is not None
    assert out["messages"] == turns((S, "You are Granite."), (U, "Q?"), (A, "A."))
    assert out["unmask"] is False


def test_unknown_method_is_refused() -> None:
    with pytest.raises(InputError, match="no export for method 'magic'"):
        RowConverter("magic", None, simulated=False)


def _facts(**changes: Any) -> CardFacts:
    values: dict[str, Any] = {
        "method": "selfguide",
        "fmt": "messages",
        "dataset": "kept",
        "rows": 999,
        "skipped": {"empty user turn": 2},
        "totals": {"items": 10, "kept": 1001, "rejected": 5, "failed": 1},
        "simulated": False,
        "complete": True,
        "models": {"strong": ["m1"]},
        "config": {"run": {"seed": 3}},
        "config_hash": "abc123",
        "engine_version": "9.9",
        "columns": columns_for("selfguide"),
        "files": [],
    }
    values.update(changes)
    return CardFacts(**values)


def test_card_metadata_and_banners() -> None:
    card = render_card(_facts())
    assert metadata_errors(card) == []
    head, body = card.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    assert meta["size_categories"] == ["n<1K"]
    assert "simulated" not in meta["tags"]
    assert [f["name"] for f in meta["dataset_info"]["features"]] == [
        name for name, _ in columns_for("selfguide")
    ]
    assert "SIMULATED" not in card and "INCOMPLETE" not in card
    assert "- left out (empty user turn): 2" in body
    assert "https://arxiv.org/abs/2407.12874" in body
    assert '"seed": 3' in body

    card = render_card(
        _facts(simulated=True, complete=False, stop_reason="budget: max_requests", rows=1000)
    )
    head, body = card.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    assert meta["size_categories"] == ["1K<n<10K"] and "simulated" in meta["tags"]
    banners = body.split("## ")[0]
    assert "> **SIMULATED.**" in banners and "> **INCOMPLETE.** " in banners
    assert "budget: max_requests" in banners
    assert "(this output predates `config.json`" in render_card(_facts(config=None))


def _output(tmp: Path, rows: list[dict[str, Any]]) -> Path:
    out = tmp / "out"
    sink, _ = ShardSink.open(
        out,
        shard_records=100,
        config_hash="h",
        input_fingerprint="f",
        method="respond",
        engine_version="0.1.0",
        simulated=False,
    )
    sink.write_item(0, [("kept", r) for r in rows])
    sink.close(complete=True)
    return out


def test_export_in_process(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "instruction": "Q1", "response": "A1", "score": 8},
        {"id": "b", "instruction": "Q2", "response": "", "score": 9},
    ]
    out = _output(tmp_path, rows)
    result = export_output(out, "messages")
    assert result.directory == out / "export-messages"
    assert result.rows == 1 and result.skipped == {"empty assistant turn": 1}
    lines = (result.directory / "data" / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a"]
    record = json.loads((result.directory / "export.json").read_text())
    assert record["skipped"] == {"empty assistant turn": 1}
    assert record["files"][0]["rows"] == 1

    with OutputLock(out), pytest.raises(OutputLocked, match="a run is writing this output"):
        export_output(out, "messages")
    # while an export reads, another export may read too, and a run may not start
    with _ReadLock(out), _ReadLock(out):
        with pytest.raises(OutputLocked, match="another run is writing this output"):
            OutputLock(out).acquire()
    with OutputLock(out):  # free again
        pass
    with pytest.raises(ConfigError, match="has no derived dataset 'mix' \\(it has: none\\)"):
        export_output(out, "messages", dataset="mix")


def test_a_malformed_row_is_left_out_with_its_reason() -> None:
    lab = RowConverter("lab", None, simulated=False)
    row, why = lab.convert({"id": "x", "question": "Q?", "answer": "A."})  # no kind, no leaf
    assert row is None and why is not None and why.startswith("malformed lab row (KeyError")
