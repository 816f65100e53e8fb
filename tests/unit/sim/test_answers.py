"""The simulated endpoint answers from the prompt (``answers = "prompt"``, the default).

Pure-function tests of :func:`engine.sim.model.generate` on chat messages: the answers a
prompt lists, a score where a judge asks for one (read back by the project's own
parsers, for every method's prompts), words of the prompt, lengths asked for, replies
like the examples a prompt gives, JSON answers, and determinism.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any

import msgspec
import pytest

from engine.io.tasks import match_label
from engine.methods import prompts_codeclm as PC
from engine.methods import prompts_selfguide as PS
from engine.methods.backtranslation import parse_curation, parse_instruction
from engine.methods.backtranslation import prompts as PB
from engine.methods.codeclm import (
    _parse_improved,
    _parse_pair,
    _parse_verdict,
    parse_encoding,
    parse_rubrics,
)
from engine.methods.lab import prompts as PL
from engine.methods.lab.parsing import (
    binary,
    first_qa,
    parse_judge_score,
    parse_qa_blocks,
    parse_tagged,
    parse_yes_no,
)
from engine.methods.respond import JUDGE_TEMPLATE
from engine.sim.model import (
    Choice,
    SimSettings,
    generate,
    prompt_tokens,
    request_digest,
)
from engine.stages import parse_numbered_list, parse_score, render

SEEDS = range(30)


def chat(
    messages: list[dict[str, Any]] | str,
    *,
    seed: int = 0,
    max_tokens: int | None = 256,
    n: int = 1,
    temperature: float | None = None,
    response_format: Any = None,
    answers: str = "prompt",
) -> list[Choice]:
    """The choices the simulated endpoint gives this request."""
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
    body: dict[str, Any] = {"messages": msgs, "seed": seed}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    settings = msgspec.convert({"answers": answers}, SimSettings)
    content = generate(
        settings,
        request_digest(0, body),
        n=n,
        max_tokens=max_tokens,
        prompt=prompt_tokens(msgs),
        response_format=response_format,
        temperature=temperature,
        messages=msgs,
    )
    return list(content.choices)


def text(messages: list[dict[str, Any]] | str, **kw: Any) -> str:
    return chat(messages, **kw)[0].content


def texts(messages: list[dict[str, Any]] | str, **kw: Any) -> list[str]:
    return [text(messages, seed=s, **kw) for s in SEEDS]


_PUNCT = str.maketrans(dict.fromkeys(string.punctuation + string.digits, " "))


def words_of(s: str) -> set[str]:
    return {w.lower() for w in s.translate(_PUNCT).split()}


# ------------------------------------------------------------------ listed answers
LISTED = [
    ("Classify the sentiment as positive, negative or neutral.\n\nText: it was fine.",
     {"positive", "negative", "neutral"}),
    ("What is 2 + 2? Options: A, B, C, D", {"A", "B", "C", "D"}),
    ("Is this message spam? Answer yes or no.\n\nMessage: you won a prize", {"yes", "no"}),
    ("Answer with A, B or C.\nWhich is a fruit? A: apple B: chair C: road", {"A", "B", "C"}),
    ("Pick a title for the story. Choose from: Dawn, Dusk, Noon", {"Dawn", "Dusk", "Noon"}),
    ("Give the topic of the text as one of: sports, politics, science.\nText: a goal in the "
     "last minute", {"sports", "politics", "science"}),
    ("labels: urgent, normal, low\nTicket: the server is down", {"urgent", "normal", "low"}),
    ("Which animal barks?\n(A) a cat\n(B) a dog\n(C) a cow\nAnswer:", {"A", "B", "C"}),
    ("Reply with 'true' or 'false': the sky is green.", {"true", "false"}),
    ("Possible answers:\n- entailment\n- neutral\n- contradiction\nPremise: a man sleeps.",
     {"entailment", "neutral", "contradiction"}),
]  # fmt: skip


@pytest.mark.parametrize(("prompt", "labels"), LISTED, ids=[p[:24] for p, _ in LISTED])
def test_a_listed_answer_is_chosen_by_the_digest(prompt: str, labels: set[str]) -> None:
    got = texts(prompt)
    answers = [t.removeprefix("[simulated] ") for t in got]
    assert all(t.startswith("[simulated] ") for t in got)
    assert set(answers) <= labels, answers
    assert len(set(answers)) > 1  # the digest picks, not the first of the list


def test_labels_in_the_system_message_and_the_answer_on_its_first_line() -> None:
    msgs = [
        {"role": "system", "content": "Answer with one word: good or fair."},
        {"role": "user", "content": "Review: it broke after a week"},
    ]
    assert {text(msgs, seed=s).split()[-1] for s in SEEDS} == {"good", "fair"}
    # CodecLM's metadata check: YES or NO on the first line, then a reason
    prompt = render(PC.CHECK_METADATA, {"use_case": "Poetry", "skills": "Rhyme, Meter"})
    for t in texts(prompt, max_tokens=64):
        first, reason = t.split("\n", 1)
        assert first in ("[simulated]",) and reason.split("\n")[0] in ("YES", "NO")
        assert _parse_verdict(t).reasonable is (reason.split("\n")[0] == "YES")


# ------------------------------------------------------- the project's own parsers
INSTRUCTION = "Write a short poem about autumn leaves for a children's book."
ANSWER = "Leaves drift down in red and gold, a story that the wind has told."
LAB = {
    "task_description": "Write limericks about animals.",
    "seed_question": "Write a limerick about a cat.",
    "seed_answer": "A cat with a hat sat on a mat.",
    "seed_context": "Cats sleep most of the day.",
    "context": "Owls hunt at night and sleep by day.",
    "context_block": "",
    "question": "Write a limerick about an owl.",
    "answer": "An owl with a scowl went out on the prowl.",
    "num_samples": 5,
    "document": "The black-capped chickadee is a small songbird of North America.",
    "domain": "birds",
    "document_outline": "chickadee facts",
    "icl_document": "Robins are thrushes.",
    "icl_pairs": "[QUESTION] What are robins? [ANSWER] Thrushes. [END]",
}


def _codeclm_cases() -> list[tuple[str, str, int, Any]]:
    v = {
        "instruction": INSTRUCTION,
        "use_case": "Children's poetry",
        "skills": "Creative writing, Rhyme",
        "n": 6,
        "k": 4,
        "action": "Add a constraint on the rhyme scheme.",
        "answer_1": ANSWER,
        "answer_2": "Autumn is a season.",
    }
    return [
        ("encode", render(PC.ENCODE, v), 1024, lambda t: parse_encoding(t, 3)),
        ("decode", render(PC.DECODE, v), 1024, lambda t: parse_numbered_list(t)),
        ("rubrics", render(PC.RUBRICS, v), 1024, lambda t: parse_rubrics(t, 4)),
        ("improve", render(PC.IMPROVE, v), 1024, _parse_improved),
        ("judge", render(PC.JUDGE, v), 32, _parse_pair),
        ("check_metadata", render(PC.CHECK_METADATA, v), 64, _parse_verdict),
    ]


def _other_cases() -> list[tuple[str, str, int, Any]]:
    bt = {"segment": ANSWER, "header": "", "heading_block": "", "instruction": INSTRUCTION,
          "answer": ANSWER}  # fmt: skip
    judge = {"instruction": INSTRUCTION, "response": ANSWER}
    questions = "[Start of Question]", "[End of Question]"

    def qs(t: str) -> list[str]:
        return parse_tagged(t, *questions)

    return [
        ("backtranslate", render(PB.BACKTRANSLATE, bt), 256, parse_instruction),
        ("curate", render(PB.CURATE, bt), 256, parse_curation),
        ("respond_judge", render(JUDGE_TEMPLATE, judge), 256,
         lambda t: parse_score(t, low=1, high=10)),
        ("gen_questions", render(PL.GEN_QUESTIONS, LAB), 1024, qs),
        ("gen_grounded_questions", render(PL.GEN_GROUNDED_QUESTIONS, LAB), 1024, qs),
        ("gen_contexts", render(PL.GEN_CONTEXTS, LAB), 1024,
         lambda t: parse_tagged(t, "[Start of Context]", "[End of Context]")),
        ("eval_question", render(PL.EVAL_QUESTION, LAB), 512, lambda t: binary(t, "q")),
        ("eval_pair", render(PL.EVAL_PAIR, LAB), 512,
         lambda t: parse_judge_score(t, low=1, high=3)),
        ("eval_faithfulness", render(PL.EVAL_FAITHFULNESS, LAB), 512, parse_yes_no),
        ("eval_relevancy", render(PL.EVAL_RELEVANCY, LAB), 512,
         lambda t: parse_judge_score(t, low=0, high=2)),
        ("eval_verify_question", render(PL.EVAL_VERIFY_QUESTION, LAB), 512,
         lambda t: binary(t, "v")),
        ("gen_knowledge", render(PL.GEN_KNOWLEDGE, LAB), 1024, parse_qa_blocks),
        ("simple_skill", render(PL.SIMPLE_SKILL, LAB), 1024, first_qa("s")),
        ("simple_knowledge", render(PL.SIMPLE_KNOWLEDGE, LAB), 1024, first_qa("k")),
    ]  # fmt: skip


CASES = _codeclm_cases() + _other_cases()


@pytest.mark.parametrize(
    ("stage", "prompt", "max_tokens", "parse"), CASES, ids=[c[0] for c in CASES]
)
def test_every_method_prompt_gets_a_reply_its_own_parser_reads(
    stage: str, prompt: str, max_tokens: int, parse: Any
) -> None:
    """Text mode (``structured_output = false``): each prompt of CodecLM, backtranslation,
    LAB and respond, as the method renders it (LAB with its system message), answered at
    the method's default ``max_tokens``, is read by the parser that method uses."""
    msgs = [{"role": "user", "content": prompt}]
    if stage.startswith(("gen_", "eval_", "simple_")):
        msgs.insert(0, {"role": "system", "content": PL.SYSTEM})
    results = []
    for seed in SEEDS:
        choice = chat(msgs, seed=seed, max_tokens=max_tokens)[0]
        assert choice.finish_reason == "stop", (stage, choice)
        results.append(parse(choice.content))
    assert len({repr(r) for r in results}) > 1  # not one fixed reply


