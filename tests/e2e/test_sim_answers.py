"""Dry runs on the simulated endpoint, which answers from the prompt: a user's own
classification task keeps rows, and every method's text-mode replies parse.

Through the CLI in a subprocess, with configs and inputs written by the test.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from engine.io.tasks import match_label
from tests.conftest import CONFIGS, run_cli

LABELS = ("positive", "negative", "neutral")
REVIEWS = [
    "The battery died after two days and support never answered.",
    "Arrived on time. It works.",
    "Best headphones I have owned: warm sound, comfy pads, great value.",
    "The colour is a little off from the photos but it does the job.",
    "Broke the first time I used it. Avoid.",
    "Absolutely love it, I bought a second one for my sister.",
    "It is a kettle. It boils water.",
    "Flimsy hinge, loud fan and the screen flickers.",
    "Setup took five minutes and the app is a joy to use.",
    "Not bad, not great; about what you would expect for the price.",
    "Returned it: the size chart was wrong by two sizes.",
    "My kids use it every day and it still looks new.",
]


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(x) for x in (out / shard["name"]).read_text().splitlines())
    return rows


def _respond_task(tmp_path: Path) -> Path:
    seeds = tmp_path / "reviews.jsonl"
    with seeds.open("w", encoding="utf-8") as f:
        for i, review in enumerate(REVIEWS):
            instruction = (
                "Classify the sentiment of this product review as positive, negative or "
                f"neutral. Answer with the label only.\n\nReview: {review}"
            )
            f.write(json.dumps({"id": f"r{i}", "instruction": instruction}) + "\n")
    cfg = tmp_path / "classify.toml"
    cfg.write_text(
        """
[run]
method = "respond"
input = "reviews.jsonl"
output = "out"

[endpoints.sim]
base_url = "sim"
model = "sim-model"
sim = { latency_ms = 1, seed = 7 }

[roles]
strong = "sim"
judge = "sim"

