"""LAB: judge parsers, tag/QA parsers, chunking, mixing, and a scripted end-to-end run."""

from __future__ import annotations

import random
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.config import Config, load_config
from engine.errors import ConfigError, ParseError
from engine.methods import PUBLIC_METHODS, method_config, resolve_method
from engine.methods.adapter import Adapter
from engine.methods.base import MethodContext, bad_input_reason, failed_row_for
from engine.methods.lab import (
    COLUMNS,
    LabConfig,
    LabMethod,
    LabMix,
    chunk_words,
    mix_rows,
    parse_judge_score,
    parse_qa_blocks,
    parse_tagged,
    parse_yes_no,
    sample_rows,
    training_sample,
)
from engine.methods.lab.mix import (
    SDG_SYSTEM_PROMPT,
    SPELLCHECK_INSTRUCTIONS,
    phase_sets,
    raft_documents,
)
from engine.methods.lab.rows import LabFailed, LabKept, LabRejected
from engine.records import Item, RowOut
from tests.fakes import Counts, Reply

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "configs" / "data" / "taxonomy"
MALFORMED = ROOT / "tests" / "unit" / "io" / "fixtures" / "malformed_qna.yaml"


# ------------------------------------------------------------------ parsers
@pytest.mark.parametrize(
    ("text", "low", "high", "expected"),
    [
        (
            "[Start of Evaluation]fine, 3 reasons[End of Evaluation]\n[Start of Score]1[End of Score]",
            0,
            1,
            1,
        ),
        (
            "[Start of Evaluation]bad[End of Evaluation]\n[Start of Score]\n0\n[End of Score]",
            0,
            1,
            0,
        ),
        ("Explanation...\n[Start of Score] 2 [End of Score]", 1, 3, 2),
        (
            "Subject Score: 1\nFocus Score: 0\n[Start of Score]\nTotal Score: 1\n[End of Score]",
            0,
            2,
            1,
        ),
        ("Subject: 1, Focus: 1\nTotal Score: 2", 0, 2, 2),
        ("The answer is fine. Score: 3", 1, 3, 3),
        ("[Start of Score]Score: 3/3[End of Score]", 1, 3, 3),
    ],
)
def test_parse_judge_score(text: str, low: int, high: int, expected: int) -> None:
    assert parse_judge_score(text, low=low, high=high) == expected


@pytest.mark.parametrize("text", ["no number here", "[Start of Score]7[End of Score]", ""])
def test_parse_judge_score_malformed(text: str) -> None:
    with pytest.raises(ParseError):
        parse_judge_score(text, low=0, high=1, stage="eval_question")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[Start of Evaluation]no issue[End of Evaluation][Start of Score]YES[End of Score]",
            "YES",
        ),
        (
            "[Start of Evaluation]yes it says so[End of Evaluation]\n[Start of Score] NO [End of Score]",
            "NO",
        ),
        ("The claim is not supported. Answer: no", "NO"),
        ("yes", "YES"),
    ],
)
def test_parse_yes_no(text: str, expected: str) -> None:
    assert parse_yes_no(text) == expected


def test_parse_yes_no_malformed() -> None:
    with pytest.raises(ParseError):
        parse_yes_no("maybe")


def test_parse_tagged() -> None:
    q = ("[Start of Question]", "[End of Question]")
    assert parse_tagged("x [Start of Question] A? [End of Question] y", *q) == ["A?"]
    assert parse_tagged("[Start of Question]A[End of Question][Start of Question]B", *q) == [
        "A",
        "B",
    ]
    assert parse_tagged("  Just a question?  ", *q) == ["Just a question?"]
    with pytest.raises(ParseError):
        parse_tagged("[Start of Question] [End of Question]", *q)
    with pytest.raises(ParseError):
        parse_tagged("   ", *q)


