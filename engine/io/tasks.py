"""SELF-GUIDE task files: this engine's format, the reference's task list, and
Natural-Instructions task files, read as they are.

Three shapes are recognised by content:

* **this engine's task file** (``.toml`` or ``.json`` object): ``instruction``,
  ``examples = [{input, output}]``, ``type``, ``labels``, ``noise_phrases``, ``name``;
* **the SELF-GUIDE reference's task list** (``NI_tasks/tasks.json`` of
  ``zhaochenyang20/Prompt2Model-Self-Distill``): a JSON list (or one object) of
  ``task_instruction``, ``task_name``, ``examples`` (one string of ``[input]="…"`` /
  ``[output]="…"`` blocks, parsed with the reference's own regular expression),
  ``optional_list`` (the task's noise phrases), ``metric`` and ``labels``. A list holds
  many tasks: one is picked by name (``[method.selfguide] task``). As in the reference, a
  task is a classification task exactly when it has labels;
* **a Natural-Instructions task** (``allenai/natural-instructions`` ``tasks/*.json``):
  ``Definition`` (a string or a list of strings), ``Positive Examples`` (the gold
  examples) and ``Instances``. The type is inferred: outputs drawn from at most 10
  distinct values that repeat (distinct <= half of all outputs) make a classification
  task whose labels are those values.

What could not be decided from the file (a reference task with ``exact_match`` and no
labels; an inferred type) is said in :attr:`LoadedTask.notes`; the config's ``task_type``
and ``labels`` override the file.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec

from ..errors import InputError

__all__ = (
    "LoadedTask",
    "Task",
    "TaskExample",
    "TaskType",
    "load_task",
    "match_label",
    "parse_reference_examples",
    "read_task",
)

TaskType = Literal["generation", "classification"]

_REFERENCE_EXAMPLE = re.compile(r'\[input\]="(.*?)"\s*\[output\]="(.*?)"', re.S)
"""The reference's parser (``prompt2model/output_annotator/vllm_prompt_based.py``)."""

_MAX_LABELS = 10


class TaskExample(msgspec.Struct, frozen=True):
    """One gold example."""

    input: str
    output: str


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """A task: the instruction, gold examples, type and labels.

    Attributes:
        name: the task's name (default: the file's stem).
        instruction: the task instruction.
        examples: gold (input, output) pairs (the reference uses about 3).
        type: ``generation`` or ``classification``.
        labels: the classes (classification only; at least 2).
        noise_phrases: the task's extra noise phrases (the reference's ``optional_list``).
    """

    name: str = ""
    instruction: str
    examples: tuple[TaskExample, ...]
    type: TaskType = "generation"
    labels: tuple[str, ...] = ()
    noise_phrases: tuple[str, ...] = ()


class LoadedTask(msgspec.Struct, frozen=True, kw_only=True):
    """A task and what reading it decided.

    Attributes:
        task: the task.
        format: ``engine``, ``selfguide_reference`` or ``natural_instructions``.
        notes: what was inferred and what the user may need to set.
    """

    task: Task
    format: str
    notes: tuple[str, ...] = ()


def match_label(output: str, labels: Sequence[str]) -> str | None:
    """The label ``output`` stands for, the way the reference maps outputs.

    Case-sensitive and whole-label: an output equal to a label (after stripping) is that
    label; otherwise the first label, in the task's order, that occurs in the output as a
    whole word (not inside a longer word), so with labels ``E, C, N`` the answer
    ``The answer is N.`` is ``N`` and ``Neutral`` is none; with ``1, 2, 3``, ``12`` is none.
    """
    text = output.strip()
    for label in labels:
        if text == label.strip():
            return label.strip()
    for label in labels:
        core = label.strip()
        if core and re.search(rf"(?<!\w){re.escape(core)}(?!\w)", text):
            return core
    return None


def parse_reference_examples(text: str) -> tuple[TaskExample, ...]:
    """``[input]="…"`` / ``[output]="…"`` blocks, with the reference's regex."""
    return tuple(TaskExample(i, o) for i, o in _REFERENCE_EXAMPLE.findall(text))


def _fail(where: str, reason: str, line: int | None = None) -> InputError:
    return InputError(reason, path=where, line=line)