[method.respond]
threshold = 5
""",
        encoding="utf-8",
    )
    return cfg


@pytest.mark.parametrize("structured", ["true", "false"])
def test_your_own_classification_task_dry_runs_and_keeps_rows(
    tmp_path: Path, structured: str
) -> None:
    """A small JSONL of the user's own prompts and a config, dry-run on the simulated
    endpoint: every response is one of the labels the prompt lists (as JSON, and as
    text), the judge's scores parse, and the run keeps rows (exit 0)."""
    cfg = _respond_task(tmp_path)
    proc = run_cli(
        "run", str(cfg), "--quiet", "--set", f"endpoints.sim.structured_output={structured}"
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    kept, rejected = _rows(out, "kept"), _rows(out, "rejected")
    assert kept and not _rows(out, "failed")
    assert len(kept) + len(rejected) == len(REVIEWS)
    responses = [r["response"] for r in kept + rejected]
    assert all(r.startswith("[simulated] ") for r in responses)
    assert {r.removeprefix("[simulated] ") for r in responses} <= set(LABELS)
    assert len({r.removeprefix("[simulated] ") for r in responses}) >= 2
    assert all(1 <= r["score"] <= 10 and r["simulated"] is True for r in kept + rejected)


def test_your_own_selfguide_classification_task_keeps_labelled_rows(tmp_path: Path) -> None:
    task = {
        "name": "ticket_priority",
        "type": "classification",
        "instruction": "Read the support ticket and give its priority: urgent or routine.",
        "labels": ["urgent", "routine"],
        "examples": [
            {"input": "Our whole team is locked out of the dashboard since 9am.", "output": "urgent"},
            {"input": "Could you add a dark mode to the settings page some time?", "output": "routine"},
            {"input": "Payments are failing for every customer at checkout right now.", "output": "urgent"},
            {"input": "Please update the billing address on our account to the new office.", "output": "routine"},
        ],
    }  # fmt: skip
    (tmp_path / "task.json").write_text(json.dumps(task), encoding="utf-8")
    cfg = tmp_path / "sg.toml"
    cfg.write_text(
        """
[run]
method = "selfguide"
input = "task.json"
output = "out"

[endpoints.student]
base_url = "sim"
model = "sim-student"
sim = { latency_ms = 1, seed = 5 }

[roles]
strong = "student"

[method.selfguide]
generation_rounds = 3
per_round = 6
generation_max_tokens = 64
annotate_n = 5
annotate_max_tokens = 16
""",
        encoding="utf-8",
    )
    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    kept = _rows(out, "kept")
    assert len(kept) >= 6
    assert {r["label"] for r in kept} == {"urgent", "routine"}
    assert all(match_label(r["output"], task["labels"]) == r["label"] for r in kept)  # type: ignore[arg-type]
    assert (out / "balanced.jsonl").is_file()


@pytest.mark.parametrize(
    ("config", "sets"),
    [
        ("demo.toml", ["method.codeclm.metadata_count=6", "method.codeclm.instructions_per_metadata=3",
                       "method.codeclm.max_tokens=512", "method.codeclm.metadata_check=true"]),
        ("backtranslation.toml", []),
        ("lab.toml", []),
    ],
    ids=["codeclm", "backtranslation", "lab"],
)  # fmt: skip
def test_every_method_parses_the_text_replies_of_the_simulated_endpoint(
    tmp_path: Path, config: str, sets: list[str]
) -> None:
    """``structured_output = false`` on every endpoint: each stage's prompt is answered
    in the format it asks for, so no reply fails its parser and rows are kept."""
    text = (CONFIGS / config).read_text(encoding="utf-8")
    endpoints = sorted({line.split(".")[1].split("]")[0] for line in text.splitlines()
                        if line.startswith("[endpoints.")})  # fmt: skip
    flags = ["--set", f"run.output={tmp_path / 'out'}"]
    for name in endpoints:
        flags += ["--set", f"endpoints.{name}.structured_output=false"]
    for s in sets:
        flags += ["--set", s]
    proc = run_cli("run", str(CONFIGS / config), "--quiet", *flags)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    calls = {name: st["calls"] for name, st in report["stages"].items()}
    errors = {name: st["parse_errors"] for name, st in report["stages"].items()}
    assert sum(calls.values()) > 0
    assert not any(errors.values()), errors
    assert _rows(out, "kept")
    assert not [r for r in _rows(out, "failed") if r["error_kind"] == "ParseError"]


def test_the_demo_figures_in_the_readme_are_what_the_demo_prints(tmp_path: Path) -> None:
    """The README quotes the demo's summary (``rejected N: contrastive N``): re-measured
    whenever the simulated endpoint's answers change; the demo stays under a minute."""
    readme = (CONFIGS.parent / "README.md").read_text(encoding="utf-8")
    quoted = re.search(r"the demo's: `(rejected \d+: contrastive \d+)`", readme)
    assert quoted is not None
    start = time.monotonic()
    proc = run_cli("run", str(CONFIGS / "demo.toml"), "--set", f"run.output={tmp_path / 'd'}")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 60
    summary = " ".join(proc.stdout.split())
    assert quoted.group(1) in summary, summary


def test_respond_rows_say_simulated_even_when_failed(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        '{"instruction": "Name a colour. Answer with one word."}\n{"no_instruction": 1}\n',
        encoding="utf-8",
    )
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        '[run]\nmethod = "respond"\ninput = "in.jsonl"\noutput = "out"\n'
        '[endpoints.sim]\nbase_url = "sim"\nmodel = "m"\nsim = { latency_ms = 1 }\n'
        '[roles]\nstrong = "sim"\n[method.respond]\nthreshold = 1\n',
        encoding="utf-8",
    )
    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stderr
    kept, failed = _rows(tmp_path / "out", "kept"), _rows(tmp_path / "out", "failed")
    assert len(kept) == 1 and len(failed) == 1
    assert kept[0]["simulated"] is True and failed[0]["simulated"] is True
    assert failed[0]["stage"] == "input" and "instruction" in failed[0]["error"]


def test_sim_help_documents_answers() -> None:
    proc = run_cli("sim", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--answers {prompt,random}" in text and "(default: prompt)" in text
    assert "answer from the prompt" in text
