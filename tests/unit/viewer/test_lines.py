"""LineIndex: pages of a JSONL file without reading the whole file, also while it grows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.viewer.lines import LineIndex


def _write(path: Path, lines: list[bytes], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)


def test_first_page_reads_only_what_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "kept-00000.jsonl"
    _write(path, [b'{"i": %d}' % i for i in range(10_000)])
    index = LineIndex(path, stride=64)
    assert index.read(0, 3) == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
    assert index.scanned_lines < 100  # the rest of the file was not scanned
    assert index.read(9_998, 5) == [b'{"i": 9998}', b'{"i": 9999}']
    assert index.count() == 10_000


def test_a_growing_file_with_a_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / "kept-00000.jsonl.partial"
    _write(path, [b"a", b"b"], tail=b'{"half')
    index = LineIndex(path, stride=2)
    assert index.count() == 2
    assert index.read(2, 1) == []  # the half line is not a row yet
    with path.open("ab") as f:
        f.write(b'": 1}\nc\n')
    assert index.count() == 4
    assert index.read(1, 10) == [b"b", b'{"half": 1}', b"c"]


def test_a_replaced_shorter_file_is_indexed_afresh(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    _write(path, [b"one", b"two", b"three"])
    index = LineIndex(path, stride=1)
    assert index.count() == 3
    _write(path, [b"new"])
    assert index.read(0, 5) == [b"new"]
    assert index.count() == 1


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=300),
    stride=st.integers(min_value=1, max_value=17),
    reads=st.lists(st.tuples(st.integers(0, 320), st.integers(1, 50)), min_size=1, max_size=8),
)
def test_any_read_matches_splitting_the_file(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    stride: int,
    reads: list[tuple[int, int]],
) -> None:
    path = tmp_path_factory.mktemp("lines") / "f.jsonl"
    lines = [(b"%d:" % i) + b"x" * n for i, n in enumerate(lengths)]
    _write(path, lines)
    index = LineIndex(path, stride=stride)
    for start, count in reads:  # in any order: the index extends and reuses itself
        assert index.read(start, count) == lines[start : start + count]
    assert index.count() == len(lines)
    assert list(index.iter_from(0)) == lines