def _field_of(exc: msgspec.ValidationError) -> str:
    msg = str(exc)
    path = msg.rsplit("at `$", 1)[1].rstrip("`").lstrip(".") if "at `$" in msg else ""
    missing = re.search(r"missing required field `([^`]+)`", msg)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or "(top level)"


def _engine_task(doc: Mapping[str, object], where: str) -> Task:
    try:
        return msgspec.convert(doc, Task)
    except msgspec.ValidationError as exc:
        reason = str(exc).split(" - at `", 1)[0]
        raise _fail(where, f"field {_field_of(exc)}: {reason}") from exc


def _reference_task(entry: object, where: str, i: int) -> tuple[Task, list[str]]:
    field = f"[{i}]" if i >= 0 else ""
    if not isinstance(entry, dict):
        raise _fail(where, f"task list entry {field or 0} is not an object")
    for key in ("task_instruction", "examples"):
        if not isinstance(entry.get(key), str):
            raise _fail(where, f"field {field}.{key}: missing or not a string".lstrip("."))
    name = str(entry.get("task_name") or "")
    examples = parse_reference_examples(entry["examples"])
    if not examples:
        raise _fail(
            where,
            f'task {name!r}: examples hold no [input]="..." [output]="..." block',
        )
    labels = entry.get("labels") or []
    optional = entry.get("optional_list") or []
    if not all(isinstance(x, str) for x in [*labels, *optional]):
        raise _fail(where, f"task {name!r}: labels and optional_list must be strings")
    notes: list[str] = []
    if not labels and entry.get("metric") == "exact_match":
        outs = list(dict.fromkeys(e.output.strip() for e in examples))
        notes.append(
            f"task {name!r} is scored by exact match but has no labels, so it runs as a "
            "generation task (as in the reference); if it is a classification task, set "
            f'[method.selfguide] task_type = "classification" and labels (its examples\' '
            f"outputs are {outs})"
        )
    task = Task(
        name=name,
        instruction=entry["task_instruction"],
        examples=examples,
        type="classification" if labels else "generation",
        labels=tuple(labels),
        noise_phrases=tuple(optional),
    )
    return task, notes


def _ni_task(doc: Mapping[str, object], where: str, stem: str) -> tuple[Task, list[str]]:
    definition = doc.get("Definition")
    if isinstance(definition, list):
        definition = "\n".join(str(d) for d in definition)
    if not isinstance(definition, str) or not definition.strip():
        raise _fail(where, "field Definition: missing or empty")
    pos = doc.get("Positive Examples")
    if not isinstance(pos, list) or not pos:
        raise _fail(where, "field Positive Examples: missing or empty")
    examples: list[TaskExample] = []
    for i, ex in enumerate(pos):
        if not isinstance(ex, dict) or not isinstance(ex.get("input"), str):
            raise _fail(where, f"field Positive Examples[{i}].input: missing or not a string")
        out = ex.get("output")
        if isinstance(out, list):
            out = out[0] if out else None
        if not isinstance(out, str):
            raise _fail(where, f"field Positive Examples[{i}].output: missing or not a string")
        examples.append(TaskExample(ex["input"], out))
    outputs = [e.output.strip() for e in examples]
    found = doc.get("Instances")
    instances = found if isinstance(found, list) else []
    for inst in instances:
        if isinstance(inst, dict):
            outs = inst.get("output")
            got = outs if isinstance(outs, list) else [outs]
            outputs.extend(o.strip() for o in got if isinstance(o, str))
    distinct = list(dict.fromkeys(outputs))
    notes: list[str] = []
    labels: tuple[str, ...] = ()
    if 2 <= len(distinct) <= _MAX_LABELS and len(distinct) * 2 <= len(outputs):
        labels = tuple(distinct)
        notes.append(
            f"Natural-Instructions task read as classification with labels {list(labels)} "
            f"(the distinct outputs of its examples and {len(instances)} "
            "instances); set [method.selfguide] task_type and labels to override"
        )
    else:
        notes.append(
            "Natural-Instructions task read as a generation task (its outputs do not repeat "
            'over a few values); set [method.selfguide] task_type = "classification" and '
            "labels if it is one"
        )
    name = stem
    task = Task(
        name=name,
        instruction=definition,
        examples=tuple(examples),
        type="classification" if labels else "generation",
        labels=labels,
    )
    return task, notes


