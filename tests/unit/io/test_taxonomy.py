"""Taxonomy reader: InstructLab's rules (versions, schemas, yamllint), lines, the walk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.io.taxonomy import (
    YAMLLINT_CONFIG,
    Leaf,
    check_leaf,
    find_leaves,
    read_leaf,
    read_taxonomy,
)
from engine.records import BadInput

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "configs" / "data" / "taxonomy"
FIELD = ROOT / "tests" / "fixtures" / "field" / "taxonomy"

HAIKU = "compositional_skills/writing/freeform/haiku"
NOTES = "compositional_skills/extraction/summarization/meeting_notes"
SOLAR = "knowledge/science/astronomy/solar_system"


def _write(root: Path, rel: str, text: str, name: str = "qna.yaml") -> Path:
    path = root / rel / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _skill(version: str, seeds: int = 5, extra: str = "") -> str:
    head = f"version: {version}\n" if version else ""
    body = "".join(f"  - question: q{i}?\n    answer: a{i}\n" for i in range(seeds))
    return f"{head}created_by: me\ntask_description: t\n{extra}seed_examples:\n{body}"


def test_sample_taxonomy_loads_sorted_with_kinds() -> None:
    entries = list(read_taxonomy(SAMPLE))
    leaves = [e for e in entries if isinstance(e, Leaf)]
    assert len(leaves) == len(entries) == 3
    assert [leaf.path for leaf in leaves] == [NOTES, HAIKU, SOLAR]
    kinds = {leaf.path: leaf.kind for leaf in leaves}
    assert kinds == {HAIKU: "freeform_skill", NOTES: "grounded_skill", SOLAR: "knowledge"}
    solar = leaves[2]
    assert solar.phase == "knowledge" and leaves[0].phase == "skills"
    assert solar.source is not None and solar.source.patterns == ("*.md",)
    assert len(solar.knowledge_seeds) == 5 and len(solar.knowledge_seeds[0].qa) == 3


@pytest.mark.parametrize("version", ["", "1", "2", "3"])
def test_skill_versions_1_2_3_are_read(tmp_path: Path, version: str) -> None:
    path = _write(tmp_path, "compositional_skills/a", _skill(version))
    leaf = read_leaf(path, tmp_path)
    assert leaf.version == int(version or 1) and leaf.kind == "freeform_skill"
    assert len(leaf.skill_seeds) == 5


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (_skill("3", seeds=4), 4, "seed_examples: must have at least 5 items"),
        (_skill("3").replace("answer: a2", "answer: yes"), 10, "seed_examples.2.answer"),
        (_skill("3").replace("created_by", "createdby"), 1, "'created_by' is a required"),
        (_skill("3") + "  - question: q0?\n    answer: a0\n", 4, "non-unique"),
        (_skill("4"), 1, "version 4"),
        ("version: 3\nfoo: [\n", 3, "not valid YAML"),
        ("", 1, "empty"),
        ("- a\n- b\n", 1, "top-level"),
        (_skill("3") + "\n\n\n", 17, "yamllint"),  # too many blank lines: an error in SDG
    ],
)
def test_refusals_name_line_and_rule(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = _write(tmp_path, "compositional_skills/a", text)
    with pytest.raises(InputError) as info:
        read_leaf(path, tmp_path)
    assert info.value.path == "compositional_skills/a/qna.yaml"
    assert info.value.line == line, info.value
    assert needle in str(info.value)


def test_version_1_has_no_lint_and_no_minimum(tmp_path: Path) -> None:
    path = _write(tmp_path, "compositional_skills/a", _skill("", seeds=1) + "\n\n\n")
    assert read_leaf(path, tmp_path).version == 1  # v1: one seed, no yamllint (InstructLab)


def test_knowledge_versions_1_and_2_are_refused_as_instructlab_does(tmp_path: Path) -> None:
    text = "version: 2\ncreated_by: me\ndomain: d\ntask_description: t\nseed_examples: []\n"
    path = _write(tmp_path, "knowledge/a", text)
    _, version, problems = check_leaf(path, tmp_path)
    assert version == 2 and len(problems) == 1
    assert problems[0].line == 1
    assert "Version 2 is not supported for knowledge" in problems[0].message


def test_first_seed_decides_grounded(tmp_path: Path) -> None:
    text = _skill("3").replace("  - question: q0?\n", "  - context: c\n    question: q0?\n", 1)
    leaf = read_leaf(_write(tmp_path, "compositional_skills/a", text), tmp_path)
    assert leaf.kind == "grounded_skill" and leaf.skill_seeds[1].context == ""


def test_walk_notes_qna_yml_foundational_and_stray_files(tmp_path: Path) -> None:
    _write(tmp_path, "compositional_skills/b", _skill("3"))
    _write(tmp_path, "compositional_skills/a", _skill("3"), name="qna.yml")
    _write(tmp_path, "foundational_skills/r", _skill("3"))
    _write(tmp_path, "docs", _skill("3"))
    _write(tmp_path, ".hidden/x", _skill("3"))
    scan = find_leaves(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in scan.leaves] == [
        "compositional_skills/b/qna.yaml"
    ]
    notes = {n.file: n.message for n in scan.notes}
    assert "must be named" in notes["compositional_skills/a/qna.yml"]
    assert "reads only" in notes["foundational_skills/r/qna.yaml"]
    assert "not under" in notes["docs/qna.yaml"]
    both = find_leaves(tmp_path, foundational_skills=True)
    assert len(both.leaves) == 2
    seen: list[str] = []
    list(read_taxonomy(tmp_path, on_note=lambda n: seen.append(n.file)))
    assert sorted(seen) == sorted(notes)


def test_refused_leaf_is_bad_input_and_others_run(tmp_path: Path) -> None:
    root = tmp_path / "taxonomy"
    shutil.copytree(SAMPLE, root)
    _write(root, "compositional_skills/writing/broken", _skill("3", seeds=2))
    entries = list(read_taxonomy(root))
    (bad,) = [e for e in entries if isinstance(e, BadInput)]
    assert bad.source == "compositional_skills/writing/broken/qna.yaml:4"
    assert "at least 5" in bad.reason
    assert sum(isinstance(e, Leaf) for e in entries) == 3


def test_empty_or_missing_taxonomy_raises(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        list(read_taxonomy(tmp_path / "nope"))
    with pytest.raises(InputError, match="no qna.yaml"):
        list(read_taxonomy(tmp_path))


def test_yamllint_config_is_instructlab_schemas() -> None:
    from instructlab.schema.taxonomy import DEFAULT_YAMLLINT_CONFIG

    assert YAMLLINT_CONFIG == DEFAULT_YAMLLINT_CONFIG


def test_field_leaves_of_every_version_are_read() -> None:
    versions: dict[str, int] = {}
    for entry in read_taxonomy(FIELD):
        if isinstance(entry, Leaf):
            versions[entry.path] = entry.version
    assert {1, 2, 3} <= set(versions.values())
    assert versions["compositional_skills/taxonomy_2024_08/STEM/math/area"] == 1
    assert versions["compositional_skills/taxonomy_2024_08/writing/freeform/emoji"] == 2
    assert versions["knowledge/taxonomy_main/science/animals/birds/black_capped_chickadee"] == 3
