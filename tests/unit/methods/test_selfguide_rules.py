"""SELF-GUIDE's rules on the field's own task files: the whole-label, case-sensitive label
mapping, the reference's 14 greetings as a case-sensitive noise list, and the warning for a
length window too narrow to keep most generated texts.

The task files are the real ones under tests/fixtures/field/selfguide/ (Natural-Instructions
task190 with labels N/E/C; the SELF-GUIDE reference's tasks.json entries task200 with digit
labels, task020 with ``No.``/``Yes.`` and task1615 with space-padded labels); their source,
commit and licence are in tests/fixtures/field/README.md.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.filters import ExactDedup
from engine.io.tasks import Task, TaskExample, match_label, read_task
from engine.methods.selfguide.config import SelfGuideConfig, settings_for
from engine.methods.selfguide.rules import (
    GREETINGS,
    Annotation,
    InputFilters,
    NoiseFilter,
    Refused,
    Voted,
    narrow_window,
    noise_phrases,
)

FIELD = Path(__file__).resolve().parents[2] / "fixtures" / "field" / "selfguide"


def field_task(file: str, name: str | None = None) -> Task:
    return read_task(FIELD / file, name=name).task


# ------------------------------------------------------------------ labels
@pytest.fixture(scope="module")
def snli() -> Task:
    task = field_task("task190_snli_classification.json")
    assert sorted(task.labels) == ["C", "E", "N"]
    return task


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("N", "N"),
        ("  E \n", "E"),  # equal to a label after stripping
        ("The answer is N.", "N"),  # a substring match in label order (N, E, C) gave "E"
        ("C, because the two sentences disagree.", "C"),
        ("Neutral", None),  # "N" only inside a longer word
        ("Entailment", None),
        ("Contradiction.", None),
        ("the answer is n", None),  # case-sensitive
        ("e", None),
        ("", None),
    ],
)
def test_snli_outputs_map_to_whole_case_sensitive_labels(
    snli: Task, output: str, label: str | None
) -> None:
    assert match_label(output, snli.labels) == label


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("2", "2"),
        ("Choice 3.", "3"),
        ("12", None),  # neither 1 nor 2: digits inside a longer number
        ("31", None),
        ("1 or 2", "1"),  # the first label in the task's order that occurs
        ("2 or 1", "1"),
        ("4", None),
    ],
)
def test_digit_labels_are_whole_numbers(output: str, label: str | None) -> None:
    task = field_task("tasks.json", "task200")
    assert task.labels == ("1", "2", "3")
    assert match_label(output, task.labels) == label


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("Yes.", "Yes."),
        ("No.", "No."),
        ("The answer is Yes.", "Yes."),
        ("yes.", None),  # case-sensitive
        ("YES.", None),
        ("Nope.", None),
    ],
)
def test_labels_with_punctuation_match_whole(output: str, label: str | None) -> None:
    task = field_task("tasks.json", "task020")
    assert task.labels == ("No.", "Yes.")
    assert match_label(output, task.labels) == label


def test_space_padded_labels_are_matched_without_their_spaces() -> None:
    loaded = read_task(FIELD / "tasks.json", name="task1615")
    labels = loaded.task.labels
    assert labels == ("B_entails_A", "B_neutral_A", "B_contradicts_A")
    assert any("surrounding spaces" in n for n in loaded.notes)
    assert match_label(" B_neutral_A", labels) == "B_neutral_A"
    assert match_label("so: B_contradicts_A", labels) == "B_contradicts_A"
    assert match_label("B_entails_AB", labels) is None
    assert match_label("b_entails_a", labels) is None


def test_every_gold_output_of_the_field_tasks_names_its_own_label() -> None:
    for file, name in [
        ("task190_snli_classification.json", None),
        ("tasks.json", "task200"),
        ("tasks.json", "task020"),
        ("tasks.json", "task1615"),
    ]:
        task = field_task(file, name)
        for ex in task.examples:
            assert match_label(ex.output, task.labels) == ex.output.strip(), (name, ex.output)


def test_the_vote_winner_is_mapped_after_the_vote(snli: Task) -> None:
    cfg = SelfGuideConfig(output_length_filter=False)
    annotation = Annotation(cfg, snli, InputFilters(cfg, snli, settings_for(cfg, snli.type)))
    voted = annotation.decide(["The answer is N."] * 3 + ["E"], requested="E")
    assert isinstance(voted, Voted)
    assert (voted.label, voted.output, voted.label_changed) == ("N", "N", True)
    refused = annotation.decide(["Neutral"] * 4, requested="N")
    assert isinstance(refused, Refused) and refused.filter == "label"
    assert "names no label" in refused.reason


# ------------------------------------------------------------------ noise
REFERENCE_GREETINGS = (
    # zhaochenyang20/Prompt2Model-Self-Distill @ 12a704ce0057153fdf49da1c8fa0a49602decae8,
    # prompt2model/quality_evaluator/ablation_list_filter.py, ``greetings`` (Apache-2.0).
    "Sure, I'd be happy to help!",
    "Of course!",
    "Let me check on that.",
    "I'm here to help.",
    "Great question!",
    "Let me see.",
    "That's a good question.",
    "Thanks for asking.",
    "Let me help you with that.",
    "No problem, here's the answer.",
    "I'm glad you asked.",
    "Alright, let me explain.",
    "Absolutely!",
    "I understand your question.",
)


def test_greetings_are_the_references_fourteen() -> None:
    assert GREETINGS == REFERENCE_GREETINGS
    assert len(GREETINGS) == 14


def _filters(task: Task, **cfg: object) -> InputFilters:
    config = SelfGuideConfig(input_length_filter=False, output_length_filter=False, **cfg)  # type: ignore[arg-type]
    return InputFilters(config, task, settings_for(config, task.type))


@pytest.mark.parametrize("greeting", REFERENCE_GREETINGS)
def test_each_greeting_drops_an_input_that_contains_it(snli: Task, greeting: str) -> None:
    filters = _filters(snli)
    text = f"Sentence 1: A man sleeps. {greeting} Sentence 2: Nobody sleeps."
    assert filters.check(text, ExactDedup()) == ("noise", f"contains noise phrase {greeting!r}")
    assert filters.check(text.replace(greeting, greeting.upper()), ExactDedup()) is None


@pytest.mark.parametrize(
    "text",
    [
        "Here is a sentence pair. Sentence 1: A dog runs. Sentence 2: An animal moves.",
        "Where is the cat? Sentence 1: The cat is on the mat. Sentence 2: The mat is empty.",
        "of course! Sentence 1: It rains. Sentence 2: The ground is dry.",
        "As an AI, Sentence 1: It snows. Sentence 2: It is cold.",
    ],
)
def test_phrases_outside_the_references_list_are_kept(snli: Task, text: str) -> None:
    assert _filters(snli).check(text, ExactDedup()) is None


def test_the_tasks_optional_list_is_added_and_nothing_is_extended() -> None:
    task = field_task("tasks.json", "task020")
    assert task.noise_phrases == ("input", "output", "\n\n", "\\_\\_")
    cfg = SelfGuideConfig(noise_phrases=("banned",))
    phrases = noise_phrases(cfg, task)
    assert phrases == (*REFERENCE_GREETINGS, "input", "output", "\n\n", "\\_\\_", "banned")
    noise = NoiseFilter(phrases)
    assert noise.check("Sentence: x\n\nQuestion: y") == "contains noise phrase '\\n\\n'"
    assert noise.check("the output is") is not None and noise.check("Output it") is None
    for _ in range(3):  # the reference extended its global list on every call
        noise_phrases(cfg, task)
    assert GREETINGS == REFERENCE_GREETINGS and noise_phrases(cfg, task) == phrases
    without = noise_phrases(msgspec.structs.replace(cfg, default_noise_phrases=False), task)
    assert without == ("input", "output", "\n\n", "\\_\\_", "banned")


def test_noise_filter_off_keeps_greetings(snli: Task) -> None:
    filters = _filters(snli, noise_filter=False)
    assert filters.noise is None
    assert filters.check("Of course! Sentence 1: a. Sentence 2: b.", ExactDedup()) is None


# ------------------------------------------------------------------ narrow window
def test_two_gold_inputs_of_nearly_one_length_warn_of_a_narrow_window() -> None:
    task = field_task("tasks.json", "task020")  # gold inputs of 135 and 129 characters
    cfg = SelfGuideConfig(input_length_filter=True, output_length_filter=False)
    filters = InputFilters(cfg, task, settings_for(cfg, task.type))
    assert filters.input_length is not None
    low, high = round(filters.input_length.low), round(filters.input_length.high)
    assert (low, high) == (126, 138)  # mean 132 ± 2 * 3
    [warning] = filters.warnings
    assert warning.startswith(f"input length filter keeps only lengths {low}..{high} chars")
    assert "2 gold example(s), mean 132" in warning
    assert "most generated texts will be dropped" in warning
    assert "set input_length_filter = false or add examples" in warning
    # and the window does drop an ordinary input a little shorter than the gold ones
    assert filters.check("x" * 120, ExactDedup()) == ("length", "too short (120 < 126 chars)")


def test_a_wide_window_gives_no_warning() -> None:
    task = field_task("tasks.json", "task200")  # gold inputs of 344, 175 and 321 characters
    cfg = SelfGuideConfig(input_length_filter=True, output_length_filter=False)
    filters = InputFilters(cfg, task, settings_for(cfg, task.type))
    assert filters.input_length is not None and filters.warnings == []


def test_narrow_window_threshold_is_half_the_mean_length() -> None:
    def task_of(lengths: list[int]) -> Task:
        examples = tuple(TaskExample("x" * n, "out") for n in lengths)
        return Task(instruction="i", examples=examples, type="generation")

    cfg = SelfGuideConfig(input_length_filter=True, output_length_filter=False)
    for lengths, warns in [([100, 100], True), ([80, 120], False), ([94, 106], True)]:
        task = task_of(lengths)
        filters = InputFilters(cfg, task, settings_for(cfg, task.type))
        assert filters.input_length is not None
        assert bool(narrow_window(filters.input_length, lengths)) is warns, lengths
        assert bool(filters.warnings) is warns, lengths
    # output windows warn under their own name
    task = Task(
        instruction="i",
        examples=(TaskExample("a", "y" * 50), TaskExample("bbbbbbbbbbbbbbbbbbbb", "z" * 50)),
        type="generation",
    )
    out_cfg = SelfGuideConfig(input_length_filter=False, output_length_filter=True)
    [warning] = InputFilters(out_cfg, task, settings_for(out_cfg, task.type)).warnings
    assert warning.startswith("output length filter keeps only lengths")
    assert "set output_length_filter = false" in warning


def test_the_narrow_window_warning_reaches_the_report_and_validate(tmp_path: Path) -> None:
    from tests.unit.methods.test_selfguide import CLS_TASK, make

    # CLS_TASK's gold inputs are 9 characters each; classification filters input length
    method, _ = make(tmp_path, lambda c, p, i: ["positive"], task=CLS_TASK)
    assert any(w.startswith("input length filter keeps only lengths") for w in method.warnings)
    assert method.report()["warnings"] == method.warnings
    assert method.ctx is not None
    check = method.check_input(method.ctx)  # what `validate` prints
    assert check.items_ok == 1
    assert any("input length filter keeps only" in w.message for w in check.warnings)
