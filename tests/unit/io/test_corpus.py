"""Corpus reader: header-anchored segments from HTML and text, every segment rule, JSONL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.filters import ExactDedup
from engine.io.corpus import (
    CorpusStats,
    SegmentRules,
    caps_ratio,
    iter_corpus_files,
    read_corpus,
    segments_html,
    segments_text,
)
from engine.records import BadInput, Item

BODY = "This paragraph explains the topic in enough words to pass a small length bound."
LOOSE = SegmentRules(min_chars=10, max_chars=1000, max_header_caps_ratio=1.0, dedup=False)


def items(path: Path, rules: SegmentRules = LOOSE) -> tuple[list[Item | BadInput], CorpusStats]:
    stats = CorpusStats()
    dedup = ExactDedup()
    return list(read_corpus(path, rules, seen=dedup.add, stats=stats)), stats


# ------------------------------------------------------------------------- html
def test_html_segments_follow_headings_and_skip_boilerplate() -> None:
    html = f"""<html><head><title>T</title><script>var x = 1;</script></head><body>
<nav>Home | Shop</nav>
<p>Before any heading.</p>
<h1>First <b>Topic</b></h1>
<p>{BODY}</p><ul><li>one</li><li>two</li></ul>
<h2>Second Topic</h2>
<div>Caf&eacute; text.</div>
<footer>Copyright</footer>
</body></html>"""
    segs = list(segments_html(iter([html[:50], html[50:]]), max_chars=1000))
    assert [s.header for s in segs] == ["", "First Topic", "Second Topic"]
    assert segs[0].text == "Before any heading."
    assert segs[1].text.splitlines() == [BODY, "", "- one", "- two"]  # shape kept
    assert segs[2].text == "Café text."
    assert "Copyright" not in segs[2].text and "var x" not in segs[0].text
    assert [s.offset for s in segs] == [0, 1, 2]


def test_long_section_is_split_at_paragraphs_not_dropped(tmp_path: Path) -> None:
    paras = [f"Paragraph {i}: " + "word " * 30 for i in range(20)]
    (tmp_path / "long.md").write_text("# Long\n\n" + "\n\n".join(paras) + "\n", encoding="utf-8")
    rules = SegmentRules(min_chars=50, max_chars=700, dedup=False)
    got, stats = items(tmp_path / "long.md", rules)
    parts = [i for i in got if isinstance(i, Item)]
    assert len(parts) >= 5 and stats.sections_split == 1 and stats.parts == len(parts)
    assert all(len(p.data["text"]) <= 700 for p in parts)
    assert [p.key for p in parts] == [f"long.md@1.{k}" for k in range(1, len(parts) + 1)]
    joined = "\n\n".join(str(p.data["text"]) for p in parts)
    assert joined.split("\n\n") == [x.rstrip() for x in paras]  # cut at paragraph breaks
    assert "too_long" not in stats.dropped


# ------------------------------------------------------------------------- text
def test_markdown_segments_and_fenced_code() -> None:
    text = f"intro line\n# One\n{BODY}\n\n\n## Two ##\n```\n# not a heading\n```\nend\n"
    segs = list(segments_text(iter(text.splitlines(keepends=True)), max_chars=1000))
    assert [(s.header, s.offset, s.line) for s in segs] == [
        ("", 0, 1),
        ("One", 1, 2),
        ("Two", 2, 6),
    ]
    assert segs[1].text == BODY
    assert "# not a heading" in segs[2].text


def test_caps_ratio() -> None:
    assert caps_ratio("ALL CAPS") == 1.0
    assert caps_ratio("Title Case Here") == pytest.approx(3 / 13)
    assert caps_ratio("123") == 0.0


# ------------------------------------------------------------------------ rules
def write_rules_corpus(tmp_path: Path) -> Path:
    (tmp_path / "a.md").write_text(
        f"orphan text with no heading at all\n# Good Header\n{BODY}\n"
        f"# SHOUTING HEADER\n{BODY} x\n# Short\ntiny\n# Long\n{'z' * 300}\n"
        f"# Repeat\n{BODY}\n# Empty\n",
        encoding="utf-8",
    )
    return tmp_path / "a.md"


def test_every_rule_counts_its_drops(tmp_path: Path) -> None:
    rules = SegmentRules(min_chars=20, max_chars=200, max_header_caps_ratio=0.6)
    got, stats = items(write_rules_corpus(tmp_path), rules)
    # "Long" (300 chars, no space) is split into two parts instead of being dropped
    assert [i.data["header"] for i in got if isinstance(i, Item)] == ["Good Header", "Long", "Long"]
    assert dict(stats.dropped) == {
        "no_header": 1,
        "header_caps": 1,
        "too_short": 1,
        "duplicate": 1,
        "empty": 1,
    }
    assert stats.segments_read == 7 and stats.segments == 3


def test_rules_can_be_switched_off(tmp_path: Path) -> None:
    rules = SegmentRules(
        min_chars=1, max_chars=10_000, max_header_caps_ratio=1.0, require_header=False, dedup=False
    )
    got, stats = items(write_rules_corpus(tmp_path), rules)
    assert len(got) == 6 and dict(stats.dropped) == {"empty": 1}


# ------------------------------------------------------------------ jsonl, walk
def test_jsonl_records_ids_and_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "d1", "title": "Hello There", "body": BODY}),
        "not json",
        json.dumps({"id": "d2"}),
        json.dumps({"body": BODY + " more"}),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rules = SegmentRules(min_chars=10, text_field="body")
    got, stats = items(tmp_path / "c.jsonl", rules)
    first, bad1, bad2, last = got
    assert isinstance(first, Item) and first.key == "d1@0" and first.source == "c.jsonl:1"
    assert first.data == {"text": BODY, "header": "Hello There", "doc_id": "d1", "offset": 0}
    assert isinstance(bad1, BadInput) and bad1.source == "c.jsonl:2"
    assert isinstance(bad2, BadInput) and "body" in bad2.reason
    assert isinstance(last, Item) and last.data["doc_id"] == "c.jsonl:4"
    assert [i.index for i in got] == [0, 1, 2, 3]
    assert stats.bad_records == 2


def test_directory_walk_is_sorted_and_skips_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.html").write_text(f"<h1>Zed</h1><p>{BODY}</p>", encoding="utf-8")
    (tmp_path / "a.txt").write_text(f"# Aye\n{BODY}\n", encoding="utf-8")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    (tmp_path / ".hidden.md").write_text("# Hidden\nx\n", encoding="utf-8")
    assert [p.name for p in iter_corpus_files(tmp_path)] == ["a.txt", "notes.pdf", "z.html"]
    got, stats = items(tmp_path)
    keys = [i.key for i in got]
    assert keys == ["a.txt@1", "b/z.html@1"]
    assert [i.source for i in got] == ["a.txt:1", "b/z.html#1"]
    assert stats.files == 2 and stats.files_skipped == 1
    assert got == items(tmp_path)[0]  # deterministic


def test_missing_corpus_raises(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        list(read_corpus(tmp_path / "nope", LOOSE))
