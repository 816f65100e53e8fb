"""Bad config and input, table-driven: one clear line, the right exit code, no traceback, no loss.

Exit codes: 2 for config/input problems, 1 for runtime problems. Bad lines inside an
otherwise good input are not errors of the run: they become failed rows with their line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, run_cli
from tests.resume.killer import external_sim

DEMO = (CONFIGS / "demo.toml").read_text()
SEEDS = (CONFIGS / "data" / "seeds.jsonl").read_text().splitlines()
SMALL = ["method.codeclm.metadata_count=4", "method.codeclm.instructions_per_metadata=2"]


@dataclass
class Case:
    name: str
    exit_code: int
    needle: str
    config: Callable[[Path], str] = lambda tmp: DEMO
    sets: Callable[[Path], list[str]] = lambda tmp: []
    setup: Callable[[Path], None] = lambda tmp: None
    env: dict[str, str] = field(default_factory=dict)


def _seeds(tmp: Path, lines: list[str] | bytes) -> str:
    path = tmp / "seeds.jsonl"
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return f"run.input={path}"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _finished_output(tmp: Path) -> None:
    """A complete output of the default case, to damage afterwards."""
    proc = run_cli(
        "run", str(tmp / "config.toml"), "--quiet", *_flags([f"run.output={tmp / 'out'}", *SMALL])
    )
    assert proc.returncode == 0, proc.stderr


def _flags(sets: list[str]) -> list[str]:
    out: list[str] = []
    for s in sets:
        out += ["--set", s]
    return out


def _corrupt_cache(tmp: Path) -> None:
    _finished_output(tmp)
    manifest = tmp / "out" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["complete"] = False  # force a resume, which opens the cache
    manifest.write_text(json.dumps(data))
    for name in ("cache.sqlite-wal", "cache.sqlite-shm"):
        (tmp / "out" / name).unlink(missing_ok=True)
    (tmp / "out" / "cache.sqlite").write_bytes(b"this is not a database" * 100)


CASES = [
    Case(
        "malformed toml", 2, "not valid TOML", config=lambda tmp: DEMO.replace("[roles]", "[roles")
    ),
    Case(
        "unknown key",
        2,
        "run.sede",
        config=lambda tmp: DEMO.replace("seed = 0", "seed = 0\nsede = 1"),
    ),
    Case(
        "mistyped key", 2, "run.seed", config=lambda tmp: DEMO.replace("seed = 0", 'seed = "zero"')
    ),
    Case("wrong type via --set", 2, "--set", sets=lambda tmp: ["run.shard_records=many"]),
    Case("malformed --set", 2, "--set", sets=lambda tmp: ["run.seed"]),
    Case(
        "out of range",
        2,
        "endpoints.strong.max_concurrency",
        sets=lambda tmp: ["endpoints.strong.max_concurrency=0"],
    ),
    Case(
        "missing endpoints",
        2,
        "endpoints",
        config=lambda tmp: "[run]\ninput = 'data/seeds.jsonl'\n[roles]\nstrong = 's'\n",
    ),
    Case("missing roles", 2, "roles", config=lambda tmp: DEMO.split("[roles]")[0]),
    Case("role names no endpoint", 2, "roles.judge", sets=lambda tmp: ["roles.judge=nope"]),
    Case(
        "base_url not a URL",
        2,
        "base_url",
        sets=lambda tmp: ["endpoints.strong.base_url=localhost:8000", "endpoints.strong.sim={}"],
    ),
    Case("unknown method", 2, "run.method", sets=lambda tmp: ["run.method=magic"]),
    Case(
        "bad method key", 2, "method.codeclm.thetaa", sets=lambda tmp: ["method.codeclm.thetaa=3"]
    ),
    Case("input missing", 2, "not found", sets=lambda tmp: [f"run.input={tmp / 'nope.jsonl'}"]),
    Case("input is a directory", 2, "is a directory", sets=lambda tmp: [f"run.input={tmp}"]),
    Case("empty input", 2, "no seed records", sets=lambda tmp: [_seeds(tmp, [])]),
    Case("config file missing", 2, "file not found", config=lambda tmp: ""),
    Case(
        "api key variable not set",
        2,
        "SYNTH_TEST_UNSET_KEY",
        sets=lambda tmp: [
            "endpoints.strong.base_url=http://127.0.0.1:9/v1",
            "endpoints.strong.sim={}",
            "endpoints.strong.api_key_env=SYNTH_TEST_UNSET_KEY",
        ],
    ),
    Case(
        "unreachable base_url",
        1,
        "cannot reach",
        sets=lambda tmp: [
            "endpoints.strong.base_url=http://127.0.0.1:9/v1",
            "endpoints.strong.sim={}",
        ],
    ),
    Case("output path is a file", 1, "output", setup=lambda tmp: _write(tmp / "out", "x")),
    Case("cache file corrupted", 1, "cache", setup=_corrupt_cache),
    Case(
        "manifest from a different config",
        1,
        "different config",
        setup=_finished_output,
        sets=lambda tmp: ["run.seed=99"],
    ),
    Case(
        "shards without a manifest",
        1,
        "no manifest",
        setup=lambda tmp: _write(tmp / "out" / "kept-00000.jsonl", "{}\n"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_line(tmp_path: Path, case: Case) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        DEMO.replace('"data/seeds.jsonl"', json.dumps(str(CONFIGS / "data" / "seeds.jsonl")))
    )
    case.setup(tmp_path)  # may run the valid config first, to damage its output
    before = _snapshot(tmp_path / "out")
    text = case.config(tmp_path)
    if text:
        config.write_text(
            text.replace('"data/seeds.jsonl"', json.dumps(str(CONFIGS / "data" / "seeds.jsonl")))
        )
    else:
        config.unlink()
    sets = [f"run.output={tmp_path / 'out'}", *SMALL, *case.sets(tmp_path)]
    proc = run_cli("run", str(config), "--quiet", *_flags(sets), env=case.env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == case.exit_code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert case.needle in lines[0], lines[0]
    # Nothing already written is lost or changed.
    after = _snapshot(tmp_path / "out")
    assert {k: v for k, v in after.items() if k in before and _is_shard(k)} == {
        k: v for k, v in before.items() if _is_shard(k)
    }


def _is_shard(name: str) -> bool:
    return name.endswith(".jsonl") and name.split("-")[0] in ("kept", "rejected", "failed")


def _snapshot(out: Path) -> dict[str, str]:
    if not out.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir() if p.is_file()
    }


def test_bad_lines_become_failed_rows_and_the_run_continues(tmp_path: Path) -> None:
    huge = json.dumps({"instruction": "x" * (9 * 1024 * 1024)})
    lines = [*SEEDS[:4], "{not json", '{"id": "no-instruction"}', huge, '["a list"]', *SEEDS[4:6]]
    raw = ("\n".join(lines) + "\n").encode() + b'{"instruction": "caf\xe9"}\n'
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(CONFIGS / "demo.toml"),
        "--quiet",
        *_flags([f"run.output={out}", _seeds(tmp_path, raw), *SMALL]),
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    failed = [
        json.loads(line)
        for s in manifest["shards"]
        if s["kind"] == "failed"
        for line in (out / s["name"]).read_text().splitlines()
    ]
    by_line = {r["source"]: r["error"] for r in failed}
    assert "not valid JSON" in by_line["seeds.jsonl:5"]
    assert "instruction" in by_line["seeds.jsonl:6"]
    assert "over the" in by_line["seeds.jsonl:7"]
    assert "JSON object" in by_line["seeds.jsonl:8"]
    assert "UTF-8" in by_line["seeds.jsonl:11"]
    assert manifest["totals"]["kept"] > 0


def _keyed_endpoints(url: str) -> list[str]:
    """Overrides pointing both endpoints at ``url``, keyed from SYNTH_TEST_KEY."""
    sets: list[str] = []
    for ep in ("strong", "target"):
        sets += [
            f"endpoints.{ep}.base_url={url}",
            f"endpoints.{ep}.sim={{}}",
            f"endpoints.{ep}.api_key_env=SYNTH_TEST_KEY",
        ]
    return sets


def test_invalid_api_key_is_one_line_and_never_echoed(tmp_path: Path) -> None:
    key = "sk-test-WRONG-0123456789abcdef"
    with external_sim(
        "--api-key-env", "SIM_KEY", "--latency-ms", "1", env={"SIM_KEY": "sk-right-key-xyz"}
    ) as url:
        sets = [f"run.output={tmp_path / 'out'}", *SMALL, *_keyed_endpoints(url)]
        proc = run_cli(
            "run", str(CONFIGS / "demo.toml"), "--quiet", *_flags(sets), env={"SYNTH_TEST_KEY": key}
        )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "HTTP 401" in lines[0] and "api_key_env" in lines[0]
    assert key not in proc.stderr + proc.stdout and key[:12] not in proc.stderr


def test_secret_key_appears_in_no_output(tmp_path: Path) -> None:
    key = "sk-synth-SECRET-4c1d9e7f00aa"
    out = tmp_path / "out"
    with external_sim("--api-key-env", "SIM_KEY", "--latency-ms", "1", env={"SIM_KEY": key}) as url:
        sets = [f"run.output={out}", *SMALL, *_keyed_endpoints(url)]
        proc = run_cli(
            "--log-level",
            "DEBUG",
            "run",
            str(CONFIGS / "demo.toml"),
            *_flags(sets),
            env={"SYNTH_TEST_KEY": key},
        )
    assert proc.returncode == 0, proc.stderr
    needle = key.encode()
    assert needle not in (proc.stdout + proc.stderr).encode()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files) and any(
        p.name == "report.json" for p in files
    )
    for path in files:
        assert needle not in path.read_bytes(), path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["simulated"] is True  # the external sim labelled itself


def test_empty_input_ends_cleanly_for_respond(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        *_flags([f"run.output={out}", _seeds(tmp_path, [])]),
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True and not manifest["shards"]


def test_secrets_env_is_not_needed_for_sim(tmp_path: Path) -> None:
    assert "SYNTH_TEST_UNSET_KEY" not in os.environ


def test_disk_full_stops_with_one_line_and_keeps_committed_rows(tmp_path: Path) -> None:
    """The output on a 512 KiB tmpfs: the run fills it, stops with one clear error (exit 1),
    every committed shard stays whole, and the run resumes once there is room."""
    import shutil
    import subprocess

    from engine.io.manifest import load_manifest, verify_shards

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); /dev/full is tested in unit/io"
        )
    try:
        out = mnt / "out"
        sets = [
            f"run.output={out}",
            "method.codeclm.metadata_count=60",
            "method.codeclm.instructions_per_metadata=6",
        ]
        sets += ["run.shard_records=5", "method.codeclm.response_max_tokens=512"]
        proc = run_cli("run", str(CONFIGS / "demo.toml"), "--quiet", *_flags(sets))
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1, proc.stderr
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "space" in lines[0] or "No space" in lines[0] or "disk" in lines[0], lines[0]
        manifest = load_manifest(out)
        assert manifest is not None and not manifest.complete
        assert verify_shards(out, manifest) == []
        committed = sum(s.rows for s in manifest.shards)
        # Free space: move the output to a roomy disk and resume there.
        roomy = tmp_path / "roomy"
        shutil.copytree(out, roomy)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    sets[0] = f"run.output={roomy}"
    again = run_cli("run", str(CONFIGS / "demo.toml"), "--quiet", *_flags(sets))
    assert again.returncode == 0, again.stderr
    final = load_manifest(roomy)
    assert final is not None and final.complete
    assert sum(s.rows for s in final.shards) == 360 >= committed
