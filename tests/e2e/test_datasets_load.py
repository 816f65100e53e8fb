"""Every method's output loads with ``datasets.load_dataset("json", data_files=...)`` in one
call per row kind, with no ``features=``, however many shards (``run.shard_records = 4``).

``datasets`` takes a column's type from the first shard it reads, so this holds only
because each method writes one schema (``engine.methods.base.RowSchema``): the same
columns in every kind, a column null on every row of a kind that has no value for it,
one type per column. The loader runs in a subprocess (its import is slow, and its own
deprecation warnings are not this project's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.methods import backtranslation, codeclm, lab, selfguide
from tests.conftest import CONFIGS, run_cli

pytest.importorskip("datasets")

LOADER = """
import json, sys
import datasets
datasets.disable_progress_bars()
out, cache = sys.argv[1], sys.argv[2]
result = {}
for kind in ("kept", "rejected", "failed"):
    files = sorted(__import__("glob").glob(f"{out}/{kind}-*.jsonl"))
    if not files:
        continue
    ds = datasets.load_dataset(
        "json", data_files=f"{out}/{kind}-*.jsonl", split="train", cache_dir=cache
    )
    result[kind] = {"files": len(files), "rows": ds.num_rows, "columns": ds.column_names}
print(json.dumps(result))
"""

CASES = {
    "codeclm": (
        "demo.toml",
        ["method.codeclm.metadata_count=6", "method.codeclm.instructions_per_metadata=3"],
        codeclm.COLUMNS,
    ),
    "backtranslation": ("backtranslation.toml", [], backtranslation.COLUMNS),
    "selfguide": ("selfguide_classification.toml", [], selfguide.COLUMNS),
    "lab": ("lab.toml", [], lab.COLUMNS),
}


def _count(out: Path, kind: str) -> int:
    return sum(len(p.read_text(encoding="utf-8").splitlines()) for p in out.glob(f"{kind}-*.jsonl"))


@pytest.mark.parametrize("method", sorted(CASES))
def test_multi_shard_output_loads_with_datasets_per_kind(tmp_path: Path, method: str) -> None:
    config, extra, columns = CASES[method]
    out = tmp_path / "out"
    args = ["--set", f"run.output={out}", "--set", "run.shard_records=4"]
    for item in extra:
        args += ["--set", item]
    proc = run_cli("run", str(CONFIGS / config), "--quiet", *args, timeout=240)
    assert proc.returncode in (0, 5), proc.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", LOADER, str(out), str(tmp_path / "hf-cache")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    names = [c.name for c in columns]
    assert result["kept"]["files"] > 1  # several shards, loaded in one call
    for kind, got in result.items():
        assert got["rows"] == _count(out, kind)
        assert got["columns"] == names, kind
