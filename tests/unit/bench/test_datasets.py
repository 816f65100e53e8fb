"""Prompt datasets and traces, read from real files (tests/fixtures/bench/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.bench.datasets import read_prompts, read_trace
from engine.bench.tokens import WordTokens
from engine.errors import InputError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "bench"
SHAREGPT = FIX / "fastchat_dummy_conversation_first60.json"
MOONCAKE = FIX / "mooncake_conversation_trace_head200.jsonl"
AZURE = FIX / "azure_llm_inference_conv_head300.csv"


def test_sharegpt_conversations_and_reply_lengths() -> None:
    convs, skipped = read_prompts(SHAREGPT, WordTokens())
    raw = json.loads(SHAREGPT.read_text())
    assert len(convs) == len(raw) == 60 and skipped == 0
    for conv, rec in zip(convs, raw, strict=True):
        humans = [m["value"] for m in rec["conversations"] if m["from"] == "human"]
        gpts = [m["value"] for m in rec["conversations"] if m["from"] == "gpt"]
        assert [t.content for t in conv.turns] == humans
        assert [t.reply_tokens for t in conv.turns] == [len(g.split()) for g in gpts]
    assert convs[0].source.endswith(":1")


def test_chat_and_prompt_records(tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        json.dumps({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello there"},
            {"role": "user", "content": "and now?"},
            {"role": "assistant", "content": "one two three"},
        ]}) + "\n\n"
        + json.dumps({"prompt": "Say something", "max_tokens": 12}) + "\n"
        + json.dumps({"conversations": [{"from": "gpt", "value": "only a reply"}]}) + "\n"
    )  # fmt: skip
    convs, skipped = read_prompts(f, WordTokens())
    assert skipped == 1
    chat, prompt = convs
    assert chat.system == "Be brief."
    assert chat.history == (("user", "hi"), ("assistant", "hello there"))
    assert chat.turns[0].content == "and now?" and chat.turns[0].reply_tokens == 3
    assert prompt.turns[0].content == "Say something" and prompt.max_tokens == 12
    assert prompt.source == f"{f}:3"


def test_malformed_records_name_their_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok"}\n{"prompt": 5}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: prompt must be a string"):
        read_prompts(f, WordTokens())
    f.write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: not a JSON object"):
        read_prompts(f, WordTokens())
    f.write_text('{"question": "?"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: a record needs"):
        read_prompts(f, WordTokens())
    f.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(InputError, match="unknown role 'robot'"):
        read_prompts(f, WordTokens())


def test_mooncake_trace() -> None:
    rows = read_trace(MOONCAKE)
    lines = [json.loads(x) for x in MOONCAKE.read_text().splitlines()]
    assert len(rows) == len(lines) == 200
    assert rows[0].at == 0.0 and rows[-1].at == lines[-1]["timestamp"] / 1000.0  # ms -> s
    assert [r.input_tokens for r in rows[:3]] == [x["input_length"] for x in lines[:3]]
    assert rows[0].hash_ids[:2] == (0, 1) and all(r.hash_ids[0] == 0 for r in rows)


def test_azure_trace() -> None:
    rows = read_trace(AZURE)
    assert len(rows) == 300
    assert (rows[0].input_tokens, rows[0].output_tokens) == (374, 44)
    # 2023-11-16 18:15:46.6805900 -> 18:15:50.9951690: 4.314579 s later
    assert rows[1].at - rows[0].at == pytest.approx(4.314579, abs=1e-5)
    assert [r.at for r in rows] == sorted(r.at for r in rows)


def test_trace_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"timestamp": 0, "input_tokens": 5}\n')
    with pytest.raises(InputError, match=r"t.jsonl:1: a trace row needs"):
        read_trace(f)
    c = tmp_path / "t.csv"
    c.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,10,x\n")
    with pytest.raises(InputError, match=r"t.csv:2: malformed row"):
        read_trace(c)
    c.write_text("when,ContextTokens,GeneratedTokens\n")
    with pytest.raises(InputError, match="no timestamp column"):
        read_trace(c)
    g = tmp_path / "g.jsonl"
    g.write_text(
        '{"timestamp": 1.5, "input_tokens": 5, "output_tokens": 2}\n{"timestamp": 0.5, "input_tokens": 3, "output_tokens": 1}\n'
    )
    rows = read_trace(g)
    assert [r.at for r in rows] == [0.5, 1.5]  # seconds, sorted
