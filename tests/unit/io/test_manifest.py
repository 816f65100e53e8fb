"""The manifest: DoneSet bookkeeping, atomic writes, loading errors, shard verification."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ShardError
from engine.io.manifest import (
    DoneSet,
    DoneState,
    Manifest,
    ShardInfo,
    load_manifest,
    verify_shards,
    write_manifest,
)


def _manifest(**changes: Any) -> Manifest:
    fields: dict[str, Any] = {
        "engine_version": "0.1.0",
        "config_hash": "cfg",
        "input_fingerprint": "in.jsonl:10:abc",
        "method": "respond",
        "started_at": "2024-01-01T00:00:00.000Z",
        "updated_at": "2024-01-01T00:00:00.000Z",
    }
    fields.update(changes)
    return Manifest(**fields)


def _shard(out: Path, name: str, kind: str, lines: list[bytes]) -> ShardInfo:
    data = b"".join(line + b"\n" for line in lines)
    (out / name).write_bytes(data)
    return ShardInfo(
        name=name,
        kind=kind,
        rows=len(lines),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


# --- DoneSet -------------------------------------------------------------------------


def test_doneset_advances_the_watermark_over_contiguous_indices() -> None:
    done = DoneSet()
    for i in (2, 4, 1):
        done.add(i)
    assert done.watermark == 0
    assert done.extra == [1, 2, 4]
    assert 0 not in done and 1 in done and 3 not in done
    done.add(0)
    assert done.watermark == 3
    assert done.extra == [4]
    done.add(3)
    assert (done.watermark, done.extra, done.count, len(done)) == (5, [], 5, 5)


def test_doneset_add_is_idempotent_and_rejects_negative() -> None:
    done = DoneSet()
    done.add(3)
    done.add(3)
    done.add(0)
    done.add(0)
    assert done.count == 2
    assert done.extra == [3]
    with pytest.raises(ValueError):
        done.add(-1)
    assert -1 not in done
    assert "x" not in done


def test_doneset_normalizes_its_input_and_round_trips() -> None:
    done = DoneSet(2, [7, 1, 2, 3, 7, 5])
    assert done.watermark == 4
    assert done.extra == [5, 7]
    state = done.to_state()
    assert state == DoneState(watermark=4, extra=[5, 7])
    assert DoneSet.from_state(state) == done
    with pytest.raises(ValueError):
        DoneSet(-1)
    with pytest.raises(ValueError):
        DoneSet(0, [-2])


def test_doneset_extra_and_copy_are_independent() -> None:
    done = DoneSet(0, [5])
    done.extra.append(9)
    copy = done.copy()
    copy.add(6)
    assert done.extra == [5]
    assert copy.extra == [5, 6]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.randoms(use_true_random=False))
def test_doneset_matches_a_plain_set_for_any_order(n: int, rng: random.Random) -> None:
    order = list(range(n))
    rng.shuffle(order)
    done = DoneSet()
    added: set[int] = set()
    for i in order:
        done.add(i)
        added.add(i)
        mex = next(k for k in range(n + 1) if k not in added)
        assert done.watermark == mex
        assert done.extra == sorted(k for k in added if k > mex)
        assert done.count == len(added)
    assert all(i in done for i in range(n))
    assert n not in done
    assert done.watermark == n and done.extra == []


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=0, max_value=300),
    st.randoms(use_true_random=False),
)
def test_doneset_stays_within_the_window(window: int, n: int, rng: random.Random) -> None:
    # Items start in index order, never more than `window` past the oldest unfinished
    # one, and finish in any order: the list above the watermark never outgrows the window.
    done = DoneSet()
    in_flight: list[int] = []
    next_index = 0
    finished: set[int] = set()
    while next_index < n or in_flight:
        while next_index < n and next_index < done.watermark + window:
            in_flight.append(next_index)
            next_index += 1
        i = in_flight.pop(rng.randrange(len(in_flight)))
        done.add(i)
        finished.add(i)
        assert len(done.extra) <= window - 1
        assert len(done.extra) <= max(0, next_index - 1 - done.watermark)
        assert all((k in done) == (k in finished) for k in range(max(0, i - window), i + window))
    assert done.watermark == n and done.extra == []


# --- load / write ----------------------------------------------------------------------


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    info = _shard(tmp_path, "kept-00000.jsonl", "kept", [b'{"a":1}'])
    manifest = _manifest(
        shards=[info],
        totals={"kept": 1, "items": 1},
        done=DoneState(watermark=1, extra=[3]),
        usage={"strong": {"prompt_tokens": 5}},
        extra={"versions": {"python": "3.11"}},
    )
    write_manifest(tmp_path, manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept-00000.jsonl", "manifest.json"]
    assert load_manifest(tmp_path) == manifest


def test_load_returns_none_without_a_manifest(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) is None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"engine_version": "x"}',
        b"",
    ],
)
def test_corrupt_manifest_is_a_shard_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ShardError) as info:
        load_manifest(tmp_path)
    assert info.value.path == str(tmp_path / "manifest.json")
    # The advice keeps the response cache: recovering costs no paid call.
    assert info.value.hint is not None and "cache.sqlite" in info.value.hint
    assert "delete OUT" not in info.value.hint


def test_negative_watermark_is_rejected_on_load(tmp_path: Path) -> None:
    write_manifest(tmp_path, _manifest())
    path = tmp_path / "manifest.json"
    path.write_text(path.read_text().replace('"watermark": 0', '"watermark": -4'))
    with pytest.raises(ShardError, match="corrupt manifest"):
        load_manifest(tmp_path)


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    write_manifest(tmp_path, _manifest(format=99))
    with pytest.raises(ShardError, match="format 99"):
        load_manifest(tmp_path)


def test_failed_manifest_write_leaves_the_previous_one(tmp_path: Path) -> None:
    old = _manifest(totals={"items": 1})
    write_manifest(tmp_path, old)

    def full_disk(path: str, flags: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    with pytest.raises(ShardError) as info:
        write_manifest(tmp_path, _manifest(totals={"items": 2}), opener=full_disk)
    assert "disk is full" in (info.value.hint or "")
    assert info.value.path == str(tmp_path / "manifest.json")
    assert isinstance(info.value.__cause__, OSError)
    assert load_manifest(tmp_path) == old
    assert not (tmp_path / "manifest.json.tmp").exists()


# --- verify_shards ------------------------------------------------------------------------


def test_verify_accepts_matching_shards(tmp_path: Path) -> None:
    shards = [
        _shard(tmp_path, "kept-00000.jsonl", "kept", [b'{"a":1}', b'{"a":2}']),
        _shard(tmp_path, "failed-00000.jsonl", "failed", [b'{"e":1}']),
    ]
    assert verify_shards(tmp_path, _manifest(shards=shards)) == []


def test_verify_reports_every_kind_of_problem(tmp_path: Path) -> None:
    missing = _shard(tmp_path, "kept-00000.jsonl", "kept", [b"{}"])
    (tmp_path / "kept-00000.jsonl").unlink()
    short = _shard(tmp_path, "kept-00001.jsonl", "kept", [b"{}", b"{}"])
    (tmp_path / "kept-00001.jsonl").write_bytes(b"{}\n")
    tampered = _shard(tmp_path, "kept-00002.jsonl", "kept", [b'{"a":1}'])
    (tmp_path / "kept-00002.jsonl").write_bytes(b'{"a":2}\n')
    grown = _shard(tmp_path, "kept-00003.jsonl", "kept", [b'{"a":1}'])
    (tmp_path / "kept-00003.jsonl").write_bytes(b'{"a":11}\n')
    escape = ShardInfo(name="../x.jsonl", kind="kept", rows=0, bytes=0, sha256="")
    problems = verify_shards(tmp_path, _manifest(shards=[missing, short, tampered, grown, escape]))
    assert len(problems) == 5
    assert problems[0].startswith("kept-00000.jsonl") and "missing" in problems[0]
    assert problems[1] == "kept-00001.jsonl: 2 rows listed, 1 found"
    assert problems[2].startswith("kept-00002.jsonl") and "SHA-256" in problems[2]
    assert problems[3].startswith("kept-00003.jsonl") and "bytes" in problems[3]
    assert "not a plain file name" in problems[4]
