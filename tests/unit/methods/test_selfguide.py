"""SELF-GUIDE: task files, the rolling pool, round logic, filter wiring, the vote and
classification label mapping, end to end on a scripted fake endpoint."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.errors import ConfigError, InputError
from engine.methods import create_method
from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext
from engine.methods.selfguide import (
    COLUMNS,
    SelfGuideConfig,
    SelfGuideMethod,
    clean_reply,
    estimate_tokens,
    load_task,
    refuses_extensions,
    sample_pool,
)
from engine.records import Item, RowOut
from tests.fakes import Counts, Reply

GEN_TASK = {
    "name": "t",
    "type": "generation",
    "instruction": "Summarise the input.",
    "examples": [
        {"input": "gold one", "output": "out one"},
        {"input": "gold two", "output": "out two"},
    ],
}
CLS_TASK = {
    "name": "c",
    "type": "classification",
    "instruction": "Is the input positive or negative?",
    "labels": ["positive", "negative"],
    "examples": [
        {"input": "I love it", "output": "positive"},
        {"input": "I hate it", "output": "negative"},
    ],
}

Script = Callable[[str, dict[str, Any], int], list[str]]


@dataclass
class FakeEndpoint:
    """A ChatCaller answering from a script (a real class, not a mock)."""

    script: Script
    name: str = "student"
    model: str = "m-student"
    calls: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)

    @property
    def structured_output(self) -> bool:
        return False

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Reply:
        content = str(messages[-1]["content"])
        self.calls.append((content, params, sample_index))
        return Reply(self.script(content, params, sample_index))


def make(
    tmp_path: Path,
    script: Script,
    task: dict[str, Any] | None = None,
    endpoint: str = "http://127.0.0.1:9/v1",
    **method: object,
) -> tuple[SelfGuideMethod, FakeEndpoint]:
    (tmp_path / "task.json").write_text(json.dumps(task or GEN_TASK), encoding="utf-8")
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in method.items())
    (tmp_path / "sg.toml").write_text(
        f"""
[run]
method = "selfguide"
input = "task.json"
seed = 7

[endpoints.s]
base_url = "{endpoint}"
model = "m-student"

[roles]
strong = "s"

