"""End to end on real third-party inputs (tests/fixtures/field), simulated endpoint, CLI.

- LAB over a real taxonomy subtree (skills of versions 1, 2, 3 and a version-3
  knowledge leaf) whose document comes from a local git repository with two commits,
  mapped from the leaf's GitHub URL: the pinned commit's text is what the rows hold.
- SELF-GUIDE on a Natural-Instructions task and on the reference's tasks.json, unchanged.
- ``validate`` reads each input and says what it found (and exit 2 when nothing is usable).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, run_cli

FIELD = ROOT / "tests" / "fixtures" / "field"
TAX = FIELD / "taxonomy"
SUBTREE = (
    "compositional_skills/taxonomy_2024_08/STEM/math/area",  # version 1 (no version key)
    "compositional_skills/taxonomy_2024_08/writing/freeform/emoji",  # version 2
    "compositional_skills/taxonomy_main/linguistics/synonyms",  # version 3
    "compositional_skills/taxonomy_main/grounded/linguistics/inclusion",  # v3 grounded
    "knowledge/taxonomy_main/science/animals/birds/black_capped_chickadee",  # knowledge v3
)
CHICKADEE = SUBTREE[-1]
PINNED = "5f7158a5ce83c4ff493bfe341fe31ecad64ff697"
URL = "https://github.com/juliadenham/Summit_knowledge"

SIM = """
[endpoints.sim]
base_url = "sim"
model = "sim-model"
max_concurrency = 32
sim = { latency_ms = 1, seed = 3 }

[roles]
strong = "sim"
target = "sim"
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(x) for x in (out / shard["name"]).read_text().splitlines())
    return rows


def _lab_setup(tmp_path: Path) -> tuple[Path, str]:
    tax = tmp_path / "taxonomy"
    for rel in SUBTREE:
        shutil.copytree(TAX / rel, tax / rel)
    repo = tmp_path / "Summit_knowledge"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copy(FIELD / "knowledge_docs" / "chickadee.md", repo / "chickadee.md")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "the real document")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "chickadee.md").write_text("# Moved on\n\nNEWER COMMIT TEXT " * 50, encoding="utf-8")
    _git(repo, "commit", "-qam", "a later edit")
    leaf = tax / CHICKADEE / "qna.yaml"
    text = leaf.read_text(encoding="utf-8")
    assert PINNED in text and URL in text  # the real leaf, only its commit is re-pinned
    leaf.write_text(text.replace(PINNED, first), encoding="utf-8")
    cfg = tmp_path / "lab.toml"
    cfg.write_text(
        f"""
[run]
method = "lab"
input = "taxonomy"
output = "out"
max_items_in_flight = 8
{SIM}
[method.lab]
num_samples = 3
num_contexts = 2
grounded_questions = 1
chunk_word_count = 400
knowledge_samples = 1
spellcheck = false
max_tokens = 64
response_max_tokens = 32
judge_max_tokens = 32
document_cache = "cache"
mirrors = {{ "{URL}" = "{repo}" }}
""",
        encoding="utf-8",
    )
    return cfg, first


def test_lab_runs_a_real_subtree_with_git_pinned_documents(tmp_path: Path) -> None:
    cfg, first = _lab_setup(tmp_path)
    val = run_cli("validate", str(cfg), "--json")
    assert val.returncode == 0, val.stderr
    doc = json.loads(val.stdout)["input"]
    assert (doc["items_ok"], doc["items_bad"], doc["problems"]) == (5, 0, [])
    assert doc["details"]["leaves_by_kind"] == {
        "freeform_skill": 3,
        "grounded_skill": 1,
        "knowledge": 1,
    }
    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["simulated"] is True
    rows = _rows(out, "kept") + _rows(out, "rejected")
    assert {r["leaf"] for r in rows} == set(SUBTREE)
    knowledge = [r for r in rows if r["leaf"] == CHICKADEE]
    assert knowledge and all("chickadee" in r["context"].lower() for r in knowledge)
    assert not any("NEWER COMMIT" in r["context"] for r in knowledge)
    assert not _rows(out, "failed")
    assert (tmp_path / "cache").is_dir() and any(
        first in p.name for p in (tmp_path / "cache").iterdir()
    )


