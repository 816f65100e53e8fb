"""Training rows: every method's kept rows as chat ``messages``, with a few typed columns.

Each method writes its own columns (instruction/response, question/answer,
instruction + input/output); training tools read one form, the conversational
``messages`` list of ``{"role", "content"}`` turns that TRL documents (its
``docs/source/dataset_formats.md``, "Conversational" and "Language modeling") and that
InstructLab's training library takes as ``data_path`` ("expected to be in the messages
format"). :class:`RowConverter` turns a method's rows into that form:

* **codeclm**, **respond**: user = ``instruction``, assistant = ``response``.
* **backtranslation** (Humpback): the row's system prompt first (S_w, "Answer with
  knowledge from web search.", kept on every kept row; its ``training_mix`` adds the
  seed pairs tagged S_a), then instruction and response.
* **selfguide**: user = the task ``instruction``, a blank line, the generated ``input``;
  assistant = the voted ``output``.
* **lab**: InstructLab SDG's sample (:func:`engine.methods.lab.mix.training_sample`: its
  system prompt, the context before the question for grounded skills and knowledge,
  ``unmask`` for knowledge); its derived phase sets already hold ``messages``.

A row that would give an empty turn is left out and counted by reason (the exporter
reports it and writes it on the card): TRL and InstructLab train on every turn's
content, and an empty assistant turn teaches the model to say nothing.

Columns (:data:`COMMON_COLUMNS` plus the method's own in :data:`METHOD_COLUMNS`) have
one type each, so JSONL, Parquet and Arrow hold the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..errors import InputError
from ..methods.backtranslation.prompts import S_W
from ..methods.lab.mix import SDG_SYSTEM_PROMPT, training_sample

__all__ = (
    "COMMON_COLUMNS",
    "METHOD_COLUMNS",
    "ROLES",
    "ColumnType",
    "RowConverter",
    "columns_for",
    "conversation_problem",
)

ColumnType = Literal["string", "bool", "float64", "int64", "messages"]
"""A column's type, named as ``datasets`` names its dtypes (``messages``: a list of
``{role, content}`` strings)."""

ROLES = ("system", "user", "assistant")

COMMON_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("id", "string"),
    ("messages", "messages"),
    ("source", "string"),
    ("simulated", "bool"),
)
"""Every export's columns: the row id, the conversation, where it came from (the
output's ``source``), and whether a simulated endpoint wrote it."""

METHOD_COLUMNS: dict[str, tuple[tuple[str, ColumnType], ...]] = {
    "codeclm": (
        ("origin", "string"),
        ("response_source", "string"),
        ("iteration", "int64"),
        ("gap", "float64"),
    ),
    "backtranslation": (("origin", "string"), ("tag", "string"), ("score", "float64")),
    "selfguide": (("task", "string"), ("label", "string")),
    "lab": (
        ("leaf", "string"),
        ("kind", "string"),
        ("phase", "string"),
        ("dataset", "string"),
        ("unmask", "bool"),
    ),
    "respond": (("score", "float64"),),
}
"""Each method's own columns (null where a row has no value, e.g. a seed pair's score)."""


def columns_for(method: str) -> tuple[tuple[str, ColumnType], ...]:
    """The columns of ``method``'s export, in order."""
    return COMMON_COLUMNS + METHOD_COLUMNS.get(method, ())


def conversation_problem(messages: object) -> str | None:
    """Why ``messages`` is not a conversation to train on, or None when it is.

    The rule: a list of ``{"role", "content"}`` turns with string content that is not
    blank, an optional system turn first, then user and assistant turns alternating,
    starting with user and ending with assistant.
    """
    if not isinstance(messages, list) or not messages:
        return "no messages"
    expected = "user"
    for i, turn in enumerate(messages):
        if not isinstance(turn, Mapping):
            return f"turn {i} is not an object"
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            return f"turn {i} has role {role!r}"
        if not isinstance(content, str) or not content.strip():
            return f"empty {role} turn"
        if role == "system":
            if i != 0:
                return f"a system turn at position {i}"
            continue
        if role != expected:
            return f"turn {i} is {role}, expected {expected}"
        expected = "assistant" if role == "user" else "user"
    if expected != "user":
        return "it does not end with an assistant turn"
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [
        {"role": role, "content": content} for role, content in pairs if role != "system" or content
    ]


