"""CodecLM: parsers, pure routing/augmentation functions, prompt goldens and a scripted end-to-end run."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.config import Config, load_config
from engine.errors import ConfigError, ParseError, ServerError
from engine.methods import method_config
from engine.methods.base import MethodContext
from engine.methods.codeclm import (
    COLUMNS,
    CodecLMConfig,
    CodecLMTemplates,
    Metadata,
    augment_metadata,
    parse_encoding,
    parse_rubrics,
    route,
    swap_average,
)
from engine.methods.codeclm import prompts as P
from engine.records import Item, RowOut
from engine.stages import render, template_vars
from tests.fakes import Counts, Observers, Reply
from tests.unit.methods.codeclm_harness import CodecLMMethod

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


# ------------------------------------------------------------------ parse_encoding
@pytest.mark.parametrize(
    ("text", "use_case", "skills"),
    [
        (
            "Use case: Code debugging\nSkills: Python programming, Error diagnosis",
            "Code debugging",
            ["Python programming", "Error diagnosis"],
        ),
        (
            "Task: Travel planning.\nSkills: Outdoor preparation; List organization",
            "Travel planning",
            ["Outdoor preparation", "List organization"],
        ),
        (
            "**Use case:** Poetry\n**Skills:** 1. Creative writing 2. Rhyme construction",
            "Poetry",
            ["Creative writing", "Rhyme construction"],
        ),
        (
            "Here you go.\nuse case: Email writing\nskills: Polite tone",
            "Email writing",
            ["Polite tone"],
        ),
        ("Use case: X\nSkills: a, b, c, d, e", "X", ["a", "b", "c"]),  # capped at 3
    ],
)
def test_parse_encoding(text: str, use_case: str, skills: list[str]) -> None:
    enc = parse_encoding(text)
    assert enc.use_case == use_case
    assert enc.skills == skills


def test_parse_encoding_caps_at_max_skills() -> None:
    assert parse_encoding("Use case: X\nSkills: a, b, c", max_skills=2).skills == ["a", "b"]


@pytest.mark.parametrize(
    "text",
    ["Use case: X", "Skills: a, b", "Use case: X\nSkills: , ; .", "I cannot help with that.", ""],
)
def test_parse_encoding_malformed(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_encoding(text)
    assert info.value.stage == "encode"


# ------------------------------------------------------------------ parse_rubrics
def test_parse_rubrics_with_actions_header() -> None:
    text = "Rubrics:\n1. r1\n2. r2\n3. r3\n4. r4\n\n**Actions:**\n1. a1\n2. a2\n3. a3\n4. a4\n5. a5"
    out = parse_rubrics(text, 4)
    assert out.rubrics == ["r1", "r2", "r3", "r4"]
    assert out.actions == ["a1", "a2", "a3", "a4"]  # capped at k


def test_parse_rubrics_with_bulleted_lists() -> None:
    out = parse_rubrics("Rubrics:\n- r1\n- r2\nActions:\n- a1\n- a2", 4)
    assert out.rubrics == ["r1", "r2"]
    assert out.actions == ["a1", "a2"]


def test_parse_rubrics_header_without_rubrics() -> None:
    out = parse_rubrics("Actions:\n1. a1\n2. a2", 4)
    assert out.rubrics == []
    assert out.actions == ["a1", "a2"]


@pytest.mark.parametrize(
    ("text", "k", "rubrics", "actions"),
    [
        (
            "1. r1\n2. r2\n3. r3\n4. r4\n5. a1\n6. a2\n7. a3\n8. a4",
            4,
            ["r1", "r2", "r3", "r4"],
            ["a1", "a2", "a3", "a4"],
        ),
        ("1. r1\n2. r2\n3. a1\n4. a2", 2, ["r1", "r2"], ["a1", "a2"]),
        ("1. r1\n2. a1\n3. a2", 4, ["r1"], ["a1", "a2"]),  # short reply: split at half
        ("1. r1\n2. a1", 4, ["r1"], ["a1"]),
    ],
)
def test_parse_rubrics_without_header_splits_by_position(
    text: str, k: int, rubrics: list[str], actions: list[str]
) -> None:
    out = parse_rubrics(text, k)
    assert out.rubrics == rubrics
    assert out.actions == actions


@pytest.mark.parametrize(
    "text",
    [
        "no list at all",
        "1. only one item",
        "Rubrics:\n1. r1\nActions:\n",
        "Rubrics:\n1. r1\nActions:\nnone given",
    ],
)
def test_parse_rubrics_malformed(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_rubrics(text, 4)
    assert info.value.stage == "rubrics"


# ------------------------------------------------------------------ swap + route
def test_swap_average() -> None:
    # first: strong is Assistant 1 -> (strong, target); swapped: strong is Assistant 2 -> (target, strong)
    assert swap_average((9, 2), (3, 8)) == (8.5, 2.5)
    assert swap_average((5, 5), (5, 5)) == (5.0, 5.0)


def test_swap_average_cancels_position_bias() -> None:
    true_strong, true_target, bias = 7.0, 4.0, 2.0  # the judge adds `bias` to Assistant 1
    first = (true_strong + bias, true_target)
    swapped = (true_target + bias, true_strong)
    strong, target = swap_average(first, swapped)
    assert strong - target == true_strong - true_target


@pytest.mark.parametrize(
    ("gap", "iteration", "expected"),
    [
        (3.0, 1, "improve"),  # |gap| == theta is not kept
        (-3.0, 1, "improve"),
        (3.5, 1, "keep"),
        (3.01, 4, "keep"),
        (-3.5, 2, "keep"),  # negative gap beyond theta keeps too
        (0.0, 3, "improve"),
        (2.9, 4, "reject"),  # exactly at max_iterations
        (3.0, 4, "reject"),
        (1.0, 5, "reject"),
    ],
)
def test_route(gap: float, iteration: int, expected: str) -> None:
    assert route(gap, iteration, theta=3.0, max_iterations=4) == expected


def test_route_theta_zero_keeps_any_gap() -> None:
    assert route(0.5, 1, theta=0, max_iterations=1) == "keep"
    assert route(0.0, 1, theta=0, max_iterations=1) == "reject"


# ------------------------------------------------------------------ augment_metadata
ENCODINGS = [
    Metadata("Code debugging", ("Python programming", "Error diagnosis"), "seed-1"),
    Metadata("Email writing", ("Polite tone",), "seed-2"),
    Metadata(
        "code debugging", ("error diagnosis", "python programming"), "seed-3"
    ),  # same combo as seed-1
    Metadata(
        "Travel planning", ("List organization", "Weather awareness", "Polite tone"), "seed-4"
    ),
]


def _sig(md: Metadata) -> tuple[str, frozenset[str]]:
    return md.use_case.lower(), frozenset(s.lower() for s in md.skills)


def test_augment_is_deterministic_in_seed() -> None:
    a = augment_metadata(ENCODINGS, 20, max_skills=3, seed=0)
    b = augment_metadata(ENCODINGS, 20, max_skills=3, seed=0)
    c = augment_metadata(ENCODINGS, 20, max_skills=3, seed=1)
    assert a == b
    assert a != c
    assert a[:3] == c[:3]  # the seeds' own metadata do not depend on the seed


def test_augment_reaches_count_with_seeds_first() -> None:
    out = augment_metadata(ENCODINGS, 20, max_skills=3, seed=7)
    assert len(out) == 20
    assert out[:3] == [ENCODINGS[0], ENCODINGS[1], ENCODINGS[3]]  # seed-3 duplicates seed-1


def test_augment_samples_known_use_cases_and_skills() -> None:
    use_cases = {"Code debugging", "Email writing", "Travel planning"}
    skills = {s for md in ENCODINGS for s in md.skills if s[0].isupper()}
    out = augment_metadata(ENCODINGS, 30, max_skills=3, seed=3)
    lengths = Counter(len(md.skills) for md in out[3:])
    for md in out:
        assert md.use_case in use_cases
        assert 1 <= len(md.skills) <= 3
        assert len({s.lower() for s in md.skills}) == len(md.skills)  # without replacement
        assert set(md.skills) <= skills
        assert md.seed_id in {"seed-1", "seed-2", "seed-4"}
    assert set(lengths) == {1, 2, 3}


def test_augment_respects_max_skills() -> None:
    out = augment_metadata(ENCODINGS, 15, max_skills=1, seed=0)
    assert all(len(md.skills) == 1 for md in out[3:])


def test_augment_no_duplicate_combos_when_avoidable() -> None:
    # 3 use cases x (2^5 - 1 = 31 non-empty skill sets, <= 3 skills: 25) = 75 combos possible.
    out = augment_metadata(ENCODINGS, 60, max_skills=3, seed=11)
    sigs = [_sig(md) for md in out]
    assert len(set(sigs)) == len(sigs)


def test_augment_allows_duplicates_when_unavoidable() -> None:
    tiny = [Metadata("Only", ("one",), "s")]
    out = augment_metadata(tiny, 4, max_skills=3, seed=0)
    assert out == [tiny[0]] * 4


def test_augment_count_below_seeds() -> None:
    # a uniform sample of the seeds, in seed order (every seed can contribute)
    out = augment_metadata(ENCODINGS, 2, max_skills=3, seed=0)
    assert len(out) == 2 and all(md in ENCODINGS for md in out)
    assert [ENCODINGS.index(md) for md in out] == sorted(ENCODINGS.index(md) for md in out)


# ------------------------------------------------------------------ golden prompts
INSTRUCTION = "Explain the difference between a process and a thread to a junior developer."
GOLDEN_VALUES: dict[str, dict[str, object]] = {
    "encode": {"instruction": INSTRUCTION},
    "decode": {
        "n": 3,
        "use_case": "Code explanation",
        "skills": "Concurrency concepts, Technical teaching",
    },
    "rubrics": {
        "k": 4,
        "use_case": "Code explanation",
        "skills": "Concurrency concepts, Technical teaching",
    },
    "improve": {
        "action": "Require a concrete code example in the answer.",
        "instruction": INSTRUCTION,
    },
    "respond": {"instruction": INSTRUCTION},
    "judge": {
        "instruction": INSTRUCTION,
        "answer_1": "ANSWER ONE\nsecond line",
        "answer_2": "ANSWER TWO",
    },
    "check_metadata": {
        "use_case": "Code explanation",
        "skills": "Concurrency concepts, Technical teaching",
    },
}
STAGES = list(GOLDEN_VALUES)


def test_golden_values_cover_every_template() -> None:
    assert set(STAGES) == set(P.TEMPLATE_VARS) == set(CodecLMTemplates.__struct_fields__)
    for stage, values in GOLDEN_VALUES.items():
        template = getattr(P, stage.upper())
        assert template_vars(template) == P.TEMPLATE_VARS[stage] == set(values)


@pytest.mark.parametrize("stage", STAGES)
def test_prompt_golden(stage: str) -> None:
    rendered = render(getattr(P, stage.upper()), GOLDEN_VALUES[stage]) + "\n"
    path = GOLDEN / f"codeclm_{stage}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.is_file(), f"missing {path.name}; write it with UPDATE_GOLDEN=1"
    assert rendered == path.read_text(encoding="utf-8"), (
        f"the {stage} prompt changed; if on purpose, rewrite the golden with UPDATE_GOLDEN=1"
    )


def test_golden_structure_matches_spec() -> None:
    text = {s: (GOLDEN / f"codeclm_{s}.txt").read_text(encoding="utf-8") for s in STAGES}
    assert "instruction analyzer" in text["encode"] and text["encode"].count("Example ") == 3
    assert (
        text["encode"].rstrip().endswith("Use case: <use case>\nSkills: <comma-separated skills>")
    )
    assert "instruction writer" in text["decode"] and "numbered" in text["decode"]
    assert "Rubrics:" in text["rubrics"] and "Actions:" in text["rubrics"]
    assert "Improving action:" in text["improve"] and text["improve"].rstrip().endswith(
        "Improved instruction:"
    )
    assert text["respond"] == INSTRUCTION + "\n"
    assert text["judge"].index("ANSWER ONE") < text["judge"].index("ANSWER TWO")
    assert "[The Start of Assistant 1's Answer]" in text["judge"]


async def test_method_renders_the_golden_prompts(tmp_path: Path) -> None:
    method, _, _ = make_method(tmp_path, Script())
    for stage in STAGES:
        gen = getattr(method, stage)
        (msg,) = gen.messages(GOLDEN_VALUES[stage])
        assert msg["role"] == "user"
        assert msg["content"] + "\n" == (GOLDEN / f"codeclm_{stage}.txt").read_text(
            encoding="utf-8"
        )


def test_unknown_template_variable_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_method(
            tmp_path,
            Script(),
            extra='[method.codeclm.templates]\njudge = "{{instruction}} {{answer}}"\n',
        )
    assert info.value.field == "method.codeclm.templates.judge"
    assert "answer" in info.value.reason


# ------------------------------------------------------------------ scripted end to end
SEEDS = [
    {"id": "seed-01", "instruction": "Why does my Python loop print the same value three times?"},
    {"id": "seed-02", "instruction": "Write a polite email asking my landlord to fix a tap."},
]
ENCODE_REPLIES = {
    SEEDS[0][
        "instruction"
    ]: "Use case: Code debugging\nSkills: Python programming, Error diagnosis",
    SEEDS[1][
        "instruction"
    ]: "Task: Email writing\nSkills: Polite tone, Concise writing, Request framing",
}
ACTIONS = ["Add a constraint on length.", "Require a worked example.", "Ask for two alternatives."]
IMPROVED = "Harder: "


def iteration_of(instruction: str) -> int:
    return instruction.count(IMPROVED) + 1


# judge policy: (instruction, iteration) -> (true strong score, true target score)
Policy = Callable[[str, int], tuple[int, int]]


@dataclass
class Script:
    """What the fake endpoints answer, and a log of what they were asked."""

    policy: Policy = lambda instruction, iteration: (8, 4)
    bias: int = 1  # the judge favours Assistant 1 by this much (swap averaging cancels it)
    structured: bool = False
    fail: Callable[[str, str, str], Exception | None] = lambda role, stage, content: None
    encode_replies: dict[str, str] = field(default_factory=lambda: dict(ENCODE_REPLIES))
    calls: list[tuple[str, str, int]] = field(default_factory=list)  # (role, stage, sample_index)

    def stage_of(self, content: str) -> str:
        if "make a reasonable combination" in content:
            return "check_metadata"
        if "instruction analyzer" in content:
            return "encode"
        if "instruction writer" in content:
            return "decode"
        if "instruction judge with domain expertise" in content:
            return "rubrics"
        if "instruction improver" in content:
            return "improve"
        if "[The Start of Assistant 1's Answer]" in content:
            return "judge"
        return "respond"

    def answer(self, role: str, content: str) -> str:
        stage = self.stage_of(content)
        error = self.fail(role, stage, content)
        if error is not None:
            raise error
        if stage == "encode":
            instruction = content.rsplit("Instruction: ", 1)[1].split("\n", 1)[0]
            enc = self.encode_replies[instruction]
            if not self.structured:
                return enc
            use_case, skills = (line.split(": ", 1)[1] for line in enc.splitlines())
            return json.dumps({"use_case": use_case, "skills": skills.split(", ")})
        if stage == "check_metadata":
            use_case = re.search(r"^Use case: (.*)$", content, re.M).group(1)  # type: ignore[union-attr]
            skills = re.search(r"^Skills: (.*)$", content, re.M).group(1)  # type: ignore[union-attr]
            odd = use_case == "Code debugging" and "Polite tone" in skills
            return "NO, an odd mix." if odd else "YES, plausible."
        if stage == "decode":
            n = int(re.search(r"Write (\d+) instructions", content).group(1))  # type: ignore[union-attr]
            use_case = re.search(r"^Use case: (.*)$", content, re.M).group(1)  # type: ignore[union-attr]
            items = [f"Task {i + 1} about {use_case}" for i in range(n)]
            if self.structured:
                return json.dumps({"instructions": items})
            return "Here are the instructions:\n" + "\n".join(
                f"{i + 1}. {t}" for i, t in enumerate(items)
            )
        if stage == "rubrics":
            if self.structured:
                return json.dumps({"rubrics": ["r1", "r2", "r3"], "actions": ACTIONS})
            return "Rubrics:\n1. r1\n2. r2\n3. r3\nActions:\n" + "\n".join(
                f"{i + 1}. {a}" for i, a in enumerate(ACTIONS)
            )
        if stage == "improve":
            instruction = content.split("Input instruction: ", 1)[1].split(
                "\nImproved instruction:", 1
            )[0]
            improved = IMPROVED + instruction
            if self.structured:
                return json.dumps({"improved_instruction": improved})
            return f"Improved instruction: {improved}"
        if stage == "judge":
            instruction = content.split("[Question]\n", 1)[1].split("\n\n[The Start", 1)[0]
            first = content.split("[The Start of Assistant 1's Answer]\n", 1)[1]
            strong, target = self.policy(instruction, iteration_of(instruction))
            a1, a2 = (strong, target) if first.startswith("STRONG") else (target, strong)
            a1 = min(10, a1 + self.bias)
            if self.structured:
                return json.dumps({"assistant_1": a1, "assistant_2": a2})
            return f"{a1} {a2}\nAssistant 1 is more detailed."
        return f"{role.upper()} answer to: {content}"


class FakeEndpoint:
    """A ChatCaller playing one role from a Script (a real class, not a mock)."""

    def __init__(self, role: str, model: str, script: Script) -> None:
        self.name = role
        self.model = model
        self.role = role
        self.script = script
        self.response_formats: list[Any] = []

    @property
    def structured_output(self) -> bool:
        return self.script.structured

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        priority: int = 0,
        sample_index: int = 0,
        stage: str | None = None,
        **params: Any,
    ) -> Reply:
        content = messages[-1]["content"]
        self.script.calls.append((self.role, self.script.stage_of(content), sample_index))
        self.response_formats.append(params.get("response_format"))
        return Reply(self.script.answer(self.role, content))


def write_config(tmp_path: Path, extra: str = "", **method: object) -> Config:
    (tmp_path / "seeds.jsonl").write_text(
        "".join(json.dumps(s) + "\n" for s in SEEDS), encoding="utf-8"
    )
    settings = {"metadata_count": 4, "instructions_per_metadata": 3, **method}
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    text = f"""
[run]
method = "codeclm"
input = "seeds.jsonl"
seed = 5

