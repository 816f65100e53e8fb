"""The dataset card (``README.md``) of an export, as the Hugging Face Hub reads it.

YAML metadata first (``pretty_name``, ``tags``, ``task_categories``,
``size_categories``, and ``configs`` naming the data files of the ``train`` split plus
``dataset_info.features`` with every column's type, so ``datasets.load_dataset(DIR)``
and the Hub load the export as written), then the card itself: a SIMULATED banner when
a simulated endpoint wrote the rows (and an INCOMPLETE one for an unfinished output),
the method and its paper, how each row became a conversation, the models per role, the
counts, the columns, how to load it, and the config the output was made with (from
``OUT/config.json``, secrets already redacted by the run).

Nothing on the card depends on the time or the machine beyond the recorded config, so
exporting the same output twice writes the same card (and a second push is a no-op).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import orjson
import yaml

from .rows import ColumnType
from .writers import ExportFile, Format

__all__ = ("PAPERS", "CardFacts", "render_card")

PAPERS: dict[str, tuple[str, str]] = {
    "codeclm": (
        "CodecLM: Aligning Language Models with Tailored Synthetic Data (Wang et al., "
        "NAACL 2024 Findings)",
        "https://arxiv.org/abs/2404.05875",
    ),
    "backtranslation": (
        "Self-Alignment with Instruction Backtranslation (Li et al., 2023; Humpback)",
        "https://arxiv.org/abs/2308.06259",
    ),
    "selfguide": (
        "SELF-GUIDE: Better Task-Specific Instruction Following via Self-Synthetic "
        "Finetuning (Zhao et al., 2024)",
        "https://arxiv.org/abs/2407.12874",
    ),
    "lab": (
        "LAB: Large-Scale Alignment for ChatBots (Sudalairaj et al., 2024; InstructLab)",
        "https://arxiv.org/abs/2403.01081",
    ),
}
"""Method -> (paper, link). ``respond`` is synth-engine's own pipeline and has none."""

_HOW = {
    "codeclm": "user: the instruction (after Self-Rubrics); assistant: the better of the "
    "strong and target answers (Contrastive Filtering).",
    "respond": "user: the seed instruction; assistant: the strong model's answer that the "
    "judge scored at or above the threshold.",
    "backtranslation": "system: the row's tag (S_w, `Answer with knowledge from web "
    "search.`; the training mix adds seed pairs tagged S_a, `Answer in the style of an AI "
    "Assistant.`); user: the backtranslated instruction; assistant: the web segment.",
    "selfguide": "user: the task instruction, a blank line, the generated input; "
    "assistant: the self-consistency vote's output.",
    "lab": "system: the config's `mix.system_prompt` (InstructLab SDG's default); user: "
    "the question, after its context (grounded skills) or document chunk (knowledge); "
    "assistant: the answer; `unmask` true for knowledge, as SDG's phase sets set it.",
}

_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)


class CardFacts(msgspec.Struct, kw_only=True):
    """What the card says.

    Attributes:
        method: the output's method.
        fmt: the export format.
        dataset: ``kept`` or the derived dataset exported.
        rows: training rows exported.
        skipped: rows left out, by reason.
        totals: the manifest's totals (items, kept, rejected, failed).
        simulated: a simulated endpoint wrote the rows.
        complete: the output is complete.
        stop_reason: why an incomplete output stopped.
        models: role -> models seen on the exported rows.
        config: the output's ``config.json`` (None: not recorded).
        config_hash: the manifest's config hash.
        engine_version: the synth-engine version that wrote the output.
        columns: the export's columns and types.
        files: the data files.
        repo_id: the Hub repository it is pushed to, if any (for the load snippet).
    """

    method: str
    fmt: Format
    dataset: str
    rows: int
    skipped: dict[str, int]
    totals: dict[str, int]
    simulated: bool
    complete: bool
    stop_reason: str | None = None
    models: dict[str, list[str]]
    config: object = None
    config_hash: str
    engine_version: str
    columns: Sequence[tuple[str, ColumnType]]
    files: list[ExportFile]
    repo_id: str | None = None


def _data_files(fmt: Format) -> str:
    return {"messages": "data/train.jsonl", "parquet": "data/train-*.parquet"}.get(
        fmt, "data-*.arrow"
    )


def _feature(name: str, kind: ColumnType) -> dict[str, object]:
    if kind == "messages":
        return {
            "name": name,
            "list": [{"name": "role", "dtype": "string"}, {"name": "content", "dtype": "string"}],
        }
    return {"name": name, "dtype": kind}


