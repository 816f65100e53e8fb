"""A pipeline declared in TOML (method = "pipeline"): generate, respond with two roles,
judge and filter; it runs and resumes exactly once; a bad one fails with file, line and key."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.io.shards import KINDS, iter_rows
from tests.conftest import ROOT, run_cli

TOPICS = ["volcanoes", "sourdough", "black holes", "chess openings", "tides", "bees"]

PIPELINE = """
[run]
method = "pipeline"
input = "topics.jsonl"
output = "out"
shard_records = 4

[endpoints.teacher]
base_url = "sim"
model = "sim-teacher"
sim = {{ latency_ms = {latency} }}

[endpoints.student]
base_url = "sim"
model = "sim-student"
sim = {{ latency_ms = {latency}, seed = 7 }}

[roles]
strong = "teacher"
target = "student"
judge = "teacher"

[method.pipeline]
inputs = ["topic"]

[[method.pipeline.stages]]
kind = "generate"
name = "question"
role = "strong"
template = "Ask one question a curious student might have about {{{{topic}}}}."
output = "question"
n = 2

[[method.pipeline.stages]]
kind = "generate"
name = "answer"
role = "target"
template = "{{{{question}}}}"
fields = {{ answer = "string", confidence = "number" }}

[[method.pipeline.stages]]
kind = "judge"
name = "grade"
role = "judge"
template = "Question: {{{{question}}}}\\nAnswer: {{{{answer}}}}\\nRate the answer from 1 to 10."
output = "grade"
min = 4

[[method.pipeline.stages]]
kind = "filter"
name = "length"
column = "answer"
min_chars = 12

[[method.pipeline.stages]]
kind = "dedup"
name = "unique"
column = "question"
"""


def _project(tmp: Path, *, latency: float = 1.0, text: str | None = None) -> Path:
    (tmp / "topics.jsonl").write_text(
        "".join(json.dumps({"id": f"t{i}", "topic": t}) + "\n" for i, t in enumerate(TOPICS))
    )
    config = tmp / "pipeline.toml"
    config.write_text(text if text is not None else PIPELINE.format(latency=latency))
    return config


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {row["id"]: {"kind": kind, **row} for kind in KINDS for row in iter_rows(out, kind)}


def test_a_four_stage_pipeline_runs(tmp_path: Path) -> None:
    config = _project(tmp_path)
    assert run_cli("validate", str(config)).returncode == 0
    proc = run_cli("run", str(config))
    assert proc.returncode in (0, 5), proc.stderr
    rows = _rows(tmp_path / "out")
    assert len(rows) == 2 * len(TOPICS)  # the fan-out: two questions per topic
    columns = {"id", "topic", "question", "answer", "confidence", "grade", "item", "source"}
    for row in rows.values():
        assert set(row) >= columns | {"simulated"}
        assert row["question"].startswith("[simulated]")
        if row["kind"] == "kept":
            assert row["grade"] >= 4 and len(row["answer"]) >= 12
        else:
            assert row["reason"].split(":")[0] in {"grade", "length", "unique"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["stages"]) == {"question", "answer", "grade"}
    # Both roles were called: the teacher asked and judged, the student answered.
    assert set(report["endpoints"]) == {"teacher", "student"}


def test_the_pipeline_resumes_exactly_once_after_sigkill(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run_cli("run", str(_project(ref, latency=60)), "--quiet").returncode in (0, 5)
    work = tmp_path / "work"
    work.mkdir()
    config = _project(work, latency=60)
    cmd = [sys.executable, "-m", "engine", "run", str(config), "--quiet",
           "--set", "run.max_items_in_flight=1"]  # fmt: skip
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(cmd, cwd=ROOT)
        time.sleep(0.8)
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert subprocess.run(cmd, cwd=ROOT, timeout=120, check=False).returncode in (0, 5)
    assert kills >= 1
    assert _rows(work / "out") == _rows(ref / "out")


@pytest.mark.parametrize(
    ("change", "line", "field", "message"),
    [
        (
            ('template = "{{question}}"', 'template = "{{questoin}}"'),
            38,
            "method.pipeline.stages.1.template",
            "reads questoin, which no input field or earlier stage writes",
        ),
        (('kind = "dedup"', 'kind = "dedupe"'), None, "method.pipeline.stages", "dedupe"),
        (("min = 4", "minimum = 4"), 47, "method.pipeline.stages.2.minimum", "unknown key"),
        (
            ('output = "grade"', 'output = "question"'),
            46,
            "method.pipeline.stages.2.output",
            "writes 'question', which is already a column",
        ),
    ],
)
def test_a_bad_pipeline_names_file_line_and_key(
    tmp_path: Path, change: tuple[str, str], line: int | None, field: str, message: str
) -> None:
    text = PIPELINE.format(latency=1).replace(*change)
    config = _project(tmp_path, text=text)
    proc = run_cli("validate", str(config))
    assert proc.returncode == 2, proc.stdout
    where = f"{config}:{line}: " if line else f"{config}"
    assert where in proc.stderr, proc.stderr
    assert field in proc.stderr and message in proc.stderr, proc.stderr
