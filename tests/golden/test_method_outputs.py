"""The built-in methods' shipped configs give exactly the recorded outputs: same row ids,
same contents (by digest), same derived files. A refactor of the methods must keep them;
an intended change re-records them (``python -m tests.golden.outputs``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden.outputs import CASES, RECORD, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_are_the_recorded_ones(tmp_path: Path, name: str) -> None:
    recorded = json.loads(RECORD.read_text())[name]
    fresh = run_case(name, tmp_path / name)
    for kind in ("kept", "rejected", "failed"):
        assert fresh["rows"][kind].keys() == recorded["rows"][kind].keys(), kind
        changed = [i for i, d in fresh["rows"][kind].items() if recorded["rows"][kind][i] != d]
        assert not changed, f"{kind} rows whose contents changed: {changed[:5]}"
    assert fresh["derived"] == recorded["derived"]
