"""Helpers for the real-model tests: the server's URL, running a method, reading its output.

The tests run only when ``SYNTH_ENGINE_REAL_URL`` names an OpenAI-compatible server
(``http://127.0.0.1:PORT/v1``); ``scripts/real-model.sh`` starts llama-cpp-python serving
SmolLM2-135M-Instruct and sets it. ``SYNTH_ENGINE_REAL_MODEL`` is the model id to send
(default ``smollm2-135m``, the alias the script gives it); ``SYNTH_ENGINE_REAL_OUT``, when
set, keeps each run's output there (the script summarises them) instead of in a temporary
directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "real"
URL = os.environ.get("SYNTH_ENGINE_REAL_URL", "")
MODEL = os.environ.get("SYNTH_ENGINE_REAL_MODEL", "smollm2-135m")
KEEP = os.environ.get("SYNTH_ENGINE_REAL_OUT", "")


def out_dir(tmp_path: Path, name: str) -> Path:
    """Where a run writes: ``$SYNTH_ENGINE_REAL_OUT/name`` (emptied first) or ``tmp_path/name``."""
    if KEEP:
        path = Path(KEEP) / name
        if path.exists():
            for child in sorted(path.rglob("*"), reverse=True):
                child.rmdir() if child.is_dir() else child.unlink()
        return path
    return tmp_path / name


@dataclass
class Run:
    """One ``synth-engine run`` and what it wrote."""

    returncode: int
    stderr: str
    out: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def run_method(config: str, out: Path, *overrides: str, timeout: float = 600.0) -> Run:
    """Run ``configs/real/CONFIG.toml`` against the real server, writing to ``out``."""
    args = [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(CONFIGS / f"{config}.toml"),
        "--set",
        f"endpoints.local.base_url={URL}",
        "--set",
        f"endpoints.local.model={MODEL}",
        "--set",
        f"run.output={out}",
    ]
    for o in overrides:
        args += ["--set", o]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    run = Run(proc.returncode, proc.stderr, out)
    if (out / "manifest.json").exists():
        run.manifest = json.loads((out / "manifest.json").read_text())
        for shard in run.manifest["shards"]:
            lines = (out / shard["name"]).read_text().splitlines()
            run.rows.setdefault(shard["kind"], []).extend(json.loads(x) for x in lines)
    if (out / "report.json").exists():
        run.report = json.loads((out / "report.json").read_text())
    return run


def check_accounted(run: Run) -> None:
    """The run completed and every item and row is accounted for, with reasons.

    Asserts: exit 0, a complete manifest not labelled simulated, shard row counts equal
    to the totals, a unique id per row, a stage and an error on every failed row, a reason
    on every rejected row, and real token counts from the server.
    """
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = run.manifest
    assert manifest["complete"] is True
    assert manifest["simulated"] is False
    totals = manifest["totals"]
    for kind in ("kept", "rejected", "failed"):
        assert len(run.rows.get(kind, [])) == totals[kind], kind
    every = [r for rows in run.rows.values() for r in rows]
    assert every, "a run with no row at all"
    assert len({r["id"] for r in every}) == len(every)
    for row in run.rows.get("failed", []):
        assert row.get("stage") and row.get("error"), row
    for row in run.rows.get("rejected", []):
        assert row.get("reason"), row
    usage = manifest["usage"]
    assert usage and all(u["prompt_tokens"] > 0 and u["requests"] > 0 for u in usage.values())
    report = run.report
    assert report["simulated"] is False
    assert report["rows"] == {k: totals[k] for k in ("kept", "rejected", "failed")}