def test_directives_around_long_material_are_still_read() -> None:
    """A judge prompt whose material (a web page, a document, two long answers) is longer
    than what is read of it: the directives before and after it still shape the reply."""
    page = " ".join(["The sun warms the quiet valley where farmers grow wheat."] * 120)
    assert len(page) > 6000
    curate = render(PB.CURATE, {"instruction": INSTRUCTION, "answer": page})
    assert {parse_curation(t).score for t in texts(curate)} <= {1, 2, 3, 4, 5}
    faithful = render(PL.EVAL_FAITHFULNESS, {**LAB, "document": page})
    assert {parse_yes_no(t) for t in texts(faithful)} == {"YES", "NO"}
    judge = render(PC.JUDGE, {"instruction": INSTRUCTION, "answer_1": page, "answer_2": page})
    assert all(1 <= _parse_pair(t).assistant_1 <= 10 for t in texts(judge, max_tokens=32))


def test_scores_cover_the_scale_the_judge_names() -> None:
    curate = render(PB.CURATE, {"instruction": INSTRUCTION, "answer": ANSWER})
    scores = Counter(parse_curation(t).score for t in texts(curate))
    assert set(scores) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(scores) >= 4
    judge = render(
        PC.JUDGE, {"instruction": INSTRUCTION, "answer_1": ANSWER, "answer_2": "No idea."}
    )
    pairs = [_parse_pair(t) for t in texts(judge, max_tokens=32)]
    assert all(1 <= p.assistant_1 <= 10 and 1 <= p.assistant_2 <= 10 for p in pairs)
    assert len({p.assistant_1 for p in pairs}) >= 5
    faithful = render(PL.EVAL_FAITHFULNESS, LAB)
    assert {parse_yes_no(t) for t in texts(faithful)} == {"YES", "NO"}
    relevancy = render(PL.EVAL_RELEVANCY, LAB)
    assert {parse_judge_score(t, low=0, high=2) for t in texts(relevancy)} == {0, 1, 2}
    plain = "How good is this haiku on a scale of 1 to 5? Leaves fall, quietly."
    assert {parse_score(t, low=1, high=5) for t in texts(plain)} <= {1, 2, 3, 4, 5}


