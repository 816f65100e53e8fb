"""The corpus reader on real pages: a Markdown docs set, Wikipedia-derived Markdown and an
HTML API reference (tests/fixtures/field/corpus; sources in the README there)."""

from __future__ import annotations

from pathlib import Path

from engine.io.corpus import CorpusStats, SegmentRules, read_corpus
from engine.records import Item

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "field" / "corpus"
RULES = SegmentRules(min_chars=200, max_chars=6000)


def _segments(path: Path) -> tuple[list[Item], CorpusStats]:
    stats = CorpusStats()
    got = [i for i in read_corpus(path, RULES, stats=stats) if isinstance(i, Item)]
    return got, stats


def test_markdown_docs_keep_paragraphs_and_indented_code() -> None:
    segs, stats = _segments(CORPUS / "httpx_docs")
    texts = [str(s.data["text"]) for s in segs]
    assert sum("\n\n" in t for t in texts) >= len(texts) * 0.8  # paragraph breaks kept
    code = [t for t in texts if "```" in t]
    assert code and any("\n    " in t for t in code)  # indented code lines kept
    assert not any("](" in t for t in texts if "```" not in t)  # links reduced to text
    assert stats.bad_records == 0 and "too_long" not in stats.dropped


def test_wikipedia_markdown_links_become_text() -> None:
    segs, _ = _segments(CORPUS / "wikipedia_md")
    text = "\n".join(str(s.data["text"]) for s in segs)
    assert '"wikilink"' not in text and "](" not in text
    assert "Petrus\nPlancius" in text or "Petrus Plancius" in text


def test_html_api_reference_keeps_its_sections_split_not_dropped() -> None:
    segs, stats = _segments(CORPUS / "underscore_site")
    headers = [str(s.data["header"]) for s in segs]
    assert "Collection Functions (Arrays or Objects)" in headers
    assert "Array Functions" in headers and "Object Functions" in headers
    assert stats.sections_split >= 3 and "too_long" not in stats.dropped
    parts = [s for s in segs if "part" in s.data]
    assert parts and all(len(str(s.data["text"])) <= RULES.max_chars for s in segs)
    each = next(
        str(s.data["text"]) for s in segs if "_.each([1, 2, 3], alert);" in str(s.data["text"])
    )
    assert "\n\n" in each
    assert not any("menu" in h.lower() for h in headers)