[method.selfguide]
{table}""",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "sg.toml")
    fake = FakeEndpoint(script)
    stages: dict[str, Counts] = {}
    ctx = MethodContext(
        config=config,
        callers={"strong": fake, "target": fake, "judge": fake},
        input_path=config.resolve("task.json"),
        stage=lambda name: stages.setdefault(name, Counts()),
    )
    # The engine's path: options validated and checked, the method under its Adapter.
    adapter = create_method(config, ctx)
    assert isinstance(adapter, Adapter)
    sg = adapter.method
    assert isinstance(sg, SelfGuideMethod) and isinstance(sg.cfg, SelfGuideConfig)
    sg.bind(adapter.ctx)
    ADAPTERS[sg] = adapter
    return sg, fake


ADAPTERS: dict[SelfGuideMethod, Adapter] = {}
"""The Adapter each method of :func:`make` runs under (what the scheduler drives)."""


async def run_all(method: SelfGuideMethod) -> list[RowOut]:
    adapter = ADAPTERS[method]
    await adapter.prepare()
    rows: list[RowOut] = []
    for item in adapter.work():
        assert isinstance(item, Item)
        rows.extend(await adapter.process(item))
    return rows


def is_generation(content: str) -> bool:
    return "InputGenerator" in content


# ------------------------------------------------------------------ task files
def test_load_task_toml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        'instruction = "Do it"\n[[examples]]\ninput = "i"\noutput = "o"\n', encoding="utf-8"
    )
    task = load_task(tmp_path / "a.toml")
    assert (task.name, task.type, len(task.examples)) == ("a", "generation", 1)
    (tmp_path / "b.json").write_text(json.dumps(CLS_TASK), encoding="utf-8")
    assert load_task(tmp_path / "b.json").labels == ("positive", "negative")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"examples": [{"input": "i", "output": "o"}]}, "instruction"),
        ({"instruction": "x", "examples": [{"input": "i", "output": 3}]}, "examples[0].output"),
        ({"instruction": "x", "examples": []}, "examples"),
        ({"instruction": "x", "examples": [{"input": " ", "output": "o"}]}, "examples[0].input"),
        ({**CLS_TASK, "labels": ["positive"]}, "labels"),
        ({**CLS_TASK, "examples": [{"input": "i", "output": "meh"}]}, "examples[0].output"),
        ({**GEN_TASK, "labels": ["a", "b"]}, "labels"),
        ({**GEN_TASK, "type": "ranking"}, "type"),
    ],
)
def test_load_task_errors_name_file_and_field(
    tmp_path: Path, doc: dict[str, Any], needle: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_task(path)
    assert str(path) in str(info.value)
    assert f"field {needle}" in str(info.value)


def test_load_task_unreadable_and_invalid(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_task(tmp_path / "missing.toml")
    (tmp_path / "x.toml").write_text("instruction = ", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_task(tmp_path / "x.toml")


def test_shipped_task_files_load() -> None:
    data = Path(__file__).resolve().parents[3] / "configs" / "data"
    assert load_task(data / "selfguide_generation.toml").type == "generation"
    assert load_task(data / "selfguide_classification.json").type == "classification"


# ------------------------------------------------------------------ helpers
def test_sample_pool_sizes_and_determinism() -> None:
    assert sample_pool([], random.Random(0)) == []
    pool = [f"p{i}" for i in range(30)]
    sizes = {len(sample_pool(pool, random.Random(s))) for s in range(300)}
    assert min(sizes) == 1 and max(sizes) == 10
    assert sizes <= set(range(1, 11))
    assert {len(sample_pool(pool[:3], random.Random(s))) for s in range(100)} == {1, 2, 3}
    assert sample_pool(pool, random.Random(5)) == sample_pool(pool, random.Random(5))


def test_clean_reply_and_estimate() -> None:
    assert clean_reply('  [input]= "hello"  ') == "hello"
    assert clean_reply("plain") == "plain"
    assert estimate_tokens("a" * 9) == 3


def test_bad_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make(tmp_path, lambda c, p, i: ["x"], templates={"generate": "{{nope}}"})


# ------------------------------------------------------------------ prompts
def test_round_one_has_no_low_quality_and_later_rounds_sample_the_pool(tmp_path: Path) -> None:
    method, _ = make(tmp_path, lambda c, p, i: ["x"])
    first, label = method.generation_messages(1, 0, [])
    text = first[0]["content"]
    assert label is None
    assert "N/A" in text and "gold one" in text and "gold two" in text
    pool = ["pooled alpha", "pooled beta"]
    later = method.generation_messages(2, 0, pool)[0][0]["content"]
    assert "N/A" not in later and any(p in later for p in pool)
    # deterministic per (seed, round, prompt)
    assert method.generation_messages(2, 0, pool)[0] == method.generation_messages(2, 0, pool)[0]


def test_over_budget_prompt_is_rebuilt_then_falls_back(tmp_path: Path) -> None:
    method, _ = make(tmp_path, lambda c, p, i: ["x"], context_tokens=250)
    base = estimate_tokens(method.generation_messages(1, 0, [])[0][0]["content"])
    assert base <= 250
    short, long_ = "s", "L" * 2000
    # only samples without the long input fit: a rebuild finds one (or the N/A fallback)
    for j in range(5):
        text = method.generation_messages(2, j, [short, long_])[0][0]["content"]
        assert estimate_tokens(text) <= 250
        assert long_ not in text
    method2, _ = make(tmp_path, lambda c, p, i: ["x"], context_tokens=250, prompt_rebuilds=0)
    method2.generation_messages(2, 0, [long_])
    assert method2.prompts_over_budget == 1 and method2.prompts_without_low_quality == 1


# ------------------------------------------------------------------ rounds + filters
def gen_script(outputs: dict[int, str], annotate: Callable[[str], list[str]]) -> Script:
    def script(content: str, params: dict[str, Any], index: int) -> list[str]:
        if is_generation(content):
            return [outputs.get(index, f"fresh input number {index}")]
        return annotate(content)

    return script


def test_rounds_filters_and_report(tmp_path: Path) -> None:
    outputs = {
        0: "   ",  # empty
        1: "Of course! here is a new input",  # noise (the reference's greetings)
        2: "GOLD ONE",  # duplicate of a gold input (normalised)
        3: "repeat me",
        4: "repeat me",  # duplicate within the round
        5: "contains banned word",  # task-level extra noise phrase from config
        6: "[input]= repeat me",  # cleaned, then a duplicate of an earlier round
    }
    method, fake = make(
        tmp_path,
        gen_script(outputs, lambda c: ["out"] * 10),
        generation_rounds=2,
        per_round=4,
        noise_phrases=["banned"],
        output_length_filter=False,
    )
    rows = asyncio_run(run_all(method))
    report = method.report()
    r1, r2 = report["rounds"]
    assert r1["dropped"] == {"empty": 1, "length": 0, "noise": 1, "duplicate": 1}
    assert r1["kept"] == 1
    assert r2["dropped"] == {"empty": 0, "length": 0, "noise": 1, "duplicate": 2}
    assert r2["kept"] == 1
    for r in (r1, r2):
        assert r["generated"] == r["kept"] + sum(r["dropped"].values())
    rejected = [r for k, r in rows if k == "rejected"]
    assert len(rejected) == 6  # one row per dropped candidate
    assert all(r["stage"] == "input" and r["reason"] and r["filter"] for r in rejected)
    by_round = {(r["round"], r["filter"]) for r in rejected}
    assert (1, "empty") in by_round and (2, "duplicate") in by_round
    kept = [r for k, r in rows if k == "kept"]
    assert [r["input"] for r in kept] == ["repeat me", "fresh input number 7"]
    assert kept[0]["output"] == "out" and kept[0]["votes"] == {
        "top": 10,
        "survivors": 10,
        "samples": 10,
    }
    assert set(kept[0]) >= {"id", "input", "output", "votes", "round", "task", "models"}
    assert kept[0]["simulated"] is False
    # generation params: temperature 0.9 default for generation tasks, one choice
    gen_params = [p for c, p, _ in fake.calls if is_generation(c)]
    assert {p["temperature"] for p in gen_params} == {0.9}
    # round 2 prompts sample from the round-1 pool
    round2 = [c for c, _, i in fake.calls if is_generation(c) and i >= 4]
    assert all("repeat me" in c for c in round2)
    # ids are unique, and stable across reruns
    assert len({r["id"] for _, r in rows}) == len(rows)
    again, _ = make(
        tmp_path,
        gen_script(outputs, lambda c: ["out"] * 10),
        generation_rounds=2,
        per_round=4,
        noise_phrases=["banned"],
        output_length_filter=False,
    )
    assert asyncio_run(run_all(again)) == rows


def test_input_length_filter_wiring(tmp_path: Path) -> None:
    outputs = {0: "x", 1: "just fine", 2: "y" * 200}
    method, _ = make(
        tmp_path,
        gen_script(outputs, lambda c: ["out"] * 10),
        per_round=3,
        generation_rounds=1,
        input_length_filter=True,
    )
    rows = asyncio_run(run_all(method))
    reasons = sorted(r["reason"] for k, r in rows if k == "rejected" and r["stage"] == "input")
    assert len(reasons) == 2 and reasons[0].startswith("too long") and "too short" in reasons[1]
    assert method.report()["rounds"][0]["dropped"]["length"] == 2


def test_vote_min_frequency_and_output_filters(tmp_path: Path) -> None:
    def annotate(content: str) -> list[str]:
        if "input number 0" in content:
            return [f"different {i}" for i in range(10)]  # 1/10 < 0.3
        if "input number 1" in content:
            return ["Of course! out one"] * 10  # all noise
        return ["out b", "out a", "out b", "out a", "out long"] + ["Absolutely! x"] * 5

    method, _ = make(
        tmp_path,
        gen_script({}, annotate),
        generation_rounds=1,
        per_round=3,
        output_length_filter=False,
    )
    rows = asyncio_run(run_all(method))
    by_input = {r["input"]: (k, r) for k, r in rows}
    k0, r0 = by_input["fresh input number 0"]
    assert k0 == "rejected" and r0["filter"] == "min_frequency" and len(r0["samples"]) == 10
    k1, r1 = by_input["fresh input number 1"]
    assert k1 == "rejected" and r1["filter"] == "output_filters"
    k2, r2 = by_input["fresh input number 2"]
    assert k2 == "kept"
    assert r2["output"] == "out b"  # tie 2-2 -> the shortest, then the first seen (reference)
    assert r2["votes"] == {"top": 2, "survivors": 5, "samples": 10}
    assert r2["single_vote"] is False
    ann = method.report()["annotation"]
    assert (ann["voted"], ann["dropped_min_frequency"], ann["dropped_output_filters"]) == (1, 1, 1)
    assert ann["samples_dropped"]["noise"] == 15


def test_output_length_filter_on_by_default_for_generation(tmp_path: Path) -> None:
    method, _ = make(
        tmp_path,
        gen_script({}, lambda c: ["far far too long output"] * 10),
        generation_rounds=1,
        per_round=1,
    )
    rows = asyncio_run(run_all(method))
    assert rows[0][0] == "rejected" and rows[0][1]["filter"] == "output_filters"
    assert method.report()["annotation"]["samples_dropped"] == {"length": 10}


def test_annotation_n_in_one_request_or_parallel(tmp_path: Path) -> None:
    method, fake = make(
        tmp_path,
        gen_script({}, lambda c: ["out"] * 10),
        generation_rounds=1,
        per_round=1,
        output_length_filter=False,
    )
    asyncio_run(run_all(method))
    ann = [(p, i) for c, p, i in fake.calls if not is_generation(c)]
    assert len(ann) == 1 and ann[0][0]["n"] == 10 and ann[0][0]["temperature"] == 0.2

    method, fake = make(
        tmp_path,
        gen_script({}, lambda c: ["out"]),
        generation_rounds=1,
        per_round=1,
        annotate_n_in_one_request=False,
        annotate_n=4,
        output_length_filter=False,
    )
    rows = asyncio_run(run_all(method))
    ann = [(p, i) for c, p, i in fake.calls if not is_generation(c)]
    assert sorted(i for _, i in ann) == [0, 1, 2, 3]
    assert len({p["seed"] for p, _ in ann}) == 4 and all("n" not in p for p, _ in ann)
    assert rows[0][1]["votes"] == {"top": 4, "survivors": 4, "samples": 4}
    assert all("best_of" not in p for p, _ in ann)  # best_of needs n in one request


# ------------------------------------------------------------------ classification
def test_classification_label_conditioning_and_mapping(tmp_path: Path) -> None:
    def annotate(content: str) -> list[str]:
        if "number 0" in content:
            # the vote runs over whole outputs first, then the winner is mapped to a label
            return (
                ["positive"] * 4 + ["it is negative"] * 2 + ["Positive!", "neutral", "meh", "meh"]
            )
        return ["neutral"] * 10  # no label at all

    def script(content: str, params: dict[str, Any], index: int) -> list[str]:
        if is_generation(content):
            return [f"review number {index}"]
        return annotate(content)

    method, fake = make(
        tmp_path, script, task=CLS_TASK, generation_rounds=1, per_round=2, input_length_filter=False
    )
    rows = asyncio_run(run_all(method))
    gen = [(c, p) for c, p, _ in fake.calls if is_generation(c)]
    assert all("should be positive" in c or "should be negative" in c for c, _ in gen)
    assert {p["temperature"] for _, p in gen} == {0.7}
    settings = method.settings()
    assert settings["output_length_filter"] is False
    default, _ = make(tmp_path, script, task=CLS_TASK)
    assert default.settings()["input_length_filter"] is True
    by_input = {r["input"]: (k, r) for k, r in rows}
    k0, r0 = by_input["review number 0"]
    assert k0 == "kept"
    assert (r0["label"], r0["output"], r0["votes"]) == (
        "positive",
        "positive",
        {"top": 4, "survivors": 10, "samples": 10},
    )
    assert r0["requested_label"] in ("positive", "negative")
    k1, r1 = by_input["review number 1"]
    assert k1 == "rejected" and r1["filter"] == "label"
    ann = method.report()["annotation"]
    assert ann["dropped_label"] == 1 and "label" not in ann["samples_dropped"]


def test_labels_are_sampled_uniformly(tmp_path: Path) -> None:
    method, _ = make(tmp_path, lambda c, p, i: ["x"], task=CLS_TASK)
    labels = [method.generation_messages(1, j, [])[1] for j in range(400)]
    assert 150 < labels.count("positive") < 250


def asyncio_run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


# ---------------------------------------------- issue 18: reference sampling, votes, rows
def test_top_k_and_best_of_are_sent_as_the_reference_does(tmp_path: Path) -> None:
    method, fake = make(
        tmp_path,
        gen_script({}, lambda c: ["out"] * 10),
        generation_rounds=1,
        per_round=1,
        output_length_filter=False,
    )
    asyncio_run(run_all(method))
    gen = [p for c, p, _ in fake.calls if is_generation(c)]
    ann = [p for c, p, _ in fake.calls if not is_generation(c)]
    assert gen and all(p["top_k"] == 40 for p in gen)
    assert ann == [{"temperature": 0.2, "max_tokens": 500, "top_k": 10, "n": 10, "best_of": 20}]
    assert method.report()["sampling"] == {
        "generation_top_k": 40, "annotate_top_k": 10, "annotate_best_of": 20
    }  # fmt: skip


def test_openai_gets_no_top_k_or_best_of_and_a_note_says_why(tmp_path: Path) -> None:
    method, fake = make(
        tmp_path,
        gen_script({}, lambda c: ["out"] * 10),
        endpoint="https://api.openai.com/v1",
        generation_rounds=1,
        per_round=1,
        output_length_filter=False,
    )
    asyncio_run(run_all(method))
    # None is not sent (the caller drops it, as engine.llm.Caller does)
    assert all(p.get("top_k") is None and p.get("best_of") is None for _, p, _ in fake.calls)
    assert any("OpenAI's API" in w for w in method.report()["warnings"])
    assert refuses_extensions("https://myres.openai.azure.com/openai")
    assert not refuses_extensions("http://127.0.0.1:8000/v1")
    forced, fake = make(
        tmp_path,
        gen_script({}, lambda c: ["out"] * 10),
        endpoint="https://api.openai.com/v1",
        sampling_extensions=True,
        generation_rounds=1,
        per_round=1,
    )
    asyncio_run(run_all(forced))
    assert all(p.get("top_k") in (40, 10) for _, p, _ in fake.calls)


def test_best_of_below_n_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make(tmp_path, lambda c, p, i: ["x"], annotate_best_of=5)
    assert info.value.field == "method.selfguide.annotate_best_of"


def test_single_sample_votes_are_flagged_or_rejected(tmp_path: Path) -> None:
    # nine samples are noise, one survives: the reference keeps it, 1/1 >= min_frequency
    def annotate(content: str) -> list[str]:
        return ["Of course! x"] * 9 + ["lonely"]

    method, _ = make(
        tmp_path,
        gen_script({}, annotate),
        generation_rounds=1,
        per_round=1,
        output_length_filter=False,
    )
    ((kind, row),) = asyncio_run(run_all(method))
    assert kind == "kept" and row["output"] == "lonely"
    assert row["single_vote"] is True
    assert row["votes"] == {"top": 1, "survivors": 1, "samples": 10}
    assert method.report()["annotation"]["single_vote"] == 1
    strict, _ = make(
        tmp_path,
        gen_script({}, annotate),
        generation_rounds=1,
        per_round=1,
        output_length_filter=False,
        min_votes=2,
    )
    ((kind, row),) = asyncio_run(run_all(strict))
    assert kind == "rejected" and row["filter"] == "min_votes"
    assert row["reason"] == "top output has 1 vote(s) of 1 surviving (< min_votes 2)"


def test_every_row_carries_the_instruction_and_label_changes_are_marked(tmp_path: Path) -> None:
    def script(content: str, params: dict[str, Any], index: int) -> list[str]:
        if is_generation(content):
            return [f"review number {index} " + ("X" * index)]
        return ["negative"] * 10

    method, _ = make(
        tmp_path, script, task=CLS_TASK, generation_rounds=1, per_round=6, input_length_filter=False
    )
    rows = asyncio_run(run_all(method))
    names = [c.name for c in COLUMNS]
    assert rows and all(list(r) == names for _, r in rows)
    assert all(r["instruction"] == method.task.instruction for _, r in rows)
    kept = [r for k, r in rows if k == "kept"]
    assert kept and all(r["label"] == "negative" for r in kept)
    for r in kept:
        assert r["label_changed"] is (r["requested_label"] != "negative")
    changed = sum(r["label_changed"] for r in kept)
    assert 0 < changed < len(kept)
    assert method.report()["annotation"]["label_changed"] == changed
