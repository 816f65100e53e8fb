"""SELF-GUIDE's rule filters as the reference code applies them.

Reference: ``zhaochenyang20/Prompt2Model-Self-Distill``,
``prompt2model/quality_evaluator/{ablation_list_filter,self_consistency_filter}.py`` and
``self-guide/utils/output_annotation.py``:

* the noise ("ablation") filter drops a string that contains, case-sensitively, any of
  the reference's 14 greetings or one of the task's ``optional_list`` phrases. The
  reference extended its module-level list on every call (it grew without bound); here
  the phrases are copied once and never mutated;
* the vote counts whole outputs (after stripping), keeps the most frequent one, breaks a
  tie by the shortest and then by the first seen, and rejects the input when the top
  count over the surviving samples is below ``min_frequency``;
* in classification mode the winner is then mapped to a label (case-sensitive, whole
  label, :func:`engine.io.tasks.match_label`) and dropped when it names none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ..filters import LengthBounds, Vote

__all__ = ("GREETINGS", "NoiseFilter", "narrow_window", "reference_vote")

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
