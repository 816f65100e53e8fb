"""Backtranslation: score parsing, threshold, tagging, and a scripted end-to-end run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from engine.config import load_config
from engine.errors import ConfigError, ParseError
from engine.methods import backtranslation as B
from engine.methods import method_config
from engine.methods.backtranslation import (
    BacktranslationConfig,
    decide,
    effective_threshold,
    parse_curation,
    parse_instruction,
    score_bucket,
)
from engine.methods.backtranslation import prompts as P
from engine.methods.base import MethodContext
from engine.records import BadInput, Item, RowOut
from tests.fakes import Counts, Reply
from tests.unit.methods.backtranslation_bound import BacktranslationMethod


# ----------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "score", "reasoning"),
    [
        ("The answer is complete and assistant-like.\nScore: 5", 5.0, "The answer is complete"),
        ("Reasoning: reads like a blog post.\n\nScore: 3\n", 3.0, "reads like a blog post."),
        ("Good but could be tighter.\n**Score:** 4.5", 4.5, "Good but could be tighter."),
        ("Mostly fine. I would rate it 4", 4.0, "Mostly fine. I would rate it 4"),
        ("Score: 2\nOn reflection, better.\nScore: 4", 4.0, "Score: 2\nOn reflection"),
    ],
)
def test_parse_curation_valid_and_fractional(text: str, score: float, reasoning: str) -> None:
    got = parse_curation(text)
    assert got.score == score
    assert got.reasoning.startswith(reasoning)


@pytest.mark.parametrize(
    "text", ["No rating given.", "Score: 7", "Score: 0", "", "I give it 9 out of 10"]
)
def test_parse_curation_missing_or_out_of_range(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_curation(text)
    assert info.value.stage == "curate"


def test_parse_instruction() -> None:
    assert parse_instruction('Instruction: "How do I fix a tyre?"').instruction == (
        "How do I fix a tyre?"
    )
    with pytest.raises(ParseError):
        parse_instruction("  \n")


def test_threshold_rule_and_decision() -> None:
    assert BacktranslationConfig().threshold == 4.5  # the paper's A5 set, not A4
    assert effective_threshold(None, 1) == 4.5
    assert effective_threshold(None, 3) == 4.5
    assert effective_threshold(3.5, 3) == 3.5
    assert decide(4.0, 4.0) and not decide(3.99, 4.0)
    assert decide(4.5, 4.5) and not decide(4.333, 4.5)
    assert score_bucket(4.333) == "4.0" and score_bucket(4.5) == "4.5" and score_bucket(5) == "5.0"


# ------------------------------------------------------------- fake endpoints
BODY = "Loosen the pad bolt, align the pad with the rim and tighten the bolt again firmly."


class FakeCaller:
    """A ChatCaller scripted by prompt content (a real class, not a mock).

    Segments whose text contains ``[sN]`` get score N from this judge; ``[sA/B]`` gives
    A to sample 0 and B to others; ``[fail]`` gets an unparsable judge reply.
    """

    def __init__(self, role: str, *, structured: bool, bonus: int = 0) -> None:
        self.name = role
        self.model = f"m-{role}"
        self._structured = structured
        self.bonus = bonus
        self.calls: list[tuple[str, int, Any]] = []
        self.prompts: list[str] = []

    @property
    def structured_output(self) -> bool:
        return self._structured

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
        self.prompts.append(content)
        if content.startswith("Below is a candidate answer"):
            self.calls.append(("backtranslate", sample_index, params))
            q = "What should I do? " + content.rsplit("\n", 1)[-1][:20]
            return Reply(
                json.dumps({"instruction": q}) if self._structured else f"Instruction: {q}"
            )
        self.calls.append(("curate", sample_index, params))
        answer = content.split("Answer:\n", 1)[1]
        if "[fail]" in answer:
            return Reply("I cannot decide.")
        m = re.search(r"\[s(\d)(?:/(\d))?\]", answer)
        assert m is not None
        score = int(m.group(1)) if sample_index // 1000 == 0 or not m.group(2) else int(m.group(2))
        score = min(5, score + self.bonus)
        if self._structured:
            return Reply(json.dumps({"reasoning": "brief", "score": score}))
        return Reply(f"Brief reasoning.\nScore: {score}")


def make(
    tmp_path: Path, texts: list[str], *, structured: bool = True, **method: object
) -> tuple[BacktranslationMethod, dict[str, FakeCaller]]:
    corpus = tmp_path / "corpus.md"
    corpus.write_text("".join(f"# Header {i}\n{t}\n" for i, t in enumerate(texts)), "utf-8")
    settings = {"corpus": "corpus.md", "min_chars": 10, **method}
    table = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    (tmp_path / "bt.toml").write_text(
        f"""