def test_a_bare_number_when_only_the_number_is_asked_for() -> None:
    prompt = (
        "Rate the clarity of this sentence from 1 to 5. Reply with only the number.\nThe cat sat."
    )
    assert {text(prompt, seed=s) for s in SEEDS} <= {f"[simulated] {k}" for k in range(1, 6)}


def test_a_prompt_ending_with_a_cue_answers_like_its_examples() -> None:
    prompt = (
        "Review: great movie\nSentiment: positive\n\nReview: awful plot\nSentiment: negative"
        "\n\nReview: fine, I guess\nSentiment: neutral\n\nReview: loved every minute\nSentiment:"
    )
    got = {text(prompt, seed=s) for s in SEEDS}
    assert got == {"[simulated] positive", "[simulated] negative", "[simulated] neutral"}


def test_a_format_asks_for_as_many_items_as_the_prompt_says() -> None:
    v = {"instruction": INSTRUCTION, "use_case": "Poetry", "skills": "Rhyme", "n": 6, "k": 4}
    assert all(len(parse_numbered_list(t)) == 6 for t in texts(render(PC.DECODE, v)))
    rubrics = [parse_rubrics(t, 4) for t in texts(render(PC.RUBRICS, v), max_tokens=1024)]
    assert all(len(r.rubrics) == 4 and len(r.actions) == 4 for r in rubrics)
    questions = render(PL.GEN_QUESTIONS, LAB)
    assert all(
        len(parse_tagged(t, "[Start of Question]", "[End of Question]")) == 5
        for t in texts(questions, max_tokens=1024)
    )
    encoding = parse_encoding(text(render(PC.ENCODE, v)), 3)
    assert encoding.use_case and 2 <= len(encoding.skills) <= 3


