"""SELF-GUIDE's rule filters and vote, as the reference code applies them.

Reference: ``zhaochenyang20/Prompt2Model-Self-Distill``,
``prompt2model/quality_evaluator/{ablation_list_filter,self_consistency_filter}.py`` and
``self-guide/utils/output_annotation.py``:

* a generated input is cleaned (:func:`clean_reply`), then passes the input filters in
  order: empty -> length (optional) -> noise -> exact dedup against every accepted input
  (:class:`InputFilters`);
* the noise ("ablation") filter drops a string that contains, case-sensitively, any of
  the reference's 14 greetings or one of the task's ``optional_list`` phrases. The
  reference extended its module-level list on every call (it grew without bound); here
  the phrases are copied once and never mutated;
* each annotation sample passes the output filters (empty -> length, optional -> noise);
  the vote counts whole outputs (after stripping), keeps the most frequent one, breaks a
  tie by the shortest and then by the first seen, and rejects the input when the top
  count over the surviving samples is below ``min_frequency``;
* in classification mode the winner is then mapped to a label (case-sensitive, whole
  label, :func:`engine.io.tasks.match_label`) and dropped when it names none
  (:class:`Annotation`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import msgspec

from ...filters import ExactDedup, LengthBounds, Vote
from ...io.tasks import Task, match_label
from .config import SelfGuideConfig, Settings
from .rows import Votes

__all__ = (
    "GREETINGS",
    "INPUT_FILTERS",
    "Annotation",
    "InputFilters",
    "NoiseFilter",
    "Refused",
    "Voted",
    "clean_reply",
    "narrow_window",
    "noise_phrases",
    "reference_vote",
)

GREETINGS: tuple[str, ...] = (
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
"""The reference's ``greetings`` list, verbatim."""

INPUT_FILTERS: tuple[str, ...] = ("empty", "length", "noise", "duplicate")
"""Input filters in the order they apply (the rejected rows' ``filter`` values)."""


def clean_reply(text: str) -> str:
    """A generated input, stripped of surrounding space, quotes and a ``[input]=`` echo."""
    out = text.strip()
    for prefix in ("[input]=", "[input] =", "[input]:"):
        if out.lower().startswith(prefix):
            out = out[len(prefix) :].strip()
    if len(out) >= 2 and out[0] == out[-1] == '"':
        out = out[1:-1].strip()
    return out


class NoiseFilter:
    """Drop text containing any phrase (case-sensitive substring, as the reference)."""

    __slots__ = ("phrases",)

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases: tuple[str, ...] = tuple(dict.fromkeys(p for p in phrases if p))

    def check(self, text: str) -> str | None:
        """None if kept, else the drop reason naming the phrase."""
        for phrase in self.phrases:
            if phrase in text:
                return f"contains noise phrase {phrase!r}"
        return None


def noise_phrases(cfg: SelfGuideConfig, task: Task) -> tuple[str, ...]:
    """The noise phrases in use: the greetings (``default_noise_phrases``), the task's,
    the config's (a fresh tuple; nothing global is extended)."""
    base = GREETINGS if cfg.default_noise_phrases else ()
    return tuple(dict.fromkeys((*base, *task.noise_phrases, *cfg.noise_phrases)))


def reference_vote(samples: Sequence[str], *, min_frequency: float) -> Vote:
    """The reference's self-consistency vote over whole outputs (see the module doc)."""
    cleaned = [s.strip() for s in samples if s.strip()]
    if not cleaned:
        return Vote(None, 0, 0)
    counts = Counter(cleaned)  # insertion order = first seen
    top = max(counts.values())
    winner = min((s for s, c in counts.items() if c == top), key=len)
    vote = Vote(winner, top, len(cleaned))
    if vote.frequency < min_frequency:
        vote.winner = None
    return vote


def narrow_window(bounds: LengthBounds, lengths: Sequence[int]) -> str | None:
    """Why a length window would drop most inputs, or None when it looks wide enough.

    The window is mean ± k·σ of a handful of gold examples; when they have (nearly) the
    same length the window is only a few characters wide and most generated texts miss
    it. "Too narrow" means narrower than half the mean gold length.
    """
    if not lengths:
        return None
    mean = sum(lengths) / len(lengths)
    width = bounds.high - bounds.low
    if width < 0.5 * mean:
        return (
            f"keeps only lengths {max(0, round(bounds.low))}..{round(bounds.high)} chars "
            f"(mean ± k·σ of {len(lengths)} gold example(s), mean {mean:.0f}): most generated "
            "texts will be dropped"
        )
    return None


