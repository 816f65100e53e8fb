"""The response cache's copy (shared global phase on Ray): consistent, atomic, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ShardError
from engine.llm.cache import CachedResponse, ResponseCache, copy_cache


def _answer(i: int) -> CachedResponse:
    return CachedResponse(texts=[f"answer {i}"], finish_reasons=["stop"])


def test_copy_of_a_cache_in_use_holds_every_committed_response(tmp_path: Path) -> None:
    live = ResponseCache(tmp_path / "a.sqlite")  # stays open, in WAL mode, like a run's
    for i in range(50):
        live.put(b"k%d" % i, _answer(i))
    target = tmp_path / "part" / "cache.sqlite"
    target.parent.mkdir()
    copy_cache(live.path, target)
    live.put(b"later", _answer(99))  # after the copy: not in it
    copy = ResponseCache(target)
    try:
        assert len(copy) == 50
        assert copy.get(b"k7") == _answer(7)
        assert copy.get(b"later") is None
    finally:
        copy.close()
        live.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["cache.sqlite"]  # no .partial


def test_copy_failure_is_a_shard_error_and_leaves_no_file(tmp_path: Path) -> None:
    live = ResponseCache(tmp_path / "a.sqlite")
    live.put(b"k", _answer(1))
    with pytest.raises(ShardError, match="cannot copy the response cache"):
        copy_cache(live.path, tmp_path / "missing-dir" / "cache.sqlite")
    not_a_cache = tmp_path / "junk.sqlite"
    not_a_cache.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ShardError):
        copy_cache(not_a_cache, tmp_path / "b.sqlite")
    assert not (tmp_path / "b.sqlite").exists()
    assert not (tmp_path / "b.sqlite.partial").exists()
    live.close()
