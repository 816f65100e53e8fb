"""ShardSink: rotation, atomic commits, resume after a crash, and every refusal to write."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.errors import ShardError
from engine.io.manifest import Manifest, load_manifest, verify_shards
from engine.io.shards import ResumeState, ShardSink, iter_rows

CONFIG = "cfg-1"
INPUT = "seeds.jsonl:100:abc"


def _open(out: Path, **changes: Any) -> tuple[ShardSink, ResumeState]:
    kwargs: dict[str, Any] = {
        "shard_records": 4,
        "config_hash": CONFIG,
        "input_fingerprint": INPUT,
        "method": "respond",
        "engine_version": "0.1.0",
        "simulated": True,
    }
    kwargs.update(changes)
    return ShardSink.open(out, **kwargs)


def _row(index: int, n: int = 0) -> dict[str, Any]:
    return {"id": f"{index}-{n}", "z": 1, "a": [index, n]}


def _kept(index: int, count: int = 1) -> list[tuple[str, dict[str, Any]]]:
    return [("kept", _row(index, n)) for n in range(count)]


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


def _shard_files(out: Path) -> list[str]:
    return [n for n in _files(out) if n != "manifest.json"]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _full_disk_for(suffix: str, armed: list[bool]) -> Any:
    """An ``open`` opener that fails like a full disk for paths ending in ``suffix`` once armed."""

    def opener(path: str, flags: int) -> int:
        if armed[0] and path.endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return os.open(path, flags, 0o666)

    return opener


# --- fresh output ------------------------------------------------------------------------


def test_fresh_open_writes_an_empty_manifest(tmp_path: Path) -> None:
    out = tmp_path / "a" / "out"
    sink, resume = _open(out)
    assert resume == ResumeState(done=resume.done, resumed=False, complete=False, discarded=[])
    assert resume.done.count == 0
    manifest = load_manifest(out)
    assert manifest is not None
    assert (manifest.config_hash, manifest.input_fingerprint, manifest.method) == (
        CONFIG,
        INPUT,
        "respond",
    )
    assert manifest.simulated is True and manifest.complete is False
    assert manifest.shards == []
    assert manifest.totals == {"kept": 0, "rejected": 0, "failed": 0, "items": 0}
    assert manifest.started_at.endswith("Z")
    assert _files(out) == ["manifest.json"]
    sink.abandon()


def test_rotation_keeps_an_items_rows_together(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=3)
    sink.write_item(0, _kept(0, 2))
    assert _shard_files(tmp_path) == ["kept-00000.jsonl.partial"]
    # 2 + 2 rows: the shard overflows shard_records rather than splitting item 1.
    sink.write_item(1, _kept(1, 2))
    assert _shard_files(tmp_path) == ["kept-00000.jsonl"]
    assert [r["id"] for r in _lines(tmp_path / "kept-00000.jsonl")] == ["0-0", "0-1", "1-0", "1-1"]
    sink.write_item(2, _kept(2, 3))
    sink.write_item(3, _kept(3, 1))
    manifest = sink.close(complete=True)
    assert [s.name for s in manifest.shards] == [
        "kept-00000.jsonl",
        "kept-00001.jsonl",
        "kept-00002.jsonl",
    ]
    assert [s.rows for s in manifest.shards] == [4, 3, 1]
    assert manifest.totals == {"kept": 8, "rejected": 0, "failed": 0, "items": 4}
    assert manifest.done.watermark == 4 and manifest.done.extra == []


def test_kinds_are_numbered_independently_and_empty_kinds_have_no_file(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=2)
    sink.write_item(0, [("kept", _row(0)), ("rejected", _row(0, 1))])
    sink.write_item(1, [("kept", _row(1))])  # kept reaches 2: commit both kinds
    sink.write_item(2, [("kept", _row(2)), ("kept", _row(2, 1))])  # commit kept only
    sink.write_item(3, [("failed", _row(3))])
    sink.write_item(4, [])
    manifest = sink.close(complete=True)
    assert [(s.name, s.kind, s.rows) for s in manifest.shards] == [
        ("kept-00000.jsonl", "kept", 2),
        ("rejected-00000.jsonl", "rejected", 1),
        ("kept-00001.jsonl", "kept", 2),
        ("failed-00000.jsonl", "failed", 1),
    ]
    assert manifest.totals == {"kept": 4, "rejected": 1, "failed": 1, "items": 5}
    assert _shard_files(tmp_path) == [s.name for s in sorted(manifest.shards, key=lambda s: s.name)]


def test_manifest_sizes_and_hashes_match_the_files(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=5)
    for i in range(12):
        sink.write_item(i, [("kept", _row(i)), ("failed", {"id": f"f{i}", "error": "x" * i})])
    manifest = sink.close(complete=True)
    assert verify_shards(tmp_path, manifest) == []
    for shard in manifest.shards:
        data = (tmp_path / shard.name).read_bytes()
        assert shard.sha256 == hashlib.sha256(data).hexdigest()
        assert shard.bytes == len(data)
        assert shard.rows == data.count(b"\n")
    # orjson keeps key order and writes one compact row per line.
    first = (tmp_path / "kept-00000.jsonl").read_bytes().splitlines()[0]
    assert first == b'{"id":"0-0","z":1,"a":[0,0]}'


def test_partials_are_invisible_until_commit(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=100)
    sink.write_item(0, _kept(0))
    sink.write_item(1, [("rejected", _row(1))])
    assert _shard_files(tmp_path) == ["kept-00000.jsonl.partial", "rejected-00000.jsonl.partial"]
    assert list(iter_rows(tmp_path, "kept")) == []
    assert sink.items_done == 0
    assert sink.rows_written == {"kept": 1, "rejected": 1, "failed": 0}
    sink.commit()
    assert _shard_files(tmp_path) == ["kept-00000.jsonl", "rejected-00000.jsonl"]
    assert sink.items_done == 2
    assert [r["id"] for r in iter_rows(tmp_path, "kept")] == ["0-0"]
    sink.commit()  # nothing new: no empty shard appears
    assert len(sink.manifest.shards) == 2
    sink.close(complete=True)


def test_out_of_order_items_advance_the_watermark_at_commit(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=100)
    for i in (2, 0, 5, 1):
        sink.write_item(i, _kept(i))
    sink.commit()
    assert sink.manifest.done.watermark == 3
    assert sink.manifest.done.extra == [5]
    assert sink.items_done == 4
    sink.close(complete=False, stop_reason="stopped")


def test_items_without_rows_are_committed_in_batches(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=3)
    for i in range(7):
        sink.write_item(i, [])
    # Commits after items 2 and 5, so the done set is persisted even without rows.
    assert load_manifest(tmp_path) == sink.manifest
    assert sink.manifest.done.watermark == 6
    assert _shard_files(tmp_path) == []
    sink.close(complete=True)


def test_close_records_how_the_run_ended(tmp_path: Path) -> None:
    commits: list[Manifest] = []
    clock = FakeClock()
    sink, _ = _open(tmp_path, on_commit=commits.append, clock=clock)
    sink.write_item(0, _kept(0))
    sink.manifest.usage = {"strong": {"prompt_tokens": 10, "completion_tokens": 5}}
    manifest = sink.close(complete=True)
    assert manifest.complete is True
    assert manifest.stop_reason is None
    assert manifest.ended_at is not None and manifest.ended_at.endswith("Z")
    assert manifest.usage == {"strong": {"prompt_tokens": 10, "completion_tokens": 5}}
    assert load_manifest(tmp_path) == manifest
    assert commits == [manifest]
    assert sink.commits == 1
    with pytest.raises(RuntimeError):
        sink.write_item(1, _kept(1))
    with pytest.raises(RuntimeError):
        sink.close(complete=True)
    again, resume = _open(tmp_path)
    assert resume.resumed is True and resume.complete is True
    assert 0 in resume.done
    again.abandon()


def test_incomplete_close_keeps_the_stop_reason(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path)
    sink.write_item(0, _kept(0))
    manifest = sink.close(complete=False, stop_reason="stopped")
    assert (manifest.complete, manifest.stop_reason) == (False, "stopped")
    sink2, resume = _open(tmp_path)
    assert resume.complete is False
    sink2.write_item(1, _kept(1))
    sink2.commit()
    # While running again the manifest no longer claims an ending.
    assert (sink2.manifest.stop_reason, sink2.manifest.ended_at) == (None, None)
    sink2.close(complete=True)


def test_bad_rows_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path)
    with pytest.raises(ValueError, match="unknown row kind"):
        sink.write_item(0, [("kept", _row(0)), ("weird", _row(0))])
    with pytest.raises(ShardError, match="not JSON-serializable"):
        sink.write_item(0, [("kept", _row(0)), ("kept", {"x": object()})])
    with pytest.raises(ValueError):
        sink.write_item(-1, [])
    assert _shard_files(tmp_path) == []
    sink.write_item(0, _kept(0))  # the sink is still usable
    with pytest.raises(ValueError, match="already written"):
        sink.write_item(0, _kept(0))
    sink.commit()
    with pytest.raises(ValueError, match="already written"):
        sink.write_item(0, _kept(0))
    manifest = sink.close(complete=True)
    assert manifest.totals["kept"] == 1


# --- resume --------------------------------------------------------------------------------


def test_crash_and_resume_gives_each_row_once(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=4)
    for i in range(6):
        sink.write_item(i, _kept(i) + [("failed", _row(i, 9))] * (i % 2))
    # Items 0-3 were committed (kept reached 4); items 4 and 5 sit in partials.
    sink.abandon()
    assert "kept-00001.jsonl.partial" in _files(tmp_path)

    sink, resume = _open(tmp_path, shard_records=4)
    assert resume.resumed is True and resume.complete is False
    assert sorted(resume.discarded) == ["failed-00001.jsonl.partial", "kept-00001.jsonl.partial"]
    assert [i for i in range(6) if i in resume.done] == [0, 1, 2, 3]
    assert not any(n.endswith(".partial") for n in _files(tmp_path))
    for i in range(6):
        if i not in resume.done:
            sink.write_item(i, _kept(i) + [("failed", _row(i, 9))] * (i % 2))
    manifest = sink.close(complete=True)

    assert [s.name for s in manifest.shards] == [
        "kept-00000.jsonl",
        "failed-00000.jsonl",
        "kept-00001.jsonl",
        "failed-00001.jsonl",
    ]
    kept = [r["id"] for r in iter_rows(tmp_path, "kept")]
    assert kept == [f"{i}-0" for i in range(6)]
    assert [r["id"] for r in iter_rows(tmp_path, "failed")] == ["1-9", "3-9", "5-9"]
    assert manifest.totals == {"kept": 6, "rejected": 0, "failed": 3, "items": 6}
    assert verify_shards(tmp_path, manifest) == []


def test_resume_done_set_is_a_copy(tmp_path: Path) -> None:
    sink, resume = _open(tmp_path, shard_records=1)
    sink.write_item(0, _kept(0))
    assert 0 not in resume.done
    assert sink.items_done == 1
    sink.close(complete=True)


def test_orphan_shard_from_a_crash_after_rename_is_discarded(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=2)
    for i in range(2):
        sink.write_item(i, _kept(i))
    sink.close(complete=False, stop_reason="stopped")
    # A crash between the rename and the manifest write leaves a shard no manifest lists.
    (tmp_path / "kept-00001.jsonl").write_bytes(b'{"id":"2-0"}\n')
    (tmp_path / "manifest.json.tmp").write_bytes(b"{")
    (tmp_path / "cache.sqlite").write_bytes(b"not ours")

    sink, resume = _open(tmp_path, shard_records=2)
    assert sorted(resume.discarded) == ["kept-00001.jsonl", "manifest.json.tmp"]
    assert _files(tmp_path) == ["cache.sqlite", "kept-00000.jsonl", "manifest.json"]
    assert 2 not in resume.done
    sink.write_item(2, _kept(2))
    manifest = sink.close(complete=True)
    assert manifest.shards[-1].name == "kept-00001.jsonl"
    assert [r["id"] for r in iter_rows(tmp_path, "kept")] == ["0-0", "1-0", "2-0"]


def test_different_config_is_refused_unless_forced(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=1)
    sink.write_item(0, _kept(0))
    sink.close(complete=True)
    (tmp_path / "cache.sqlite").write_bytes(b"x")
    (tmp_path / "report.json").write_bytes(b"{}")

    with pytest.raises(ShardError) as info:
        _open(tmp_path, config_hash="cfg-2")
    assert "different config (hash cfg-1 != cfg-2)" in str(info.value)
    assert info.value.hint == "use a new output directory, or pass --force-new to overwrite"
    with pytest.raises(ShardError, match="different input"):
        _open(tmp_path, input_fingerprint="other.jsonl:1:x")

    sink, resume = _open(tmp_path, config_hash="cfg-2", force_new=True)
    assert resume.resumed is False and resume.done.count == 0
    assert sorted(resume.discarded) == ["kept-00000.jsonl", "manifest.json"]
    assert _files(tmp_path) == ["cache.sqlite", "manifest.json", "report.json"]
    manifest = load_manifest(tmp_path)
    assert manifest is not None and manifest.config_hash == "cfg-2" and manifest.shards == []
    sink.abandon()


def test_corrupt_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": 1, "shards": ')
    with pytest.raises(ShardError) as info:
        _open(tmp_path)
    assert info.value.path == str(tmp_path / "manifest.json")
    assert info.value.hint is not None and "cache.sqlite" in info.value.hint


@pytest.mark.parametrize("force_new", [False, True])
def test_shards_no_manifest_lists_are_left_alone_even_when_forced(
    tmp_path: Path, force_new: bool
) -> None:
    # No manifest lists this file, so nothing proves this output wrote it: --force-new
    # must not delete it (it may be a user's file), and a new run must not overwrite it.
    (tmp_path / "kept-00000.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "failed-00003.jsonl.partial").write_text("")
    with pytest.raises(ShardError) as info:
        _open(tmp_path, force_new=force_new)
    assert "kept-00000.jsonl" in info.value.reason and "no manifest lists" in info.value.reason
    assert info.value.hint == "move such files away, or choose a new output directory"
    assert (tmp_path / "kept-00000.jsonl").read_text() == '{"id": 1}\n'


def test_force_new_deletes_only_what_the_old_output_wrote(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=2)
    for i in range(4):
        sink.write_item(i, _kept(i))
    sink.close(complete=True)
    (tmp_path / "seeds.jsonl").write_text('{"instruction": "mine"}\n')
    (tmp_path / "kept-00009.jsonl").write_text("crash orphan, numbered after the listed\n")
    (tmp_path / "notes.txt").write_text("user's\n")
    sink, resume = _open(tmp_path, force_new=True, config_hash="cfg-2")
    assert sorted(resume.discarded) == [
        "kept-00000.jsonl",
        "kept-00001.jsonl",
        "kept-00009.jsonl",
        "manifest.json",
    ]
    assert (tmp_path / "seeds.jsonl").exists() and (tmp_path / "notes.txt").exists()
    sink.abandon()


def test_an_unlisted_shard_numbered_among_the_listed_is_not_ours(tmp_path: Path) -> None:
    sink, _ = _open(tmp_path, shard_records=2)
    for i in range(6):
        sink.write_item(i, _kept(i))
    sink.close(complete=False)
    # kept-00001 is listed; a file of the same number pattern below the last listed one
    # that the manifest does not list was put there by someone else.
    manifest = load_manifest(tmp_path)
    assert manifest is not None
    listed = [s.name for s in manifest.shards]
    assert listed == ["kept-00000.jsonl", "kept-00001.jsonl", "kept-00002.jsonl"]
    raw = json.loads((tmp_path / "manifest.json").read_text())
    raw["shards"] = [s for s in raw["shards"] if s["name"] != "kept-00001.jsonl"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    for force_new in (False, True):
        with pytest.raises(ShardError, match="kept-00001.jsonl, which its manifest does not list"):
            _open(tmp_path, force_new=force_new)
    assert (tmp_path / "kept-00001.jsonl").exists()


def test_an_input_named_like_an_output_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kept-00000.jsonl").write_text('{"instruction": "x"}\n')
    with pytest.raises(ShardError, match="lies in the output directory"):
        _open(tmp_path, protect=[tmp_path / "kept-00000.jsonl"])
    assert (tmp_path / "kept-00000.jsonl").exists()


def test_an_output_that_committed_nothing_claims_nothing(tmp_path: Path) -> None:
    # A first run that wrote no row (wrong input, stopped at once) must not lock the
    # directory to its config and input: fixing the input and rerunning just works.
    sink, _ = _open(tmp_path)
    sink.close(complete=False, stop_reason="error")
    sink, resume = _open(tmp_path, config_hash="cfg-2", input_fingerprint="other")
    assert resume.resumed is False and resume.discarded == ["manifest.json"]
    sink.write_item(0, _kept(0))
    sink.close(complete=True)
    with pytest.raises(ShardError, match="different config"):
        _open(tmp_path, config_hash="cfg-3", input_fingerprint="other")


def test_rows_pass_the_redactor_before_they_are_written(tmp_path: Path) -> None:
    secret = b"sk-test-0123456789abcdef"
    sink, _ = _open(tmp_path, redact=lambda b: b.replace(secret, b"[redacted]"))
    sink.write_item(0, [("failed", {"id": "a", "error": "key " + secret.decode() + " refused"})])
    sink.close(complete=True)
    text = (tmp_path / "failed-00000.jsonl").read_bytes()
    assert secret not in text and b"[redacted]" in text


def test_only_partials_without_a_manifest_start_fresh(tmp_path: Path) -> None:
    (tmp_path / "kept-00000.jsonl.partial").write_text('{"id": 1}\n')
    sink, resume = _open(tmp_path)
    assert resume.discarded == ["kept-00000.jsonl.partial"]
    assert resume.resumed is False
    sink.abandon()


@pytest.mark.parametrize("damage", ["delete", "truncate", "tamper"])
def test_damaged_listed_shard_is_refused(tmp_path: Path, damage: str) -> None:
    sink, _ = _open(tmp_path, shard_records=2)
    for i in range(4):
        sink.write_item(i, _kept(i))
    sink.close(complete=False)
    shard = tmp_path / "kept-00001.jsonl"
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-5])
    else:
        shard.write_bytes(shard.read_bytes().replace(b'"3-0"', b'"9-0"'))
    with pytest.raises(ShardError) as info:
        _open(tmp_path, shard_records=2)
    assert info.value.path == str(shard)
    assert "kept-00001.jsonl" in str(info.value)


# --- failures while writing ------------------------------------------------------------


def test_disk_full_on_a_new_shard_keeps_committed_shards(tmp_path: Path) -> None:
    armed = [False]
    sink, _ = _open(tmp_path, shard_records=2, opener=_full_disk_for(".partial", armed))
    for i in range(2):
        sink.write_item(i, _kept(i))
    committed = load_manifest(tmp_path)
    assert committed is not None and len(committed.shards) == 1

    armed[0] = True
    with pytest.raises(ShardError) as info:
        sink.write_item(2, _kept(2))
    assert info.value.hint is not None and "disk is full" in info.value.hint
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    # The sink refuses further work and will not finalize a run it could not write.
    with pytest.raises(ShardError, match="earlier error"):
        sink.write_item(3, _kept(3))
    with pytest.raises(ShardError, match="not finalized"):
        sink.close(complete=True)

    assert load_manifest(tmp_path) == committed
    assert verify_shards(tmp_path, committed) == []
    armed[0] = False
    sink, resume = _open(tmp_path, shard_records=2)
    assert [i for i in range(4) if i in resume.done] == [0, 1]
    sink.abandon()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_real_enospc_from_dev_full_at_commit(tmp_path: Path) -> None:
    armed = [False]

    def opener(path: str, flags: int) -> int:
        # Shards after the first commit go to /dev/full: writes succeed into the buffer,
        # the flush at commit gets a real ENOSPC from the kernel.
        if armed[0] and path.endswith(".partial"):
            return os.open("/dev/full", os.O_WRONLY)
        return os.open(path, flags, 0o666)

    sink, _ = _open(tmp_path, shard_records=2, opener=opener)
    sink.write_item(0, _kept(0, 2))
    committed = load_manifest(tmp_path)
    assert committed is not None and committed.totals["kept"] == 2
    armed[0] = True
    sink.write_item(1, _kept(1))
    with pytest.raises(ShardError) as info:
        sink.commit()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert info.value.path == str(tmp_path / "kept-00001.jsonl.partial")
    assert "disk is full" in (info.value.hint or "")
    sink.abandon()
    assert load_manifest(tmp_path) == committed
    assert verify_shards(tmp_path, committed) == []
    assert _shard_files(tmp_path) == ["kept-00000.jsonl"]


def test_manifest_write_failure_leaves_an_orphan_that_resume_discards(tmp_path: Path) -> None:
    armed = [False]
    sink, _ = _open(tmp_path, shard_records=2, opener=_full_disk_for("manifest.json.tmp", armed))
    sink.write_item(0, _kept(0, 2))
    committed = sink.manifest
    armed[0] = True
    sink.write_item(1, _kept(1))
    with pytest.raises(ShardError):
        sink.commit()
    assert sink.manifest == committed
    sink.abandon()
    assert load_manifest(tmp_path) == committed
    assert "kept-00001.jsonl" in _files(tmp_path)

    sink, resume = _open(tmp_path, shard_records=2)
    assert resume.discarded == ["kept-00001.jsonl"]
    assert 1 not in resume.done
    sink.abandon()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out"
    path.write_text("I am a file")
    with pytest.raises(ShardError) as info:
        _open(path)
    assert info.value.hint == "check the output path and its permissions"
    assert info.value.path == str(path)
    with pytest.raises(ShardError) as info:
        _open(path / "sub")
    assert info.value.hint == "check the output path and its permissions"


# --- writer task ----------------------------------------------------------------------------