def test_parse_qa_blocks() -> None:
    text = "[QUESTION] What? [ANSWER] That. [END]\n[QUESTION]Why?\n[ANSWER]\nBecause.\n[END]"
    assert parse_qa_blocks(text) == [("What?", "That."), ("Why?", "Because.")]
    # A missing [END] before the next block, and at the end, is tolerated.
    assert parse_qa_blocks("[QUESTION] a [ANSWER] b [QUESTION] c [ANSWER] d") == [
        ("a", "b"),
        ("c", "d"),
    ]
    assert parse_qa_blocks("[UNANSWERABLE]") == []
    with pytest.raises(ParseError):
        parse_qa_blocks("Q: a A: b")


# ------------------------------------------------------------------ chunking
def test_chunk_words_boundaries() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    assert chunk_words(text, 5) == ["w0 w1 w2 w3 w4", "w5 w6 w7 w8 w9"]
    assert chunk_words(text, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]
    assert chunk_words(text, 10) == [text]
    assert chunk_words(text, 1000) == [text]
    assert chunk_words(text, 1) == [f"w{i}" for i in range(10)]
    assert chunk_words("", 3) == [] and chunk_words("  \n ", 3) == []
    # Newlines inside a chunk are kept; every word lands in exactly one chunk.
    md = "# Title\n\nline one\nline two"
    assert chunk_words(md, 3) == ["# Title\n\nline", "one\nline two"]
    with pytest.raises(ValueError):
        chunk_words(text, 0)


# ------------------------------------------------------------------ mixing
def _rows(n: int, leaf: str, phase: str) -> list[dict[str, Any]]:
    return [{"id": f"{leaf}-{i}", "leaf": leaf, "phase": phase} for i in range(n)]


def test_sample_rows_count_ratio_and_replacement() -> None:
    import random

    rows = _rows(10, "a", "skills")
    assert sample_rows(rows, 1.0, random.Random(0)) == rows
    half = sample_rows(rows, 0.5, random.Random(0))
    assert len(half) == 5 and len({r["id"] for r in half}) == 5
    assert len(sample_rows(rows, 3, random.Random(0))) == 3
    more = sample_rows(rows, 25, random.Random(0))
    assert len(more) == 25 and len({r["id"] for r in more}) < 25  # with replacement
    assert len(sample_rows(rows, 2.0, random.Random(0))) == 20
    assert sample_rows(rows, 0, random.Random(0)) == []
    assert sample_rows([], 5, random.Random(0)) == []


def test_mix_rows_per_phase_and_leaf() -> None:
    rows = (
        _rows(10, "knowledge/x", "knowledge")
        + _rows(6, "skills/a", "skills")
        + _rows(4, "skills/b", "skills")
    )
    recipe = LabMix(knowledge=0.5, skills=1.0, leaves={"skills/a": 12})
    mixed = mix_rows(rows, recipe, seed=3)
    counts = Counter(r["leaf"] for r in mixed)
    assert counts == {"knowledge/x": 5, "skills/a": 12, "skills/b": 4}
    assert mix_rows(rows, recipe, seed=3) == mixed  # seeded
    assert mix_rows(rows, recipe, seed=4) != mixed
    assert len(mix_rows(rows, LabMix(), seed=0)) == 20


def test_mix_rejects_negative_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        method_config(write_config(tmp_path, mix="[method.lab.mix]\nskills = -1\n"))
    assert "method.lab.mix" in str(info.value)


def test_training_sample_grounded_user_turn() -> None:
    row = {
        "id": "1",
        "leaf": "l",
        "kind": "grounded_skill",
        "phase": "skills",
        "question": "Q?",
        "answer": "A.",
        "context": "Ctx.",
    }
    s = training_sample(row)
    assert s["messages"] == [
        {"role": "system", "content": SDG_SYSTEM_PROMPT},
        {"role": "user", "content": "Ctx.\n\nQ?"},
        {"role": "assistant", "content": "A."},
    ]
    assert s["unmask"] is False
    k = training_sample({**row, "kind": "knowledge", "phase": "knowledge"})
    # SDG's phase 0.7 knowledge set: the chunk before the question, trained on unmasked
    assert k["messages"][1]["content"] == "Ctx.\n\nQ?" and k["unmask"] is True
    f = training_sample({**row, "kind": "freeform_skill", "context": ""})
    assert f["messages"][1]["content"] == "Q?"