[endpoints.strong]
base_url = "http://127.0.0.1:9/v1"
model = "m-strong"

[endpoints.target]
base_url = "http://127.0.0.1:9/v1"
model = "m-target"

[roles]
strong = "strong"
target = "target"
judge = "strong"

[method.codeclm]
{table}
{extra}"""
    path = tmp_path / "codeclm.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def make_method(
    tmp_path: Path, script: Script, extra: str = "", **method: object
) -> tuple[CodecLMMethod, Observers, dict[str, FakeEndpoint]]:
    config = write_config(tmp_path, extra, **method)
    cfg = method_config(config)
    assert isinstance(cfg, CodecLMConfig)
    callers = {
        "strong": FakeEndpoint("strong", "m-strong", script),
        "target": FakeEndpoint("target", "m-target", script),
        "judge": FakeEndpoint("judge", "m-strong", script),
    }
    observers = Observers()
    ctx = MethodContext(
        config=config,
        callers=dict(callers),
        input_path=config.resolve(config.run.input or ""),
        stage=observers,
    )
    return CodecLMMethod(cfg, ctx), observers, callers


async def run_all(method: CodecLMMethod) -> list[RowOut]:
    await method.prepare()
    rows: list[RowOut] = []
    for item in method.work():
        assert isinstance(item, Item)
        rows.extend(await method.process(item))
    return rows


KEPT_KEYS = [c.name for c in COLUMNS]


async def test_prepare_builds_metadata(tmp_path: Path) -> None:
    script = Script()
    method, observers, _ = make_method(tmp_path, script, metadata_count=6)
    await method.prepare()
    metadata = list(method.metadata())
    assert len(metadata) == 6
    assert metadata[0] == Metadata(
        "Code debugging", ("Python programming", "Error diagnosis"), "seed-01"
    )
    assert metadata[1] == Metadata(
        "Email writing", ("Polite tone", "Concise writing", "Request framing"), "seed-02"
    )
    items = list(method.work())
    assert [i.key for i in items] == [f"meta-{i}" for i in range(6)]
    assert [c[1] for c in script.calls] == ["encode", "encode"]
    assert observers.by_stage["encode"] == Counts(calls=2, ok=2)
    assert method.total == 6


async def test_process_rows_add_up_and_keep_at_iteration_1(tmp_path: Path) -> None:
    script = Script()  # strong 8, target 4, judge biased +1 to Assistant 1
    method, observers, _ = make_method(tmp_path, script)
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    rows = await method.process(item)
    assert len(rows) == 3
    assert Counter(kind for kind, _ in rows) == {"kept": 3}
    for j, (_, row) in enumerate(rows):
        assert list(row) == KEPT_KEYS  # one schema, in one order
        assert row["instruction"] == f"Task {j + 1} about Code debugging"
        assert row["basic_instruction"] == row["instruction"] and row["origin"] == "seed"
        # the kept row carries its whole history: both answers and both judge orders
        (h,) = row["history"]
        assert h["action"] == "" and h["instruction"] == row["instruction"]
        assert h["strong_response"] == row["response"]
        assert h["target_response"] == f"TARGET answer to: {row['instruction']}"
        assert h["judge_strong_first"] == [9.0, 4.0] and h["judge_target_first"] == [5.0, 8.0]
        assert h["scores"] == row["scores"]
        assert row["reason"] is None and row["error"] is None
        assert row["iteration"] == 1
        assert row["response_source"] == "strong"
        assert row["response"] == f"STRONG answer to: {row['instruction']}"
        assert row["scores"] == {"strong": 8.5, "target": 4.5, "gap": 4.0}  # (9+8)/2, (4+5)/2
        assert row["metadata"] == {
            "use_case": "Code debugging",
            "skills": ["Python programming", "Error diagnosis"],
        }
        assert row["seed_id"] == "seed-01"
        assert row["models"] == {"strong": "m-strong", "target": "m-target", "judge": "m-strong"}
        assert row["simulated"] is False
        assert re.fullmatch(r"[0-9a-f]{16}", row["id"])
    assert len({row["id"] for _, row in rows}) == 3
    stages = Counter(stage for _, stage, _ in script.calls)
    assert stages == {"encode": 2, "rubrics": 1, "decode": 1, "respond": 6, "judge": 6}
    assert "improve" not in observers.by_stage or observers.by_stage["improve"].calls == 0
    report = method.report()
    assert (
        report["kept"] == 3
        and report["kept_by_iteration"] == {"1": 3}
        and report["judge_calls"] == 6
    )


async def test_judge_sees_strong_first_then_swapped(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def fail(role: str, stage: str, content: str) -> None:
        if stage == "judge":
            a1 = content.split("[The Start of Assistant 1's Answer]\n", 1)[1][:6]
            a2 = content.split("[The Start of Assistant 2's Answer]\n", 1)[1][:6]
            seen.append((a1, a2))

    method, _, _ = make_method(tmp_path, Script(fail=fail), instructions_per_metadata=1)
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    await method.process(item)
    assert sorted(seen) == [("STRONG", "TARGET"), ("TARGET", "STRONG")]


async def test_never_separating_judge_rejects_after_max_iterations(tmp_path: Path) -> None:
    script = Script(policy=lambda instruction, iteration: (6, 5))
    method, observers, _ = make_method(
        tmp_path, script, instructions_per_metadata=2, max_iterations=4
    )
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    rows = await method.process(item)
    assert [kind for kind, _ in rows] == ["rejected", "rejected"]
    for j, (_, row) in enumerate(rows):
        assert row["iteration"] == 4
        assert row["instruction"] == IMPROVED * 3 + f"Task {j + 1} about Code debugging"
        assert row["reason"] == "gap +1.00 within theta 3 after 4 iterations"
        assert [h["iteration"] for h in row["history"]] == [1, 2, 3, 4]
        assert row["history"][-1]["scores"]["gap"] == 1.0
        assert row["scores"] is None and row["filter"] == "contrastive"
    assert observers.by_stage["improve"].calls == 2 * (4 - 1)
    assert Counter(stage for _, stage, _ in script.calls)["improve"] == 2 * 3
    assert method.report()["rejected"] == 2


async def test_keep_at_a_later_iteration(tmp_path: Path) -> None:
    script = Script(
        policy=lambda instruction, iteration: (9, 4) if iteration >= 3 else (6, 6), bias=0
    )
    method, observers, _ = make_method(tmp_path, script, instructions_per_metadata=1)
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    ((kind, row),) = await method.process(item)
    assert kind == "kept"
    assert row["iteration"] == 3
    assert row["instruction"].startswith(IMPROVED * 2)
    assert row["scores"] == {"strong": 9.0, "target": 4.0, "gap": 5.0}
    assert observers.by_stage["improve"].calls == 2
    assert method.report()["kept_by_iteration"] == {"3": 1}


async def test_gap_equal_to_theta_is_not_kept(tmp_path: Path) -> None:
    script = Script(policy=lambda instruction, iteration: (7, 4), bias=0)
    method, _, _ = make_method(tmp_path, script, instructions_per_metadata=1, max_iterations=2)
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    ((kind, row),) = await method.process(item)
    assert kind == "rejected"
    assert row["history"][-1]["scores"]["gap"] == 3.0


async def test_negative_gap_keeps_the_target_answer(tmp_path: Path) -> None:
    script = Script(policy=lambda instruction, iteration: (2, 7))
    method, _, _ = make_method(tmp_path, script, instructions_per_metadata=1)
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    ((kind, row),) = await method.process(item)
    assert kind == "kept"
    assert row["response_source"] == "target"
    assert row["response"].startswith("TARGET answer to: ")
    assert row["iteration"] == 1
    assert row["scores"]["gap"] == -5.0


async def test_endpoint_error_in_respond_fails_the_instruction(tmp_path: Path) -> None:
    def fail(role: str, stage: str, content: str) -> Exception | None:
        if role == "target" and stage == "respond" and "Task 2 " in content:
            return ServerError("upstream down", endpoint="target", status=503)
        return None

    method, observers, _ = make_method(tmp_path, Script(fail=fail))
    await method.prepare()
    item = next(iter(method.work()))
    assert isinstance(item, Item)
    rows = await method.process(item)
    assert [kind for kind, _ in rows] == ["kept", "failed", "kept"]
    _, row = rows[1]
    assert row["stage"] == "respond"
    assert row["error_kind"] == "server_error"
    assert "HTTP 503" in row["error"]
    assert row["instruction"] == "Task 2 about Code debugging"
    assert row["seed_id"] == "seed-01"
    assert row["source"] == "metadata:0"
    assert len({r["id"] for _, r in rows}) == 3
    assert observers.by_stage["respond"].failed == 1
    assert method.report()["failed_by_stage"] == {"respond": 1}


async def test_parse_failure_in_encode_becomes_a_failed_seed_row(tmp_path: Path) -> None:
    script = Script(encode_replies={**ENCODE_REPLIES, SEEDS[1]["instruction"]: "I'd rather not."})
    method, observers, _ = make_method(tmp_path, script, metadata_count=3)
    rows = await run_all(method)
    failed = [row for kind, row in rows if kind == "failed"]
    assert len(failed) == 1
    assert failed[0]["stage"] == "encode" and failed[0]["seed_id"] == "seed-02"
    assert all(md.seed_id == "seed-01" for md in method.metadata())
    assert observers.by_stage["encode"].parse_errors == 3  # 1 try + 2 parse retries
    assert method.total == 4


async def test_structured_endpoints_get_json_schemas(tmp_path: Path) -> None:
    script = Script(structured=True)
    method, _, callers = make_method(
        tmp_path, script, metadata_count=2, instructions_per_metadata=2
    )
    rows = await run_all(method)
    assert Counter(kind for kind, _ in rows) == {"kept": 4}
    formats = callers["strong"].response_formats + callers["target"].response_formats
    names = {f["json_schema"]["name"] for f in formats if f is not None}
    assert names == {"encode", "rubrics", "decode"}
    judge_formats = callers["judge"].response_formats
    assert judge_formats and all(f["json_schema"]["name"] == "judge" for f in judge_formats)
    # free-form answers are never asked for as JSON
    assert callers["target"].response_formats == [None] * 4


async def test_ids_and_rows_are_stable_across_runs(tmp_path: Path) -> None:
    def policy(instruction: str, iteration: int) -> tuple[int, int]:
        return (9, 3) if "Task 1" in instruction or iteration == 2 else (5, 5)

    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        method, _, _ = make_method(tmp_path / name, Script(policy=policy))
        runs.append(await run_all(method))
    rows_a, rows_b = runs
    assert len(rows_a) == 4 * 3
    assert rows_a == rows_b
    ids = [row["id"] for _, row in rows_a]
    assert len(set(ids)) == len(ids)
    assert {kind for kind, _ in rows_a} == {"kept"}
    assert {row["iteration"] for _, row in rows_a} == {1, 2}


# ---------------------------------------------------- issue 18: budget, target, check
def _keep_task_1(instruction: str, iteration: int) -> tuple[int, int]:
    return (9, 3) if "Task 1 " in instruction else (5, 5)


async def test_target_pairs_runs_until_enough_pairs_are_kept(tmp_path: Path) -> None:
    script = Script(policy=_keep_task_1)
    method, _, _ = make_method(tmp_path, script, max_iterations=1, target_pairs=6)
    rows = await run_all(method)
    kept = [r for k, r in rows if k == "kept"]
    assert len(kept) == 6 and method.kept_total() == 6
    # 4 metadata items (1 kept pair each), then a second pass with new basic instructions
    assert method.total is None and method.passes == 2
    assert [r["source"] for r in kept][-2:] == ["metadata:0:pass:1", "metadata:1:pass:1"]
    decodes = sorted(i for _, stage, i in script.calls if stage == "decode")
    assert decodes == [0, 0, 0, 0, 1000, 1000]  # pass 1 asks decode for another sample
    assert len({r["id"] for r in kept}) == 6
    report = method.report()
    assert report["target_pairs"] == 6 and report["kept_total"] == 6
    assert report["basic_instructions_budget"] == 4 * 3


async def test_target_pairs_resumes_from_the_committed_count(tmp_path: Path) -> None:
    from engine.io.shards import ShardSink

    script = Script(policy=_keep_task_1)
    method, _, _ = make_method(tmp_path, script, max_iterations=1, target_pairs=6)
    await method.prepare()
    out = method.ctx.config.resolve(method.ctx.config.run.output)
    sink, _ = ShardSink.open(
        out,
        shard_records=100,
        config_hash="h",
        input_fingerprint="f",
        method="codeclm",
        engine_version="test",
        simulated=False,
    )
    done: set[int] = set()
    for item in method.work():  # the first run stops after 4 items (a crash, a budget)
        assert isinstance(item, Item)
        sink.write_item(item.index, await method.process(item))
        done.add(item.index)
        if len(done) == 4:
            break
    sink.commit()
    again, _, _ = make_method(
        tmp_path, Script(policy=_keep_task_1), max_iterations=1, target_pairs=6
    )
    await again.prepare()
    assert again.kept_before == 4
    rest = []
    for item in again.work():  # as the scheduler: done items are skipped
        assert isinstance(item, Item)
        if item.index not in done:
            rest.append(item.key)
            await again.process(item)
    assert rest == ["meta-0.p1", "meta-1.p1"]
    assert again.kept_total() == 6


async def test_metadata_check_refuses_and_redraws_combinations(tmp_path: Path) -> None:
    script = Script()
    method, _, _ = make_method(tmp_path, script, metadata_count=40, metadata_check=True)
    await method.prepare()
    items = list(method.metadata())
    assert len(items) == 40
    odd = [md for md in items[2:] if md.use_case == "Code debugging" and "Polite tone" in md.skills]
    assert odd == []  # refused combinations were drawn again
    report = method.report()["metadata_check"]
    assert report["refused"] > 0 and report["checked"] >= 38 and report["unchecked"] == 0
    checks = [c for c in script.calls if c[1] == "check_metadata"]
    assert len(checks) == report["checked"]  # only augmented items are checked
    (tmp_path / "plain").mkdir()
    plain, _, _ = make_method(tmp_path / "plain", Script(), metadata_count=40)
    await plain.prepare()
    assert any(
        md.use_case == "Code debugging" and "Polite tone" in md.skills for md in plain.metadata()
    )  # off by default: the same draw keeps them
