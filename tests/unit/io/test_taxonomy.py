"""Taxonomy reader: the sample taxonomy, leaf kinds, sorted walk, malformed leaves with lines."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.io.taxonomy import Leaf, find_leaves, read_leaf, read_taxonomy
from engine.records import BadInput

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "configs" / "data" / "taxonomy"

HAIKU = "compositional_skills/writing/freeform/haiku"
NOTES = "compositional_skills/extraction/summarization/meeting_notes"
SOLAR = "knowledge/science/astronomy/solar_system"


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel / "qna.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_sample_taxonomy_loads_sorted_with_kinds() -> None:
    entries = list(read_taxonomy(SAMPLE))
    assert all(isinstance(e, Leaf) for e in entries)
    leaves = [e for e in entries if isinstance(e, Leaf)]
    assert [leaf.path for leaf in leaves] == [NOTES, HAIKU, SOLAR]
    kinds = {leaf.path: leaf.kind for leaf in leaves}
    assert kinds == {HAIKU: "freeform_skill", NOTES: "grounded_skill", SOLAR: "knowledge"}
    solar = leaves[2]
    assert solar.phase == "knowledge" and leaves[0].phase == "skills"
    assert solar.domain == "astronomy"
    assert [d.name for d in solar.documents] == ["../knowledge_docs/solar_system.md"]
    assert "Olympus Mons" in solar.documents[0].text
    assert len(solar.knowledge_seeds) == 2 and len(solar.knowledge_seeds[0].qa) == 3
    assert all(s.context for s in leaves[0].skill_seeds)
    assert not any(s.context for s in leaves[1].skill_seeds)


def test_malformed_fixture_is_bad_input_with_line_and_others_run(tmp_path: Path) -> None:
    root = tmp_path / "taxonomy"
    shutil.copytree(SAMPLE, root)
    shutil.copytree(SAMPLE.parent / "knowledge_docs", tmp_path / "knowledge_docs")
    bad = Path(__file__).parent / "fixtures" / "malformed_qna.yaml"
    target = root / "compositional_skills" / "writing" / "broken" / "qna.yaml"
    target.parent.mkdir(parents=True)
    shutil.copy(bad, target)
    entries = list(read_taxonomy(root))
    assert [e.index for e in entries if isinstance(e, BadInput)] == [1]
    (b,) = [e for e in entries if isinstance(e, BadInput)]
    assert b.source == "compositional_skills/writing/broken/qna.yaml:7"
    assert "seed_examples[1]" in b.reason and "answer" in b.reason
    assert sum(isinstance(e, Leaf) for e in entries) == 3


@pytest.mark.parametrize(
    ("rel", "text", "line", "needle"),
    [
        ("compositional_skills/a", "version: 2\n", 1, "version 3"),
        ("compositional_skills/a", "version: 3\ncreated_by: x\n", 1, "task_description"),
        (
            "compositional_skills/a",
            "version: 3\ntask_description: t\nseed_examples: []\n",
            3,
            "must not be empty",
        ),
        (
            "compositional_skills/a",
            "version: 3\ntask_description: t\nseed_examples:\n  - question: q\n    answer: [1]\n",
            5,
            "seed_examples[0].answer: expected a string",
        ),
        (
            "compositional_skills/a",
            "version: 3\ntask_description: t\nseed_examples:\n  - question: q\n    answer: a\n"
            "    context: c\n  - question: q2\n    answer: a2\n",
            7,
            "mixes seeds",
        ),
        ("compositional_skills/a", "version: 3\n  bad: [indent\n", 2, "not valid YAML"),
        ("misc/a", "version: 3\n", 1, "not under knowledge/"),
        (
            "knowledge/a",
            "version: 3\ndomain: d\ndocument_outline: o\nseed_examples:\n  - context: c\n"
            "    questions_and_answers:\n      - question: q\n        answer: a\n"
            "document:\n  repo: nowhere\n  patterns: ['*.md']\n",
            10,
            "document.repo",
        ),
        (
            "knowledge/a",
            "version: 3\ndomain: d\ndocument_outline: o\nseed_examples:\n  - context: c\n"
            "    questions_and_answers:\n      - question: q\n        answer: a\n"
            "document:\n  repo: https://github.com/x/y\n  patterns: ['*.md']\n",
            10,
            "remote",
        ),
        (
            "knowledge/a",
            "version: 3\ndomain: d\ndocument_outline: o\nseed_examples:\n  - context: c\n"
            "    questions_and_answers: {}\n"
            "document:\n  repo: .\n  patterns: ['*.md']\n",
            6,
            "questions_and_answers: expected a list",
        ),
    ],
)
def test_validation_errors_name_line_and_field(
    tmp_path: Path, rel: str, text: str, line: int, needle: str
) -> None:
    path = _write(tmp_path, rel, text)
    with pytest.raises(InputError) as info:
        read_leaf(path, tmp_path)
    assert info.value.line == line, info.value
    assert needle in info.value.reason


def test_document_patterns(tmp_path: Path) -> None:
    head = (
        "version: 3\ndomain: d\ndocument_outline: o\nseed_examples:\n  - context: c\n"
        "    questions_and_answers:\n      - question: q\n        answer: a\n"
    )
    leaf_dir = tmp_path / "knowledge" / "x"
    (leaf_dir / "docs").mkdir(parents=True)
    (leaf_dir / "docs" / "b.md").write_text("bee")
    (leaf_dir / "docs" / "a.md").write_text("ay")
    (leaf_dir / "docs" / "c.txt").write_text("see")
    path = _write(tmp_path, "knowledge/x", head + "document:\n  repo: docs\n  patterns: ['*.md']\n")
    leaf = read_leaf(path, tmp_path)
    assert [d.text for d in leaf.documents] == ["ay", "bee"]
    path.write_text(head + "document:\n  repo: docs\n  commit: abc\n  patterns:\n    - '*.txt'\n")
    with pytest.raises(InputError) as info:
        read_leaf(path, tmp_path)
    assert info.value.line == 13 and "not a Markdown file" in info.value.reason


def test_walk_is_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ("compositional_skills/b", "compositional_skills/a/z", ".git/x", "knowledge/a"):
        _write(tmp_path, rel, "version: 3\n")
    found = [p.parent.relative_to(tmp_path).as_posix() for p in find_leaves(tmp_path)]
    assert found == ["compositional_skills/a/z", "compositional_skills/b", "knowledge/a"]


def test_empty_or_missing_taxonomy(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(read_taxonomy(tmp_path))
    with pytest.raises(InputError):
        list(read_taxonomy(tmp_path / "missing"))