# ------------------------------------------------------------------ scripted end to end
EVAL = "[Start of Evaluation]ok[End of Evaluation]\n[Start of Score]{}[End of Score]"


class FakeCaller:
    """A ChatCaller that answers each LAB prompt by rule (text mode, no structured output)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.model = f"m-{name}"
        self.calls: Counter[str] = Counter()
        self.seeds: list[int] = []

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
        text = messages[-1]["content"]
        seed = int(params.get("seed", 0))
        self.seeds.append(seed)
        question = (
            m.group(1).strip()
            if (m := re.search(r"Question:\s*\n?(?:\[Start of Question\]\n)?(.*)", text))
            else ""
        )
        if "come up with a set of" in text and "about a context" not in text:
            self.calls["gen_questions"] += 1
            n = int(text.split("come up with a set of ", 1)[1].split()[0])
            return Reply(
                "\n".join(
                    f"[Start of Question]Freeform {(seed + k) % 4}?[End of Question]"
                    for k in range(n)
                )
            )
        if "write one new context" in text:
            self.calls["gen_contexts"] += 1
            return Reply(f"[Start of Context]Context {seed % 2}.[End of Context]")
        if "diverse questions about a context" in text:
            self.calls["gen_grounded_questions"] += 1
            n = int(text.split("come up with a set of ", 1)[1].split()[0])
            return Reply(
                "\n".join(
                    f"[Start of Question]Grounded {(seed + k) % 7}?[End of Question]"
                    for k in range(n)
                )
            )
        if "judge of a question written" in text:
            self.calls["eval_question"] += 1
            return Reply(EVAL.format(0 if question.startswith("Freeform 0") else 1))
        if "answer a question for the following task" in text:
            self.calls["gen_responses"] += 1
            return Reply("An answer.")
        if "judge of an answer" in text:
            self.calls["eval_pair"] += 1
            return Reply(EVAL.format(1 if question.startswith("Freeform 1") else 3))
        if "Correct the spelling" in text:
            self.calls["spellcheck"] += 1
            return Reply(text.split("[Start of Document]\n", 1)[1].split("\n[End of Document]")[0])
        if "write question and answer pairs" in text:
            self.calls["gen_knowledge"] += 1
            doc = text.rsplit("Document:\n", 1)[1].split()[0]
            return Reply(
                f"[QUESTION] About {doc}? [ANSWER] Yes. [END]\n"
                "[QUESTION] Shared? [ANSWER] Yes. [END]\n"
                f"[QUESTION] Unfaithful {doc}? [ANSWER] No. [END]"
            )
        if "fully supported" in text:
            self.calls["eval_faithfulness"] += 1
            return Reply(EVAL.format("NO" if "Unfaithful" in text else "YES"))
        if "how well an answer" in text:
            self.calls["eval_relevancy"] += 1
            return Reply(EVAL.format("Total Score: " + ("1" if "Shared" in text else "2")))
        if "self-contained" in text:
            self.calls["eval_verify_question"] += 1
            return Reply(EVAL.format(1))
        if "write one new question and its answer" in text:
            return Reply(f"[QUESTION] Simple {seed % 3}? [ANSWER] Yes. [END]")
        if "write one question and answer pair" in text:
            return Reply(f"[QUESTION] Simple K {seed % 2}? [ANSWER] Yes. [END]")
        raise AssertionError(f"unexpected prompt: {text[:80]}")


def write_config(tmp_path: Path, mix: str = "", **method: object) -> Config:
    root = tmp_path / "taxonomy"
    if not root.exists():
        shutil.copytree(SAMPLE, root)
        shutil.copytree(SAMPLE.parent / "knowledge_docs", tmp_path / "knowledge_docs")
        broken = root / "compositional_skills" / "writing" / "broken" / "qna.yaml"
        broken.parent.mkdir(parents=True)
        shutil.copy(MALFORMED, broken)
    settings = {
        "num_samples": 8,
        "num_contexts": 4,
        "grounded_questions": 2,
        "chunk_word_count": 100,
        **method,
    }
    table = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in settings.items())
    text = f"""