class RowConverter:
    """Turns one method's rows into training rows (see the module doc).

    Args:
        method: the output's method (``manifest.method``).
        config: the output's ``config.json`` (None when the output predates it): the
            system prompts of LAB and backtranslation come from it.
        simulated: the manifest's flag, for rows that do not carry their own.

    Raises:
        InputError: ``method`` is not one this exporter knows.
    """

    def __init__(
        self, method: str, config: Mapping[str, object] | None, *, simulated: bool
    ) -> None:
        if method not in METHOD_COLUMNS:
            raise InputError(
                f"no export for method {method!r} (known: {', '.join(sorted(METHOD_COLUMNS))})"
            )
        self.method = method
        self.columns = columns_for(method)
        self.simulated = simulated
        settings = _method_settings(config, method)
        mix = settings.get("mix")
        self.lab_system = _text(mix.get("system_prompt") if isinstance(mix, Mapping) else None)
        self.lab_system = self.lab_system or SDG_SYSTEM_PROMPT
        self.web_tag = _text(settings.get("tag")) or S_W

    def convert(self, row: Mapping[str, object]) -> tuple[dict[str, Any] | None, str | None]:
        """``(training row, None)``, or ``(None, reason)`` for a row left out."""
        if "messages" in row:  # a derived set (LAB phase sets, Humpback's training mix)
            turns = row["messages"]
            messages = [
                {"role": _text(t.get("role")), "content": _text(t.get("content"))}
                for t in (turns if isinstance(turns, list) else ())
                if isinstance(t, Mapping)
            ]
            values: dict[str, object] = dict(row)
            values.setdefault("source", row.get("source_id"))
        else:
            try:
                messages, values = self._chat(row)
            except (KeyError, TypeError, AttributeError) as exc:
                return None, f"malformed {self.method} row ({type(exc).__name__}: {exc})"
        problem = conversation_problem(messages)
        if problem is not None:
            return None, problem
        out: dict[str, Any] = {}
        for name, kind in self.columns:
            value = values.get(name)
            if name == "messages":
                value = messages
            elif name == "simulated":
                value = value if isinstance(value, bool) else self.simulated
            elif kind == "string":
                value = value if isinstance(value, str) else None
            elif kind == "bool":
                value = value if isinstance(value, bool) else None
            elif kind == "float64":
                value = _float(value)
            elif kind == "int64":
                value = _int(value)
            out[name] = value
        if not out["id"]:
            return None, "no id"
        return out, None

    def _chat(self, row: Mapping[str, object]) -> tuple[list[dict[str, str]], dict[str, object]]:
        """The conversation of a method's own row, and the values of its columns."""
        values: dict[str, object] = dict(row)
        if self.method in ("codeclm", "respond"):
            turns = _turns(
                ("user", _text(row.get("instruction"))), ("assistant", _text(row.get("response")))
            )
            scores = row.get("scores")
            if isinstance(scores, Mapping):
                values["gap"] = scores.get("gap")
            return turns, values
        if self.method == "backtranslation":
            values.setdefault("origin", "augmented")
            system = _text(row.get("system")) or self.web_tag
            turns = _turns(
                ("system", system),
                ("user", _text(row.get("instruction"))),
                ("assistant", _text(row.get("response"))),
            )
            return turns, values
        if self.method == "selfguide":
            instruction, text = _text(row.get("instruction")), _text(row.get("input"))
            user = f"{instruction}\n\n{text}" if instruction.strip() and text.strip() else ""
            return _turns(("user", user), ("assistant", _text(row.get("output")))), values
        # lab
        sample = training_sample(dict(row), self.lab_system)
        values.update(dataset=sample["dataset"], unmask=sample["unmask"])
        return list(sample["messages"]), values


def _method_settings(config: Mapping[str, object] | None, method: str) -> Mapping[str, object]:
    if not isinstance(config, Mapping):
        return {}
    methods = config.get("method")
    settings = methods.get(method) if isinstance(methods, Mapping) else None
    return settings if isinstance(settings, Mapping) else {}
