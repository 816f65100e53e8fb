"""For every real taxonomy file in the fixture set, our verdict equals instructlab-schema's.

instructlab-schema's ``TaxonomyParser`` runs with the settings InstructLab's data
generation uses (``instructlab.sdg.utils.taxonomy._read_taxonomy_file``: version from the
file, yamllint warnings as errors, a file with any warning or error left out). It calls
the ``yamllint`` executable, so the venv's bin directory is put on PATH.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from engine.io.taxonomy import check_leaf

FIELD = Path(__file__).resolve().parents[2] / "fixtures" / "field" / "taxonomy"
FILES = sorted(
    p for p in FIELD.rglob("*") if p.is_file() and p.name.casefold() in ("qna.yaml", "qna.yml")
)


def _theirs(path: Path) -> bool:
    from instructlab.schema.taxonomy import (
        TaxonomyMessageFormat,
        TaxonomyParser,
        TaxonomyReadingException,
    )

    parser = TaxonomyParser(
        schema_version=0, message_format=TaxonomyMessageFormat.LOGGING, yamllint_strict=True
    )
    parser.yq_available = False  # line numbers only; not part of the verdict
    try:
        taxonomy = parser.parse(path)
    except TaxonomyReadingException:
        return False
    return taxonomy.errors == 0 and taxonomy.warnings == 0


@pytest.fixture(autouse=True)
def _yamllint_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    logging.getLogger("instructlab.schema.taxonomy").setLevel(logging.CRITICAL)


def test_fixture_set_is_varied() -> None:
    assert len(FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(FIELD).as_posix())
def test_verdict_equals_instructlab_schema(path: Path) -> None:
    _, _, problems = check_leaf(path, FIELD)
    assert (not problems) == _theirs(path), problems


def test_verdict_counts() -> None:
    ours = [not check_leaf(p, FIELD)[2] for p in FILES]
    assert sum(ours) == 17 and len(ours) - sum(ours) == 13