def _metadata(facts: CardFacts) -> dict[str, object]:
    tags = ["synthetic", "synth-engine", facts.method]
    if facts.simulated:
        tags.append("simulated")
    size = next((label for limit, label in _SIZES if facts.rows < limit), "n>100M")
    name = f"synth-engine {facts.method} ({facts.dataset})"
    if facts.simulated:
        name += " SIMULATED"
    return {
        "pretty_name": name,
        "tags": tags,
        "task_categories": ["text-generation"],
        "size_categories": [size],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": _data_files(facts.fmt)}],
            }
        ],
        "dataset_info": {
            "features": [_feature(name, kind) for name, kind in facts.columns],
        },
    }


def _models(facts: CardFacts) -> list[str]:
    if not facts.models:
        return ["(not recorded on the rows)"]
    return [f"| {role} | {', '.join(models)} |" for role, models in sorted(facts.models.items())]


def _load_snippet(facts: CardFacts) -> str:
    where = repr(facts.repo_id) if facts.repo_id else '"path/to/this/directory"'
    if facts.fmt == "hf" and not facts.repo_id:
        load = f"ds = datasets.load_from_disk({where})"
    else:
        load = f'ds = datasets.load_dataset({where}, split="train")'
    return "\n".join(
        [
            "```python",
            "import datasets",
            "",
            load,
            'print(ds[0]["messages"])',
            "",
            "# TRL: a conversational language-modeling dataset, ready for SFTTrainer",
            "# trainer = trl.SFTTrainer(model=..., train_dataset=ds)",
            "```",
        ]
    )


def render_card(facts: CardFacts) -> str:
    """The card's Markdown, YAML metadata included."""
    meta = yaml.safe_dump(_metadata(facts), sort_keys=False, allow_unicode=True)
    lines = ["---", meta.rstrip("\n"), "---", ""]
    title = f"# {facts.method}: {facts.rows} training conversations"
    lines += [title, ""]
    if facts.simulated:
        lines += [
            "> **SIMULATED.** These rows were written by synth-engine's simulated endpoint: "
            "the text is fake, made to test a pipeline offline. Do not train a model on it.",
            "",
        ]
    if not facts.complete:
        lines += [
            f"> **INCOMPLETE.** The output stopped before every item was done "
            f"({facts.stop_reason or 'interrupted'}); this export holds the rows committed "
            "so far (`--allow-incomplete`).",
            "",
        ]
    paper = PAPERS.get(facts.method)
    method_line = (
        f"[{paper[0]}]({paper[1]})" if paper else "synth-engine's own respond-and-judge pipeline"
    )
    dataset = (
        "its kept rows" if facts.dataset == "kept" else f"its derived dataset `{facts.dataset}`"
    )
    lines += [
        f"Made with synth-engine {facts.engine_version}, method "
        f"`{facts.method}`: {method_line}. This export holds {dataset} as chat `messages` "
        "(TRL's conversational format; InstructLab training's messages format).",
        "",
        "## How each row became a conversation",
        "",
        _HOW.get(facts.method, "user: the instruction; assistant: the response."),
        "",
        "## Models",
        "",
        "| role | model |",
        "|---|---|",
        *_models(facts),
        "",
        "## Counts",
        "",
        f"- items processed: {facts.totals.get('items', 0)}",
        f"- rows kept: {facts.totals.get('kept', 0)}, rejected: "
        f"{facts.totals.get('rejected', 0)}, failed: {facts.totals.get('failed', 0)}",
        f"- training conversations in this export: {facts.rows}",
    ]
    for reason, n in sorted(facts.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"- left out ({reason}): {n}")
    lines += [
        "",
        "## Columns",
        "",
        "| column | type |",
        "|---|---|",
        *[f"| `{name}` | {kind} |" for name, kind in facts.columns],
        "",
        "## Files",
        "",
        *[
            f"- `{f.name}`: {f.rows} rows, {f.bytes} bytes, sha256 `{f.sha256}`"
            for f in facts.files
        ],
        "",
        "## Load it",
        "",
        _load_snippet(facts),
        "",
        "## Licence",
        "",
        "Not set by synth-engine: the rows derive from the seeds or corpus given and from "
        "the models' outputs, so their terms decide. Add a `license:` to the YAML above "
        "before sharing.",
        "",
        "## The config it was made with",
        "",
        f"Config hash `{facts.config_hash}` (secrets are never recorded: keys are named by "
        "their environment variable).",
        "",
    ]
    if isinstance(facts.config, Mapping):
        text = orjson.dumps(facts.config, option=orjson.OPT_INDENT_2).decode()
        lines += ["```json", text, "```", ""]
    else:
        lines += ["(this output predates `config.json`; not recorded)", ""]
    return "\n".join(lines)
