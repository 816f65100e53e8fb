"""Knowledge documents: git checkout at the pinned commit, mirrors, file://, PDF, chunking."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.io.knowledge import KnowledgeSettings, chunk_markdown, load_documents, read_document
from engine.io.taxonomy import DocumentSource, Leaf

FIELD = Path(__file__).resolve().parents[2] / "fixtures" / "field" / "knowledge_docs"
CHICKADEE = (FIELD / "chickadee.md").read_text(encoding="utf-8")
URL = "https://github.com/juliadenham/Summit_knowledge"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def two_commit_repo(path: Path) -> tuple[str, str]:
    """A repository whose first commit holds the real document and the second a changed one."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "chickadee.md").write_text(CHICKADEE, encoding="utf-8")
    git(path, "add", ".")
    git(path, "commit", "-qm", "first")
    first = git(path, "rev-parse", "HEAD")
    (path / "chickadee.md").write_text("# Changed\n\nSECOND COMMIT TEXT\n", encoding="utf-8")
    git(path, "commit", "-qam", "second")
    return first, git(path, "rev-parse", "HEAD")


def leaf(repo: str, commit: str, patterns: tuple[str, ...] = ("chickadee.md",)) -> Leaf:
    return Leaf(
        path="knowledge/birds",
        file="knowledge/birds/qna.yaml",
        kind="knowledge",
        source=DocumentSource(repo=repo, commit=commit, patterns=patterns, line=40),
    )


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    first, second = two_commit_repo(tmp_path / "docs_repo")
    return tmp_path / "docs_repo", first, second


def settings(tmp_path: Path, **mirrors: str) -> KnowledgeSettings:
    return KnowledgeSettings(cache_dir=tmp_path / "cache", mirrors=dict(mirrors), timeout_s=60)


def test_pinned_commit_is_used_not_the_clone_head(
    tmp_path: Path, repo: tuple[Path, str, str]
) -> None:
    path, first, second = repo
    assert git(path, "rev-parse", "HEAD") == second  # the user's clone is at another commit
    got = load_documents(leaf(str(path), first), tmp_path, settings(tmp_path))
    assert got.commit == first
    assert [d.name for d in got.documents] == ["chickadee.md"]
    assert got.documents[0].text == CHICKADEE
    assert "SECOND COMMIT" not in got.documents[0].text
    assert (path / "chickadee.md").read_text(encoding="utf-8").startswith("# Changed")  # untouched
    newer = load_documents(leaf(str(path), second[:10]), tmp_path, settings(tmp_path))
    assert "SECOND COMMIT TEXT" in newer.documents[0].text  # a short hash works too


def test_file_url_and_mirror_map(tmp_path: Path, repo: tuple[Path, str, str]) -> None:
    path, first, _ = repo
    by_url = load_documents(leaf(path.as_uri(), first), tmp_path, settings(tmp_path))
    assert by_url.documents[0].text == CHICKADEE
    mirrored = load_documents(
        leaf(URL + ".git", first), tmp_path, settings(tmp_path, **{URL: str(path)})
    )
    assert mirrored.documents[0].text == CHICKADEE
    # the checkout is cached: a second read needs no source
    again = load_documents(leaf(str(path), first), tmp_path, settings(tmp_path))
    assert again.documents == by_url.documents


def test_missing_commit_and_patterns_are_clear_errors(
    tmp_path: Path, repo: tuple[Path, str, str]
) -> None:
    path, first, _ = repo
    with pytest.raises(InputError) as info:
        load_documents(leaf(str(path), "0" * 40), tmp_path, settings(tmp_path))
    assert info.value.path == "knowledge/birds/qna.yaml" and info.value.line == 40
    assert "is not in" in info.value.reason
    with pytest.raises(InputError, match="match no .md or .pdf"):
        load_documents(leaf(str(path), first, ("*.txt",)), tmp_path, settings(tmp_path))
    with pytest.raises(InputError, match="not found"):
        load_documents(leaf("no/such/dir", first), tmp_path, settings(tmp_path))


def test_unreachable_remote_says_to_map_a_mirror(tmp_path: Path) -> None:
    missing = (tmp_path / "gone").as_uri()
    with pytest.raises(InputError, match="clone failed"):
        load_documents(leaf(missing, "abc"), tmp_path, settings(tmp_path))


def test_plain_directory_is_read_with_a_warning(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "chickadee.md").write_text(CHICKADEE, encoding="utf-8")
    warnings: list[str] = []
    got = load_documents(leaf(str(plain), "x"), tmp_path, settings(tmp_path), warn=warnings.append)
    assert got.documents[0].text == CHICKADEE
    assert len(warnings) == 1 and "not checked" in warnings[0]


def test_pdf_document_text() -> None:
    pdf = FIELD / "How to use YAML with InstructLab Page 1.pdf"
    text = read_document(pdf, pdf.name)
    assert "InstructLab" in text and "YAML" in text and len(text) > 1000


def test_chunks_follow_structure_and_budget() -> None:
    chunks = chunk_markdown(CHICKADEE, 200)
    assert len(chunks) > 10
    bodies = [c.split("\n\n", 1)[-1] for c in chunks]
    assert all(len(b.split()) <= 200 for b in bodies)
    heads = [c for c in chunks if c.startswith("#")]
    assert heads, "chunks start with the headings they sit under"
    words = sum(len(b.split()) for b in bodies)
    heading_words = sum(
        len(line.split()) for line in CHICKADEE.splitlines() if line.startswith("#")
    )
    assert words == len(CHICKADEE.split()) - heading_words  # nothing lost, nothing repeated


def test_chunk_keeps_code_blocks_whole() -> None:
    text = "# T\n\nintro words here\n\n```\ndef f():\n    return 1\n```\n"
    (chunk,) = chunk_markdown(text, 100)
    assert "def f():\n    return 1" in chunk and chunk.startswith("# T\n\n")