def test_a_template_line_with_choices_is_filled_in_place() -> None:
    prompt = "Read the review.\nReply in the format 'Label: <positive|negative>'.\nReview: great"
    for t in texts(prompt):
        assert re.fullmatch(r"\[simulated\] Label: (positive|negative)", t), t


# ------------------------------------------------------------------------ examples
def _selfguide_annotation(labels: list[str], outputs: list[str], new: str) -> list[Any]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": PS.ANNOTATE_SYSTEM},
        {"role": "user", "content": "Say which class the text belongs to."},
        {"role": "assistant", "content": "Okay."},
    ]
    for i, out in enumerate(outputs):
        msgs += [
            {"role": "user", "content": f"[input] = example text number {i}"},
            {"role": "assistant", "content": out},
        ]
    return [*msgs, {"role": "user", "content": f"[input] = {new}"}]


def test_few_shot_labels_are_answered_and_a_low_temperature_vote_has_a_winner() -> None:
    """SELF-GUIDE's annotation chat: the examples' outputs are the labels; ten samples
    at temperature 0.2 mostly agree, and the label mapping reads the winner."""
    labels = ["N", "E", "C"]
    msgs = _selfguide_annotation(labels, ["N", "E", "C", "N"], "A man sleeps. A man runs.")
    winners = []
    for seed in SEEDS:
        outs = [str(c.content) for c in chat(msgs, seed=seed, n=10, temperature=0.2)]
        top, votes = Counter(outs).most_common(1)[0]
        assert votes >= 3
        label = match_label(top, labels)
        assert label is not None
        winners.append(label)
    assert set(winners) == set(labels)


def test_long_examples_set_the_length_of_the_reply() -> None:
    gold = [
        "Works exactly as described, sturdy build and the battery lasts for days.",
        "It does the job, but the buttons feel cheap and the manual is confusing.",
        "Fantastic value: fast shipping, great sound and it looks lovely on my desk.",
    ]
    prompt = render(
        PS.GENERATE,
        {
            "instruction": "Write a product review.",
            "high_quality": "\n".join(
                f"{i}. [input]={json.dumps(g)}" for i, g in enumerate(gold, 1)
            ),
            "low_quality": "N/A",
        },
    )
    lo, hi = min(map(len, gold)), max(map(len, gold))
    gold_words = words_of(" ".join(gold))
    for t in texts(prompt, max_tokens=500):
        assert lo <= len(t) <= hi, (len(t), t)
        assert words_of(t.removeprefix("[simulated] ")) <= gold_words


