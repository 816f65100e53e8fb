"""Time to read and validate a ~150-leaf InstructLab taxonomy (target: under 5 s).

By default it builds a 150-leaf taxonomy from the real leaves in tests/fixtures/field
(copied round-robin under numbered directories); ``--taxonomy PATH`` reads a checkout
instead (e.g. instructlab/taxonomy at the 2024-08 snapshot a7db9bdd, 147 leaves), and
``--compare`` also runs instructlab-schema's own TaxonomyParser (InstructLab SDG's
settings) on every leaf and reports whether the verdicts agree.

    python benchmarks/taxonomy_read.py [--taxonomy PATH] [--leaves 150] [--compare]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from engine.io.taxonomy import Leaf, check_leaf, find_leaves, read_taxonomy

FIELD = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "field" / "taxonomy"


def build(root: Path, n: int) -> None:
    """``n`` leaves copied from the accepted field leaves."""
    sources = [p for p in find_leaves(FIELD).leaves if not check_leaf(p, FIELD)[2]]
    for i in range(n):
        src = sources[i % len(sources)]
        rel = src.relative_to(FIELD)
        dest = root / rel.parts[0] / f"copy{i:03d}" / Path(*rel.parts[1:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)


def theirs(paths: list[Path]) -> list[bool]:
    from instructlab.schema.taxonomy import (
        TaxonomyMessageFormat,
        TaxonomyParser,
        TaxonomyReadingException,
    )

    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    parser = TaxonomyParser(
        schema_version=0, message_format=TaxonomyMessageFormat.LOGGING, yamllint_strict=True
    )
    parser.yq_available = False
    out = []
    for p in paths:
        try:
            t = parser.parse(p)
            out.append(t.errors == 0 and t.warnings == 0)
        except TaxonomyReadingException:
            out.append(False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--taxonomy", type=Path, default=None)
    ap.add_argument("--leaves", type=int, default=150)
    ap.add_argument("--compare", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.taxonomy
        if root is None:
            root = Path(tmp) / "taxonomy"
            build(root, args.leaves)
        t0 = time.perf_counter()
        entries = list(read_taxonomy(root, foundational_skills=True))
        elapsed = time.perf_counter() - t0
        ok = sum(isinstance(e, Leaf) for e in entries)
        result: dict[str, object] = {
            "taxonomy": str(args.taxonomy or f"{args.leaves} copies of field leaves"),
            "leaves": len(entries),
            "accepted": ok,
            "refused": len(entries) - ok,
            "seconds": round(elapsed, 3),
            "target_seconds": 5.0,
            "within_target": elapsed < 5.0,
        }
        if args.compare:
            paths = find_leaves(root, foundational_skills=True).leaves
            ours = [not check_leaf(p, root)[2] for p in paths]
            t1 = time.perf_counter()
            ref = theirs(paths)
            result["instructlab_schema_seconds"] = round(time.perf_counter() - t1, 3)
            result["instructlab_schema_accepted"] = sum(ref)
            result["verdicts_equal"] = ours == ref
    print(json.dumps(result, indent=2))
    # One row per taxonomy in benchmarks/results/taxonomy_read.json (replaced when rerun).
    # Each row carries the machine block (commit, date, load) it was measured with.
    from benchmarks._common import RESULTS, machine

    result["machine"] = machine()
    path = RESULTS / "taxonomy_read.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": []}
    data["runs"] = [r for r in data.get("runs", []) if r.get("taxonomy") != result["taxonomy"]]
    data["runs"].append(result)
    data.pop("note", None)
    data["machine"] = result["machine"]  # the latest run's, for the README's provenance line
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