def _length_filter(texts: Sequence[str], k: float, name: str, warnings: list[str]) -> LengthBounds:
    bounds = LengthBounds.from_examples(texts, k)
    why = narrow_window(bounds, [len(t) for t in texts])
    if why:
        warnings.append(
            f"{name} length filter {why}; set {name}_length_filter = false or add examples"
        )
    return bounds


class InputFilters:
    """The filters of a task's inputs and outputs (the module docstring's order).

    Attributes:
        input_length: the input length window, None when off.
        output_length: the output length window, None when off.
        noise: the noise phrase filter, None when off.
        warnings: what the user should know (a window that drops most texts).
    """

    def __init__(self, cfg: SelfGuideConfig, task: Task, settings: Settings) -> None:
        self.warnings: list[str] = []
        k = cfg.length_sd
        self.input_length: LengthBounds | None = None
        self.output_length: LengthBounds | None = None
        if settings["input_length_filter"]:
            texts = [e.input for e in task.examples]
            self.input_length = _length_filter(texts, k, "input", self.warnings)
        if settings["output_length_filter"]:
            texts = [e.output for e in task.examples]
            self.output_length = _length_filter(texts, k, "output", self.warnings)
        self.noise = NoiseFilter(noise_phrases(cfg, task)) if cfg.noise_filter else None

    def check(self, text: str, dedup: ExactDedup) -> tuple[str, str] | None:
        """(filter, reason) of the first input filter that drops ``text``, else None.

        A kept text is added to ``dedup``.
        """
        if not text.strip():
            return "empty", "empty input"
        if self.input_length is not None:
            why = self.input_length.check(text)
            if why:
                return "length", why
        if self.noise is not None:
            why = self.noise.check(text)
            if why:
                return "noise", why
        if not dedup.add(text):
            return "duplicate", "duplicated input"
        return None

    def output_drop(self, sample: str) -> str | None:
        """The output filter that drops one annotation sample, else None."""
        if not sample:
            return "empty"
        if self.output_length is not None and self.output_length.check(sample):
            return "length"
        if self.noise is not None and self.noise.check(sample):
            return "noise"
        return None


class Voted(msgspec.Struct, frozen=True, kw_only=True):
    """An input the vote kept: its output (classification: the label) and the vote."""

    output: str
    votes: Votes
    single_vote: bool
    label: str | None = None
    label_changed: bool | None = None


class Refused(msgspec.Struct, frozen=True):
    """An input the annotation rejected: the step (``filter``) and why."""

    filter: str
    reason: str


class Annotation:
    """Output filters, the vote over whole outputs, then (classification) the label
    mapping, in the reference's order.

    Attributes:
        samples_dropped: samples the output filters dropped, by filter.
    """

    def __init__(self, cfg: SelfGuideConfig, task: Task, filters: InputFilters) -> None:
        self.min_frequency = cfg.min_frequency
        self.min_votes = cfg.min_votes
        self.labels = task.labels if task.type == "classification" else None
        self.filters = filters
        self.samples_dropped: Counter[str] = Counter()

    def decide(self, samples: Sequence[str], requested: str | None = None) -> Voted | Refused:
        """What the samples of one input make of it."""
        survivors: list[str] = []
        for s in samples:
            dropped = self.filters.output_drop(s)
            if dropped is None:
                survivors.append(s)
            else:
                self.samples_dropped[dropped] += 1
        if not survivors:
            return Refused("output_filters", f"none of {len(samples)} outputs passed the filters")
        v = reference_vote(survivors, min_frequency=self.min_frequency)
        if v.winner is None:
            return Refused(
                "min_frequency",
                f"top output has {v.top}/{v.total} votes "
                f"({v.frequency:.2f} < min_frequency {self.min_frequency:g})",
            )
        if v.top < self.min_votes:
            return Refused(
                "min_votes",
                f"top output has {v.top} vote(s) of {v.total} surviving "
                f"(< min_votes {self.min_votes})",
            )
        votes = Votes(top=v.top, survivors=v.total, samples=len(samples))
        if self.labels is None:
            return Voted(output=v.winner, votes=votes, single_vote=v.top == 1)
        label = match_label(v.winner, self.labels)
        if label is None:
            return Refused("label", f"the voted output {v.winner[:80]!r} names no label")
        return Voted(
            output=label,
            votes=votes,
            single_vote=v.top == 1,
            label=label,
            label_changed=requested is not None and label != requested,
        )