# --------------------------------------------------------------- words and lengths
def test_plain_text_uses_the_words_of_the_last_user_message() -> None:
    msgs = [
        {"role": "system", "content": "You are a helpful zebra."},
        {"role": "user", "content": "Tell me about volcanoes and magma chambers, please!"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Describe basalt, obsidian and pumice formation."},
    ]
    allowed = words_of(msgs[-1]["content"])
    for t in texts(msgs, max_tokens=40):
        assert t.startswith("[simulated] ")
        assert words_of(t.removeprefix("[simulated] ")) <= allowed


def test_without_words_the_fixed_vocabulary_is_used() -> None:
    t = text("1234 5678 ???", max_tokens=20)
    assert t.startswith("[simulated] ") and len(t.split()) > 2


@pytest.mark.parametrize(
    ("prompt", "low", "high"),
    [
        ("Summarize the history of tea in 40 words.", 36, 44),
        ("Describe a sunrise in at most 12 words.", 6, 12),
        ("Write at least 30 words about rivers.", 30, 40),
        ("Describe the moon in a 25-word sentence.", 22, 28),
    ],
)
def test_a_length_in_words_is_honoured(prompt: str, low: int, high: int) -> None:
    for seed in SEEDS:
        choice = chat(prompt, seed=seed, max_tokens=500)[0]
        n = len(str(choice.content).split()) - 1
        assert low <= n <= high
        assert choice.tokens == n


def test_a_length_in_sentences_is_honoured() -> None:
    for t in texts("Explain photosynthesis in three sentences.", max_tokens=500):
        body = t.removeprefix("[simulated] ")
        assert len(re.findall(r"[.]( |$)", body)) == 3, body


def test_max_tokens_always_wins() -> None:
    for prompt, max_tokens in [
        ("Summarize the history of tea in 400 words.", 50),
        (render(PC.RUBRICS, {"use_case": "a", "skills": "b", "k": 10}), 20),
        ("Tell me a story.", 7),
    ]:
        for seed in SEEDS:
            choice = chat(prompt, seed=seed, max_tokens=max_tokens)[0]
            n = len(str(choice.content).split()) - 1
            assert n <= max_tokens and choice.tokens == n
            if choice.finish_reason == "length":
                assert n == max_tokens


# ------------------------------------------------------------------------- JSON
def test_json_strings_use_the_prompt_and_answer_fields_use_listed_answers() -> None:
    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "label": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "level": {"enum": ["low", "high"]},
        },
        "required": ["reasoning", "label", "confidence", "level"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    prompt = "Classify the weather report as sunny, rainy or snowy.\nReport: grey clouds drift."
    allowed = words_of(prompt)
    labels = set()
    for seed in SEEDS:
        doc = json.loads(text(prompt, seed=seed, response_format=fmt))
        assert doc["reasoning"].startswith("[simulated] ")
        assert words_of(doc["reasoning"].removeprefix("[simulated] ")) <= allowed
        labels.add(doc["label"].removeprefix("[simulated] "))
        assert 0 <= doc["confidence"] <= 1 and doc["level"] in ("low", "high")
    assert labels == {"sunny", "rainy", "snowy"}
    # the only free string of a schema is the answer (respond's {"response": ...})
    only = {"type": "json_schema", "json_schema": {"name": "r", "schema": {
        "type": "object", "properties": {"response": {"type": "string"}},
        "required": ["response"]}}}  # fmt: skip
    assert json.loads(text(prompt, response_format=only))["response"].split()[-1] in {
        "sunny",
        "rainy",
        "snowy",
    }


# ----------------------------------------------------------------- determinism
def test_same_request_same_reply_and_random_mode_is_the_old_vocabulary() -> None:
    prompt = "Classify as spam or ham: free money now"
    assert texts(prompt) == texts(prompt)
    assert texts(prompt) != texts(prompt, max_tokens=255)  # another body, another digest
    old = texts("Tell me about volcanoes.", answers="random", max_tokens=30)
    from engine.sim.model import _VOCAB

    assert all(set(t.split()[1:]) <= set(_VOCAB) for t in old)
    assert all(texts(prompt, answers="random")[i] != texts(prompt)[i] for i in range(5))
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"answers": "echo"}, SimSettings)


def test_a_broken_format_still_gets_an_answer() -> None:
    """Odd prompts never crash the reader: each gets a labelled reply."""
    for prompt in [
        "", "<", "<1-", "[Start of", "between [Start of X] and", "Options:", "one of:",
        "Answer with", "1. <item>\n...", "[QUESTION] q [ANSWER] a [END]", "score 1 to",
        "Write two scores", "numbered", "x" * 20000, "\n" * 50, "(A) x",
    ]:  # fmt: skip
        got = text(prompt, max_tokens=16)
        assert got.startswith("[simulated]") and len(got.split()) <= 17