[run]
method = "backtranslation"
input = "corpus.md"

[endpoints.strong]
base_url = "http://127.0.0.1:9/v1"
model = "m"

[roles]
strong = "strong"

[method.backtranslation]
{table}""",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "bt.toml")
    cfg = method_config(config)
    assert isinstance(cfg, BacktranslationConfig)
    callers = {
        "strong": FakeCaller("strong", structured=structured),
        "target": FakeCaller("target", structured=structured, bonus=1),
        "judge": FakeCaller("judge", structured=structured),
    }
    counts: dict[str, Counts] = {}
    ctx = MethodContext(
        config=config,
        callers=dict(callers),
        input_path=config.resolve("corpus.md"),
        stage=lambda s: counts.setdefault(s, Counts()),
    )
    return BacktranslationMethod(cfg, ctx), callers


async def run_all(method: BacktranslationMethod) -> list[RowOut]:
    await method.prepare()
    rows: list[RowOut] = []
    for item in method.work():
        assert not isinstance(item, BadInput)
        rows.extend(await method.process(item))
    return rows


COLUMNS = [c.name for c in B.COLUMNS]


@pytest.mark.parametrize("structured", [True, False])
async def test_end_to_end_a5_self_curation_and_one_schema(tmp_path: Path, structured: bool) -> None:
    texts = [f"{BODY} [s5]", f"{BODY} [s4] a", f"{BODY} [s3] b", f"{BODY} [fail]", f"{BODY} [s5]"]
    method, callers = make(tmp_path, texts, structured=structured)
    rows = await run_all(method)
    kinds = [k for k, _ in rows]
    # A5 by default: only the score-5 pair is kept; the last text is a duplicate
    assert kinds == ["kept", "rejected", "rejected", "failed"]
    for _, r in rows:
        assert list(r) == COLUMNS  # one schema for every kind, in one order
    kept = rows[0][1]
    assert kept["tag"] == "S_w" and kept["system"] == P.S_W
    assert kept["response"].startswith(BODY) and kept["doc_id"] == "corpus.md"
    assert kept["instruction"].startswith("What should I do?")
    assert kept["score"] == 5.0 and kept["threshold"] == 4.5 and kept["part"] == 0
    assert kept["rounds"] == [
        {"role": "strong", "model": "m-strong", "score": 5.0, "scores": [5.0], "reasoning": ANY}
    ]
    assert kept["reason"] is None and kept["error"] is None
    rejected = rows[1][1]
    assert rejected["reason"] == "score 4 below threshold 4.5" and rejected["tag"] is None
    failed = rows[3][1]
    assert failed["stage"] == "curate" and failed["instruction"].startswith("What should")
    assert failed["score"] is None and failed["models"] == kept["models"]
    # self-curation: the model that augmented also curates; the judge role is not used
    assert {c[0] for c in callers["strong"].calls} == {"backtranslate", "curate"}
    assert callers["judge"].calls == []
    bt = [c for c in callers["strong"].calls if c[0] == "backtranslate"]
    assert bt and all(c[2]["temperature"] == 0.7 and c[2]["top_p"] == 0.9 for c in bt)
    assert ("response_format" in bt[0][2]) is structured
    rep = method.report()
    assert rep["kept"] == 1 and rep["rejected"] == 2 and rep["failed_by_stage"] == {"curate": 1}
    assert rep["curated_by"] == "strong"
    assert rep["corpus"]["dropped"] == {"duplicate": 1}
    assert rep["score_histogram"] == {"3.0": 1, "4.0": 1, "5.0": 1}
    assert len({r["id"] for _, r in rows}) == 4


async def test_backward_prompt_is_the_segment_alone_unless_asked(tmp_path: Path) -> None:
    method, callers = make(tmp_path, [f"{BODY} [s5]"])
    await run_all(method)
    prompts = [m for m in callers["strong"].prompts if m.startswith("Below is a candidate")]
    assert prompts and "Header 0" not in prompts[0] and "Heading" not in prompts[0]
    method, callers = make(tmp_path, [f"{BODY} [s5]"], backtranslate_header=True)
    await run_all(method)
    prompts = [m for m in callers["strong"].prompts if m.startswith("Below is a candidate")]
    assert "Heading: Header 0\n\nCandidate answer:" in prompts[0]


async def test_a4_is_a_setting_and_judge_role_overrides_self_curation(tmp_path: Path) -> None:
    texts = [f"{BODY} [s5]", f"{BODY} [s4] a", f"{BODY} [s3] b"]
    method, callers = make(tmp_path, texts, threshold=4, judge_role="judge")
    rows = await run_all(method)
    assert [k for k, _ in rows] == ["kept", "kept", "rejected"]
    assert {c[0] for c in callers["judge"].calls} == {"curate"}
    assert {c[0] for c in callers["strong"].calls} == {"backtranslate"}


async def test_averaged_samples_use_the_45_threshold(tmp_path: Path) -> None:
    texts = [f"{BODY} [s5/4]", f"{BODY} [s5/3] x", f"{BODY} [s5/5] y"]
    method, callers = make(tmp_path, texts, curation_samples=2, judge_role="judge")
    rows = await run_all(method)
    assert [(k, r["score"], r["scores"]) for k, r in rows] == [
        ("kept", 4.5, [5.0, 4.0]),
        ("rejected", 4.0, [5.0, 3.0]),
        ("kept", 5.0, [5.0, 5.0]),
    ]
    judge = [c for c in callers["judge"].calls if c[0] == "curate"]
    assert sorted(c[1] // 1000 for c in judge) == [0, 0, 0, 1, 1, 1]
    assert all(c[2]["temperature"] == 0.7 for c in judge)
    assert method.threshold == 4.5


async def test_rescoring_rounds_are_the_papers_iteration(tmp_path: Path) -> None:
    # M0 (strong) curates; M1 (target, one point more generous) and M2 (judge) re-score
    method, _ = make(tmp_path, [f"{BODY} [s4]", f"{BODY} [s1] y"], rescore_with="target")
    rows = await run_all(method)
    (k1, r1), (k2, r2) = rows
    assert (k1, r1["score"]) == ("kept", 5.0)  # the last round decides
    assert [x["role"] for x in r1["rounds"]] == ["strong", "target"]
    assert r1["rounds"][0]["score"] == 4.0
    assert (k2, r2["score"]) == ("rejected", 2.0)
    assert method.report()["first_round_histogram"] == {"1.0": 1, "4.0": 1}
    method, _ = make(tmp_path, [f"{BODY} [s4]"], rescore_with=["target", "judge"])
    ((kind, row),) = await run_all(method)
    assert [x["role"] for x in row["rounds"]] == ["strong", "target", "judge"]
    assert (kind, row["score"]) == ("rejected", 4.0)


async def test_finalize_writes_the_training_mix_of_seed_and_augmented(tmp_path: Path) -> None:
    from engine.io.shards import ShardSink

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        json.dumps({"instruction": "Name a prime.", "response": "Seven."})
        + "\n{not json\n"
        + json.dumps({"instruction": "Say hi.", "response": "Hi!"})
        + "\n",
        encoding="utf-8",
    )
    method, _ = make(tmp_path, [f"{BODY} [s5]", f"{BODY} [s3] b"], seeds="seeds.jsonl")
    rows = await run_all(method)
    assert method.seed_check is not None and method.seed_check.items_ok == 2
    out = tmp_path / "out"
    sink, _ = ShardSink.open(
        out,
        shard_records=10,
        config_hash="h",
        input_fingerprint="f",
        method="backtranslation",
        engine_version="test",
        simulated=False,
    )
    for i, (kind, row) in enumerate(rows):
        sink.write_item(i, [(kind, row)])
    sink.commit()
    (derived,) = await method.finalize(out)
    assert derived.name == B.MIX_NAME and derived.rows == 3
    mix = [json.loads(x) for x in (out / B.MIX_NAME).read_text().splitlines()]
    assert [(m["origin"], m["tag"]) for m in mix] == [
        ("seed", "S_a"), ("seed", "S_a"), ("augmented", "S_w")
    ]  # fmt: skip
    assert mix[0]["messages"] == [
        {"role": "system", "content": "Answer in the style of an AI Assistant."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "Seven."},
    ]
    assert mix[2]["messages"][0]["content"] == "Answer with knowledge from web search."
    assert mix[2]["messages"][2]["content"].startswith(BODY)
    assert method.report()["training_mix"] == {
        "file": B.MIX_NAME, "seed": 2, "augmented": 1, "seed_bad": 1, "rows": 3
    }  # fmt: skip
    assert [d.sha256 for d in await method.finalize(out)] == [derived.sha256]  # idempotent


def test_check_input_reads_the_seed_file(tmp_path: Path) -> None:
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    method, _ = make(tmp_path, [BODY], seeds="seeds.jsonl")
    check = method.check_input()
    assert check.details["seeds"] == {"usable": 0, "bad": 1}
    assert any("no usable pair" in p.message for p in check.problems)


def test_unknown_template_variable_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        make(tmp_path, [BODY], templates={"curate": "{{instruction}} {{nope}}"})


def test_work_yields_items_with_stable_keys(tmp_path: Path) -> None:
    method, _ = make(tmp_path, [f"{BODY} one", f"{BODY} two"])
    keys = [i.key for i in method.work() if isinstance(i, Item)]
    assert keys == ["corpus.md@1", "corpus.md@2"]