[run]
method = "lab"
input = "taxonomy"
seed = 7

[endpoints.teacher]
base_url = "http://127.0.0.1:9/v1"
model = "m-teacher"

[roles]
strong = "teacher"

[method.lab]
{table}
{mix}"""
    path = tmp_path / "lab.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


async def run_lab(tmp_path: Path, **method: object) -> tuple[Adapter, list[RowOut], FakeCaller]:
    config = write_config(tmp_path, "", **method)
    cfg = method_config(config)
    assert isinstance(cfg, LabConfig)
    caller = FakeCaller("teacher")
    ctx = MethodContext(
        config=config,
        callers={"strong": caller, "target": caller, "judge": caller},
        input_path=config.resolve(config.run.input or ""),
        stage=lambda name: Counts(),
    )
    lab = Adapter(LabMethod(cfg), ctx)  # LabMethod under the engine's protocol
    await lab.prepare()
    rows: list[RowOut] = []
    bad: list[str] = []
    for item in lab.work():
        assert isinstance(item, Item)  # a refused leaf too: answered in the schema
        if bad_input_reason(item) is not None:
            bad.append(item.source)
            ((kind, row),) = await lab.process(item)
            assert kind == "failed" and row["stage"] == "input"
            assert list(row) == [c.name for c in COLUMNS]
            continue
        rows.extend(await lab.process(item))
    assert bad == ["compositional_skills/writing/broken/qna.yaml:4"]
    return lab, rows, caller


async def test_full_pipeline_scripted(tmp_path: Path) -> None:
    lab, rows, caller = await run_lab(tmp_path)
    by_leaf: dict[str, list[RowOut]] = {}
    for kind, row in rows:
        by_leaf.setdefault(row["leaf"], []).append((kind, row))
    report = lab.report()
    assert report["leaves_bad"][0]["source"].endswith("broken/qna.yaml:4")
    for leaf, leaf_rows in by_leaf.items():
        entry = report["per_leaf"][leaf]
        kinds = Counter(k for k, _ in leaf_rows)
        assert kinds["kept"] == entry["kept"]
        assert kinds["failed"] == entry["failed"] == 0
        filters = Counter(r["filter"] for k, r in leaf_rows if k == "rejected")
        assert {f: n for f, n in entry["dropped"].items() if n} == dict(filters)
        assert entry["generated"] == entry["kept"] + sum(entry["dropped"].values())
    haiku = report["per_leaf"]["compositional_skills/writing/freeform/haiku"]
    # as SDG: one call per seed example (5), each asking for a set of num_samples (8)
    assert caller.calls["gen_questions"] == 5
    assert haiku["generated"] == 40
    assert haiku["dropped"]["dedup"] == 36  # "Freeform {n % 4}?": at most 4 distinct
    kept = [r for k, r in rows if k == "kept"]
    rejected = [r for k, r in rows if k == "rejected"]
    reasons = {r["reason"] for r in rejected}
    assert {
        "duplicate question",
        "question_check=0",
        "pair_score=1<2",
        "faithfulness=NO",
        "relevancy=1<2",
    } <= reasons
    names = [c.name for c in COLUMNS]
    for _, r in rows:
        assert list(r) == names  # one schema for every kind
    for r in kept:
        checks = [(c["check"], c["score"], c["passed"]) for c in r["checks"]]
        if r["kind"] == "knowledge":
            assert checks == [
                ("dedup", 1.0, True),
                ("faithfulness", 1.0, True),
                ("relevancy", 2.0, True),
                ("self_contained", 1.0, True),
            ]
            assert r["phase"] == "knowledge" and r["context"] and r["raw_document"]
            assert r["dataset_type"] in ("base_document", "spellcheck")
        else:
            assert checks[:2] == [("dedup", 1.0, True), ("question_check", 1.0, True)]
            assert checks[2][0] == "pair_check" and checks[2][1] >= 2
            assert r["phase"] == "skills" and r["dataset_type"] == "" and r["raw_document"] == ""
        # the judges' rationales are kept
        assert all(c["rationale"] for c in r["checks"][1:])
        if r["kind"] == "grounded_skill":
            assert r["context"].startswith("Context ")
    dup = next(r for r in rejected if r["filter"] == "dedup")
    assert dup["checks"] == [
        {"check": "dedup", "score": 0.0, "passed": False, "rationale": "duplicate question"}
    ]
    grounded = report["per_leaf"]["compositional_skills/extraction/summarization/meeting_notes"]
    # num_contexts (4) per seed example (5); "Context {seed % 2}." repeats
    assert grounded["contexts_generated"] == 20 and grounded["contexts_duplicate"] == 18
    assert caller.calls["gen_grounded_questions"] == 2
    ids = [r["id"] for _, r in rows]
    assert len(ids) == len(set(ids))
    # Deterministic: a second run gives the same rows.
    _, again, _ = await run_lab(tmp_path)
    assert again == rows


async def test_simple_pipeline_dedups_without_judges(tmp_path: Path) -> None:
    lab, rows, caller = await run_lab(tmp_path, pipeline="simple", num_instructions_to_generate=6)
    assert not any(k.startswith("eval") for k in caller.calls)
    kept = [r for k, r in rows if k == "kept"]
    assert kept and all([c["check"] for c in r["checks"]] == ["dedup"] for r in kept)
    assert all(r["reason"] == "duplicate question" for k, r in rows if k == "rejected")
    report = lab.report()
    assert sum(e["generated"] for e in report["per_leaf"].values()) == 18


# ------------------------------------------------------------------ phase sets (SDG mixer)
def _krow(i: int, chunk: int, kind: str = "base_document") -> dict[str, Any]:
    raw = f"Chunk {chunk} text."
    return {
        "id": f"k{i}",
        "leaf": "knowledge/x",
        "kind": "knowledge",
        "phase": "knowledge",
        "question": f"Q{i}?",
        "answer": f"A{i}.",
        "context": raw if kind == "base_document" else f"Chunk {chunk} text (fixed).",
        "raw_document": raw,
        "dataset_type": kind,
    }


def test_phase_sets_as_instructlab_mixes_them() -> None:
    knowledge = [_krow(i, i % 6) for i in range(12)] + [_krow(12, 0, "spellcheck")]
    skills = [
        {"id": f"s{i}", "leaf": "skills/y", "kind": "freeform_skill", "phase": "skills",
         "question": f"S{i}?", "answer": "ok", "context": ""}
        for i in range(3)
    ]  # fmt: skip
    mix = LabMix(skills_per_leaf=30)
    sets = phase_sets(knowledge + skills, mix, seed=1)
    p07, p10 = sets["knowledge.jsonl"], sets["skills.jsonl"]
    # every sample: messages with InstructLab's system turn first
    for s in p07 + p10 + sets["mixed.jsonl"]:
        assert s["messages"][0] == {"role": "system", "content": SDG_SYSTEM_PROMPT}
    # knowledge phase: context then question, unmasked; plus one auxiliary spellcheck sample
    qa = [s for s in p07 if s["dataset"] == "knowledge_qa"]
    assert len(qa) == 13 and all(s["unmask"] for s in p07)
    assert qa[0]["messages"][1]["content"] == "Chunk 0 text.\n\nQ0?"
    (aux,) = [s for s in p07 if s["dataset"] == "document_spellcheck"]
    user = aux["messages"][1]["content"]
    assert user.startswith("Chunk 0 text.\n\n") and user.split("\n\n")[-1] in (
        SPELLCHECK_INSTRUCTIONS
    )
    assert aux["messages"][2]["content"] == "Chunk 0 text (fixed)."
    # skills phase: 30 samples per skill leaf, RAFT knowledge, the knowledge replay, aux
    by = Counter(s["dataset"] for s in p10)
    assert by == {
        "freeform_skill": 30, "knowledge_qa_raft_p0.4": 13, "knowledge_qa": 13,
        "document_spellcheck": 1,
    }  # fmt: skip
    raft = [s for s in p10 if s["dataset"].startswith("knowledge_qa_raft")]
    with_gold = 0
    for s in raft:
        docs = s["messages"][1]["content"].split("\n\n\n\nQ")[0]
        n_docs = docs.count("Document:\n")
        src = next(k for k in knowledge if k["id"] == s["source_id"])
        gold = src["context"] in docs
        with_gold += gold
        assert n_docs == 4 and not s["unmask"]  # num_doc_in_context = 4
        assert s["messages"][1]["content"].endswith(src["question"])
    assert 0 < with_gold < len(raft)  # gold among them with p = 0.4
    assert [s["unmask"] for s in p10 if s["dataset"] == "knowledge_qa"] == [True] * 13
    assert len({s["id"] for s in p10}) == len(p10)
    assert phase_sets(knowledge + skills, mix, seed=1) == sets  # seeded: reproducible


def test_raft_documents_with_few_chunks() -> None:
    rng = random.Random(0)
    assert raft_documents("g", [], n=4, p=0.4, rng=rng) == "Document:\ng\n\n"
    block = raft_documents("g", ["g", "a"], n=4, p=1.0, rng=rng)
    assert sorted(block.split("\n\n\n")) == sorted(["Document:\na", "Document:\ng\n\n"])


# ------------------------------------------------------------------ on the public method API
def test_lab_is_a_public_method_with_its_capabilities(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert PUBLIC_METHODS["lab"] is LabMethod
    entry = resolve_method(config)
    assert entry.config_type is LabConfig
    # a taxonomy, not JSONL records; no phase before the items; phase sets at the end
    assert (entry.records_input, entry.global_phase, entry.finalizes) == (False, False, True)


@pytest.mark.parametrize(
    ("struct", "letter"), [(LabKept, "k"), (LabRejected, "r"), (LabFailed, "f")]
)
def test_each_kinds_struct_is_the_row_schema(struct: type[msgspec.Struct], letter: str) -> None:
    fields = msgspec.structs.fields(struct)
    assert [f.name for f in fields] == [c.name for c in COLUMNS]  # the columns, in order
    for col, field in zip(COLUMNS, fields, strict=True):
        # null on every row of a kind that does not fill the column, typed where it does
        assert (field.type is type(None)) == (letter not in col.kinds), col.name


async def test_engine_written_rows_share_the_schema_and_total(tmp_path: Path) -> None:
    lab, _, _ = await run_lab(tmp_path, pipeline="simple", num_instructions_to_generate=2)
    assert lab.total == 4  # three leaves and the refused one: the progress bar's total
    error = ParseError("no reply parsed", stage="eval_pair")
    kind, row = failed_row_for(lab, "a/leaf", source="a/leaf/qna.yaml", stage="item", error=error)
    assert kind == "failed" and list(row) == [c.name for c in COLUMNS]
    assert row["models"] == {"strong": "m-teacher", "target": "m-teacher", "judge": "m-teacher"}
    assert (row["stage"], row["error_kind"], row["answer"]) == ("item", "ParseError", None)
    assert row["simulated"] is False


def test_a_bad_template_names_its_file_line_and_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[method.lab.templates]\neval_pair = "Rate {{nope}}."\n')
    with pytest.raises(ConfigError) as info:
        method_config(config)
    err = info.value
    lines = (tmp_path / "lab.toml").read_text().splitlines()
    assert err.path == str(tmp_path / "lab.toml")
    assert err.line is not None and lines[err.line - 1].startswith("eval_pair = ")
    assert err.field == "method.lab.templates.eval_pair"
    assert "nope" in err.reason and err.hint is not None and "{{answer}}" in err.hint