def test_validate_reports_refused_leaves_and_exit_2(tmp_path: Path) -> None:
    tax = tmp_path / "taxonomy"
    shutil.copytree(
        TAX / "compositional_skills" / "schema_testdata", tax / "compositional_skills" / "x"
    )
    for name in ("skill_valid", "version_1"):  # keep only refused leaves
        shutil.rmtree(tax / "compositional_skills" / "x" / name)
    cfg = tmp_path / "lab.toml"
    cfg.write_text(f'[run]\nmethod = "lab"\ninput = "taxonomy"\n{SIM}', encoding="utf-8")
    proc = run_cli("validate", str(cfg), "--json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)["input"]
    assert doc["items_ok"] == 0 and doc["items_bad"] == 5
    files = {p["file"] for p in doc["problems"]}
    assert "compositional_skills/x/skill_incomplete/qna.yaml" in files
    assert all(p["line"] for p in doc["problems"])
    text = run_cli("validate", str(cfg))
    assert text.returncode == 2 and "error: compositional_skills/x/" in text.stdout


def _selfguide(tmp_path: Path, task: Path, extra: str = "") -> Path:
    cfg = tmp_path / "sg.toml"
    cfg.write_text(
        f"""
[run]
method = "selfguide"
input = "{task}"
output = "out"
{SIM}
[method.selfguide]
generation_rounds = 2
per_round = 5
generation_max_tokens = 24
annotate_n = 5
annotate_max_tokens = 64
{extra}
""",
        encoding="utf-8",
    )
    return cfg


def test_selfguide_runs_natural_instructions_tasks_unchanged(tmp_path: Path) -> None:
    for name, kind, labels in (
        ("task190_snli_classification", "classification", ["N", "E", "C"]),
        ("task1562_zest_text_modification", "generation", []),
    ):
        work = tmp_path / name
        work.mkdir()
        cfg = _selfguide(work, FIELD / "selfguide" / f"{name}.json")
        val = run_cli("validate", str(cfg), "--json")
        assert val.returncode == 0, val.stderr
        details = json.loads(val.stdout)["input"]["details"]
        assert (details["format"], details["type"], details["labels"]) == (
            "natural_instructions",
            kind,
            labels,
        )
        proc = run_cli("run", str(cfg), "--quiet")
        # The simulated endpoint answers from the prompt: inputs as long as the task's
        # examples, outputs among its labels (or as long as its outputs), so rows are kept.
        assert proc.returncode == 0, proc.stderr
        assert json.loads((work / "out" / "manifest.json").read_text())["complete"] is True
        report = json.loads((work / "out" / "report.json").read_text())["method_report"]
        assert report["task"] == name and report["task_type"] == kind
        assert report["inputs"]["generated"] == 10
        kept = _rows(work / "out", "kept")
        assert kept
        if labels:
            assert {r["label"] for r in kept} <= set(labels)


def test_selfguide_runs_a_reference_task_list_entry(tmp_path: Path) -> None:
    tasks = FIELD / "selfguide" / "tasks.json"
    cfg = _selfguide(tmp_path, tasks)
    val = run_cli("validate", str(cfg), "--json")
    assert val.returncode == 2 and "pick one with" in val.stdout  # five tasks, none chosen
    cfg = _selfguide(tmp_path, tasks, 'task = "task200"')
    val = run_cli("validate", str(cfg), "--json")
    details = json.loads(val.stdout)["input"]["details"]
    assert (details["type"], details["labels"]) == ("classification", ["1", "2", "3"])
    proc = run_cli("run", str(cfg), "--quiet")
    assert proc.returncode == 0, proc.stderr  # rows kept: answers among the labels 1, 2, 3
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["complete"] is True
    report = json.loads((tmp_path / "out" / "report.json").read_text())["method_report"]
    assert report["task"] == "task200" and report["task_format"] == "selfguide_reference"
    assert {r["label"] for r in _rows(tmp_path / "out", "kept")} <= {"1", "2", "3"}


def test_validate_reads_jsonl_and_corpus_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"instruction": "a"}\n{broken\n{"x": 1}\n', encoding="utf-8")
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[run]\nmethod = "respond"\ninput = "{bad}"\n{SIM}', encoding="utf-8")
    doc = json.loads(run_cli("validate", str(cfg), "--json").stdout)["input"]
    assert (doc["items_ok"], doc["items_bad"]) == (1, 2)
    assert [p["line"] for p in doc["problems"]] == [2, 3]
    cfg.write_text(
        f'[run]\nmethod = "respond"\ninput = "{tmp_path / "missing.jsonl"}"\n{SIM}',
        encoding="utf-8",
    )
    proc = run_cli("validate", str(cfg), "--json")
    assert proc.returncode == 2 and "not found" in proc.stdout
    corpus = FIELD / "corpus"
    cfg.write_text(
        f'[run]\nmethod = "backtranslation"\ninput = "{corpus}"\n{SIM}', encoding="utf-8"
    )
    doc = json.loads(run_cli("validate", str(cfg), "--json").stdout)["input"]
    assert doc["items_ok"] > 50 and doc["items_bad"] == 0
    assert doc["details"]["sections_split"] >= 1