def _pick(doc: Sequence[object], where: str, want: str | None) -> tuple[object, int]:
    names = [str(e.get("task_name", "")) if isinstance(e, dict) else "" for e in doc]
    if want is None:
        if len(doc) == 1:
            return doc[0], 0
        raise _fail(
            where,
            f"the file lists {len(doc)} tasks; pick one with [method.selfguide] task = NAME "
            f"(names: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''})",
        )
    if want not in names:
        raise _fail(where, f"no task named {want!r} (names: {', '.join(names[:20])})")
    i = names.index(want)
    return doc[i], i


def _check(task: Task, where: str) -> None:
    if not task.instruction.strip():
        raise _fail(where, "field instruction: must not be empty")
    if not task.examples:
        raise _fail(where, "field examples: at least one {input, output} example needed")
    for i, ex in enumerate(task.examples):
        if not ex.input.strip():
            raise _fail(where, f"field examples[{i}].input: must not be empty")
        if not ex.output.strip():
            raise _fail(where, f"field examples[{i}].output: must not be empty")
    if task.type == "classification":
        labels = [lb for lb in task.labels if lb.strip()]
        if len({lb.strip() for lb in labels}) < 2:
            raise _fail(where, "field labels: a classification task needs at least 2 labels")
        for i, ex in enumerate(task.examples):
            if match_label(ex.output, labels) is None:
                raise _fail(
                    where,
                    f"field examples[{i}].output: {ex.output!r} is none of the labels "
                    f"{labels} (labels match case-sensitively, as whole words)",
                )
    elif task.labels:
        raise _fail(where, "field labels: only a classification task has labels")


def load_task(
    path: Path,
    *,
    name: str | None = None,
    task_type: TaskType | None = None,
    labels: Sequence[str] | None = None,
) -> Task:
    """The task of :func:`read_task` (same arguments and errors)."""
    return read_task(path, name=name, task_type=task_type, labels=labels).task


def read_task(
    path: Path,
    *,
    name: str | None = None,
    task_type: TaskType | None = None,
    labels: Sequence[str] | None = None,
) -> LoadedTask:
    """Read a task file in any of the three shapes (see the module docstring).

    Args:
        path: the file.
        name: the task to pick from a reference task list.
        task_type: overrides the file's (or the inferred) type.
        labels: override the file's (or the inferred) labels.

    Raises:
        InputError: the file cannot be read or parsed, or a field is missing or wrong
            (the message names the file, the field, and what to set).
    """
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(where, f"cannot read task file ({exc})") from exc
    is_json = path.suffix.lower() == ".json"
    try:
        doc: object = json.loads(text) if is_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(where, f"task file is not valid JSON ({exc.msg})", exc.lineno) from exc
    except tomllib.TOMLDecodeError as exc:
        raise _fail(where, f"task file is not valid TOML ({exc})") from exc
    notes: list[str] = []
    if isinstance(doc, list):
        entry, i = _pick(doc, where, name)
        task, notes = _reference_task(entry, where, i)
        fmt = "selfguide_reference"
    elif isinstance(doc, dict) and "task_instruction" in doc:
        task, notes = _reference_task(doc, where, -1)
        fmt = "selfguide_reference"
    elif isinstance(doc, dict) and ("Definition" in doc or "Positive Examples" in doc):
        task, notes = _ni_task(doc, where, path.stem)
        fmt = "natural_instructions"
    elif isinstance(doc, dict):
        task = _engine_task(doc, where)
        fmt = "engine"
    else:
        raise _fail(where, "task file must hold an object or a list of tasks")
    if name is not None and fmt != "selfguide_reference" and name != (task.name or path.stem):
        notes.append(f"task = {name!r} ignored: the file holds one task")
    if task_type is not None or labels is not None:
        new_type = task_type or ("classification" if labels else task.type)
        new_labels = tuple(labels) if labels is not None else task.labels
        if new_type == "generation":
            new_labels = ()
        task = msgspec.structs.replace(task, type=new_type, labels=new_labels)
        notes = [n for n in notes if "set [method.selfguide]" not in n]
    if not task.name:
        task = msgspec.structs.replace(task, name=path.stem)
    spaced = [lb for lb in task.labels if lb != lb.strip()]
    if spaced:
        notes.append(f"labels {spaced} have surrounding spaces; they are used without them")
        task = msgspec.structs.replace(task, labels=tuple(lb.strip() for lb in task.labels))
    _check(task, where)
    return LoadedTask(task=task, format=fmt, notes=tuple(notes))
