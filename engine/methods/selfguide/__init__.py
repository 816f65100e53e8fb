"""SELF-GUIDE (Zhao et al., COLM 2024) on the public method API: a student model writes
new inputs for one task, then labels them itself with a self-consistency vote.

The package, one concept per module:

* :mod:`.config` — ``[method.selfguide]``, its per-type settings and checks;
* :mod:`.prompts` — the prompt templates and the chats built from them;
* :mod:`.rules` — the reference's filters, vote and label mapping;
* :mod:`.student` — the student model's calls;
* :mod:`.rounds` — input generation (``prepare``);
* :mod:`.rows` — the row schema and one Struct per row kind;
* :mod:`.report` — ``method_report``;
* :mod:`.pipeline` — :class:`SelfGuideMethod`, which composes them.

Docs: ``docs/methods/selfguide.md``.
"""

from __future__ import annotations

from ...io.tasks import Task, TaskExample, load_task
from .config import SelfGuideConfig, SelfGuideTemplates, refuses_extensions
from .pipeline import SelfGuideMethod
from .prompts import estimate_tokens, sample_pool
from .rows import COLUMNS, Candidate
from .rules import GREETINGS, INPUT_FILTERS, NoiseFilter, clean_reply, reference_vote

__all__ = (
    "COLUMNS",
    "GREETINGS",
    "INPUT_FILTERS",
    "Candidate",
    "NoiseFilter",
    "SelfGuideConfig",
    "SelfGuideMethod",
    "SelfGuideTemplates",
    "Task",
    "TaskExample",
    "clean_reply",
    "estimate_tokens",
    "load_task",
    "reference_vote",
    "refuses_extensions",
    "sample_pool",
)
