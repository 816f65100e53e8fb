"""The outputs of the built-in methods' shipped configs, as digests: the reference that a
refactor of the methods must reproduce exactly (same row ids, same contents, same
derived files).

``python -m tests.golden.outputs`` records ``tests/golden/method_outputs.json`` (do it
only when a change to the outputs is intended, and say so in the commit);
``tests/golden/test_method_outputs.py`` compares a fresh run of each config with it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RECORD = Path(__file__).with_name("method_outputs.json")

# The shipped configs of every built-in method, made small enough to run in seconds.
CASES: dict[str, tuple[str, list[str]]] = {
    "codeclm": (
        "configs/demo.toml",
        ["method.codeclm.metadata_count=20", "method.codeclm.instructions_per_metadata=2"],
    ),
    "respond": ("configs/respond.toml", []),
    "backtranslation": ("configs/backtranslation.toml", []),
    "selfguide": ("configs/selfguide.toml", []),
    "selfguide_classification": ("configs/selfguide_classification.toml", []),
    "lab": ("configs/lab.toml", []),
}


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def run_case(name: str, out: Path) -> dict[str, Any]:
    """Run one case into ``out``; its rows by kind (id -> digest) and derived files."""
    config, sets = CASES[name]
    cmd = [sys.executable, "-m", "engine", "run", str(ROOT / config), "--quiet"]
    for item in [f"run.output={out}", *sets]:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"{name}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    rows: dict[str, dict[str, str]] = {"kept": {}, "rejected": {}, "failed": {}}
    for shard in manifest["shards"]:
        for line in (out / shard["name"]).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[shard["kind"]][str(row["id"])] = _digest(row)
    derived = {
        str(d.get("name")): d.get("sha256") for d in manifest["extra"].get("derived", []) or []
    }
    return {"rows": rows, "derived": derived}


def record() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {name: run_case(name, Path(tmp) / name) for name in CASES}


if __name__ == "__main__":
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"recorded {RECORD}\n")
